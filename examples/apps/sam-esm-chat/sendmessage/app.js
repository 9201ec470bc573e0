// sendmessage: `data` to every connection, the sender included. The management endpoint is
// built from the API id and the region, as the function would on AWS.
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { DynamoDBDocumentClient, ScanCommand, DeleteCommand } from "@aws-sdk/lib-dynamodb";
import {
  ApiGatewayManagementApiClient,
  PostToConnectionCommand,
} from "@aws-sdk/client-apigatewaymanagementapi";

const db = DynamoDBDocumentClient.from(new DynamoDBClient({}));
const TABLE_NAME = process.env.TABLE_NAME;

export const handler = async (event) => {
  const { apiId, stage } = event.requestContext;
  const api = new ApiGatewayManagementApiClient({
    endpoint: `https://${apiId}.execute-api.${process.env.AWS_REGION}.amazonaws.com/${stage}`,
  });
  const data = JSON.parse(event.body).data;
  const { Items: connections } = await db.send(
    new ScanCommand({ TableName: TABLE_NAME, ProjectionExpression: "connectionId" }),
  );
  const failures = [];
  await Promise.all(
    connections.map(async ({ connectionId }) => {
      try {
        await api.send(new PostToConnectionCommand({ ConnectionId: connectionId, Data: data }));
      } catch (e) {
        if (e.name === "GoneException" || e.$metadata?.httpStatusCode === 410) {
          // A stale connection: forget it, not the sender.
          await db.send(new DeleteCommand({ TableName: TABLE_NAME, Key: { connectionId } }));
        } else {
          failures.push(`${connectionId}: ${e.message}`);
        }
      }
    }),
  );
  if (failures.length) {
    return { statusCode: 500, body: failures.join("\n") };
  }
  return { statusCode: 200, body: "Data sent." };
};
