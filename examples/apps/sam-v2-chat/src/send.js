// sendmessage: "<nick>: <message>" to every other connection. SDK v2 reads no
// AWS_ENDPOINT_URL_*: the endpoint is domainName + '/' + stage, https implied.
const AWS = require("aws-sdk");

const db = new AWS.DynamoDB.DocumentClient();

exports.handler = async (event) => {
  const { connectionId, domainName, stage } = event.requestContext;
  const api = new AWS.ApiGatewayManagementApi({
    apiVersion: "2018-11-29",
    endpoint: domainName + "/" + stage,
  });
  const table = process.env.TABLE_NAME;
  const { Items } = await db.scan({ TableName: table }).promise();
  const sender = Items.find((item) => item.connectionId === connectionId);
  const text = `${sender ? sender.nick : "?"}: ${JSON.parse(event.body).message}`;
  await Promise.all(
    Items.filter((item) => item.connectionId !== connectionId).map(async (item) => {
      try {
        await api.postToConnection({ ConnectionId: item.connectionId, Data: text }).promise();
      } catch (e) {
        if (e.statusCode !== 410) throw e;
        await db.delete({ TableName: table, Key: { connectionId: item.connectionId } }).promise();
      }
    }),
  );
  return { statusCode: 200, body: "Sent." };
};
