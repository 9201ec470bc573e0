// Posts back to the sender through the management endpoint built three ways, with the SDK v3
// the runtime provides.
const {
  ApiGatewayManagementApiClient,
  PostToConnectionCommand,
  GetConnectionCommand,
} = require("@aws-sdk/client-apigatewaymanagementapi");

async function reply(client, event, how) {
  const id = event.requestContext.connectionId;
  const info = await client.send(new GetConnectionCommand({ ConnectionId: id }));
  await client.send(
    new PostToConnectionCommand({
      ConnectionId: id,
      Data: `${how} ok, connected at ${info.ConnectedAt.toISOString()}`,
    }),
  );
  return { statusCode: 200 };
}

exports.apiId = async (event) => {
  const { apiId, stage } = event.requestContext;
  const endpoint = `https://${apiId}.execute-api.${process.env.AWS_REGION}.amazonaws.com/${stage}`;
  return reply(new ApiGatewayManagementApiClient({ endpoint }), event, "node apiId");
};

exports.domainName = async (event) => {
  const { domainName, stage } = event.requestContext;
  const endpoint = `https://${domainName}/${stage}`;
  return reply(new ApiGatewayManagementApiClient({ endpoint }), event, "node domainName");
};

exports.fromEnvironment = async (event) =>
  reply(new ApiGatewayManagementApiClient({}), event, "node environment");
