const { PutCommand } = require("@aws-sdk/lib-dynamodb");
const { db, table } = require("../../lib/clients");

exports.main = async (event) => {
  await db.send(new PutCommand({ TableName: table, Item: { connectionId: event.requestContext.connectionId } }));
  return { statusCode: 200 };
};
