// $default: tell the sender how to chat, with its connection's info from GetConnection.
const {
  GetConnectionCommand,
  PostToConnectionCommand,
} = require("@aws-sdk/client-apigatewaymanagementapi");
const { api } = require("../../lib/clients");

exports.main = async (event) => {
  const connectionId = event.requestContext.connectionId;
  const info = await api.send(new GetConnectionCommand({ ConnectionId: connectionId }));
  const { $metadata, ...fields } = info;
  const text =
    "Use the sendmessage route to send a message. Your info: " +
    JSON.stringify({ ...fields, connectionID: connectionId });
  await api.send(new PostToConnectionCommand({ ConnectionId: connectionId, Data: text }));
  return { statusCode: 200 };
};
