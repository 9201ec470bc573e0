// The 2018 article's chat in TypeScript: sendMessage posts `data` to every connection (the
// sender included); anything else gets "Error: Invalid action type".
import * as AWS from "aws-sdk";

type Event = {
  requestContext: {
    routeKey: string;
    connectionId: string;
    domainName: string;
    stage: string;
  };
  body?: string;
};

type Result = { statusCode: number; body: string };

const db = new AWS.DynamoDB.DocumentClient();
const table = process.env.CONNECTIONS_TABLE as string;

const success: Result = { statusCode: 200, body: "everything is alright" };

function api(event: Event): AWS.ApiGatewayManagementApi {
  return new AWS.ApiGatewayManagementApi({
    apiVersion: "2018-11-29",
    endpoint: event.requestContext.domainName + "/" + event.requestContext.stage,
  });
}

async function send(event: Event, connectionId: string, data: string): Promise<void> {
  await api(event).postToConnection({ ConnectionId: connectionId, Data: data }).promise();
}

export const connectionHandler = async (event: Event): Promise<Result> => {
  const id = event.requestContext.connectionId;
  if (event.requestContext.routeKey === "$connect") {
    await db.put({ TableName: table, Item: { ConnectionId: id } }).promise();
  } else {
    await db.delete({ TableName: table, Key: { ConnectionId: id } }).promise();
  }
  return success;
};

export const defaultHandler = async (event: Event): Promise<Result> => {
  await send(event, event.requestContext.connectionId, "Error: Invalid action type");
  return success;
};

export const sendMessageHandler = async (event: Event): Promise<Result> => {
  const data: string = JSON.parse(event.body || "{}").data;
  const { Items } = await db.scan({ TableName: table, ProjectionExpression: "ConnectionId" }).promise();
  for (const item of Items || []) {
    try {
      await send(event, item.ConnectionId, data);
    } catch (e) {
      if ((e as { statusCode?: number }).statusCode !== 410) throw e;
      await db.delete({ TableName: table, Key: { ConnectionId: item.ConnectionId } }).promise();
    }
  }
  return success;
};
