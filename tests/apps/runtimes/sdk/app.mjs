// Imports the SDK v3 without listing it: the runtime provides it, as on Lambda. Answers with
// the URL a GetConnection would go to (the request is stopped before it leaves).
import {
  ApiGatewayManagementApiClient,
  GetConnectionCommand,
} from "@aws-sdk/client-apigatewaymanagementapi";

export const handler = async () => {
  const client = new ApiGatewayManagementApiClient({});
  client.middlewareStack.add(
    () => async (args) => {
      const r = args.request;
      throw Object.assign(new Error("stopped"), {
        url: `${r.protocol}//${r.hostname}:${r.port}${r.path}`,
      });
    },
    { step: "finalizeRequest" },
  );
  try {
    await client.send(new GetConnectionCommand({ ConnectionId: "abc" }));
  } catch (e) {
    if (e.url) return { statusCode: 200, body: e.url };
    throw e;
  }
  return { statusCode: 500, body: "the request was not stopped" };
};
