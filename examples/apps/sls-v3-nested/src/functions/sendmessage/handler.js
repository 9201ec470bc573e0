// sendmessage: `message` to every connection except the sender.
const { ScanCommand, DeleteCommand } = require("@aws-sdk/lib-dynamodb");
const { PostToConnectionCommand } = require("@aws-sdk/client-apigatewaymanagementapi");
const { db, api, table } = require("../../lib/clients");

exports.main = async (event) => {
  const sender = event.requestContext.connectionId;
  const message = JSON.parse(event.body).message;
  const { Items } = await db.send(new ScanCommand({ TableName: table }));
  await Promise.all(
    Items.filter(({ connectionId }) => connectionId !== sender).map(async ({ connectionId }) => {
      try {
        await api.send(new PostToConnectionCommand({ ConnectionId: connectionId, Data: message }));
      } catch (e) {
        if (e.name !== "GoneException") throw e;
        await db.send(new DeleteCommand({ TableName: table, Key: { connectionId } }));
      }
    }),
  );
  return { statusCode: 200 };
};
