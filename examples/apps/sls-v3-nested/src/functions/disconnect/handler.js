const { DeleteCommand } = require("@aws-sdk/lib-dynamodb");
const { db, table } = require("../../lib/clients");

exports.main = async (event) => {
  await db.send(new DeleteCommand({ TableName: table, Key: { connectionId: event.requestContext.connectionId } }));
  return { statusCode: 200 };
};
