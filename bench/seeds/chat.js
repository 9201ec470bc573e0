// The chat's four handlers. `$connect` and `$disconnect` keep the table of connection ids;
// `sendmessage` posts `message` to every other connection; anything else gets a hint.
//
// Endpoints: the DynamoDB client has none in code, so the SDK uses AWS_ENDPOINT_URL_DYNAMODB
// when it is set (a local table) and the region's service otherwise. The management API's
// endpoint is the API's own (`https://{domainName}/{stage}`) unless
// AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI names another one.
"use strict";

const { DynamoDBClient } = require("@aws-sdk/client-dynamodb");
const {
  DynamoDBDocumentClient,
  DeleteCommand,
  PutCommand,
  ScanCommand,
} = require("@aws-sdk/lib-dynamodb");
const {
  ApiGatewayManagementApiClient,
  PostToConnectionCommand,
} = require("@aws-sdk/client-apigatewaymanagementapi");

const table = process.env.TABLE_NAME;
const db = DynamoDBDocumentClient.from(new DynamoDBClient({}));

// One management client per endpoint, kept for the life of the execution environment.
const managementClients = new Map();
function managementClient({ domainName, stage }) {
  const endpoint = process.env.AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI
    ? undefined
    : `https://${domainName}/${stage}`;
  let client = managementClients.get(endpoint);
  if (!client) {
    client = new ApiGatewayManagementApiClient(endpoint ? { endpoint } : {});
    managementClients.set(endpoint, client);
  }
  return client;
}

// Every connection id in the table, page by page.
async function connectionIds() {
  const ids = [];
  let ExclusiveStartKey;
  do {
    const page = await db.send(
      new ScanCommand({ TableName: table, ProjectionExpression: "connectionId", ExclusiveStartKey }),
    );
    for (const item of page.Items) ids.push(item.connectionId);
    ExclusiveStartKey = page.LastEvaluatedKey;
  } while (ExclusiveStartKey);
  return ids;
}

// Posts `data` to one connection; a connection that is gone (410) leaves the table.
async function post(client, connectionId, data) {
  try {
    await client.send(new PostToConnectionCommand({ ConnectionId: connectionId, Data: data }));
  } catch (err) {
    if (err.name !== "GoneException" && err.$metadata?.httpStatusCode !== 410) throw err;
    await db.send(new DeleteCommand({ TableName: table, Key: { connectionId } }));
  }
}

exports.onConnect = async (event) => {
  await db.send(
    new PutCommand({
      TableName: table,
      Item: { connectionId: event.requestContext.connectionId, connectedAt: Date.now() },
    }),
  );
  return { statusCode: 200, body: "Connected." };
};

exports.onDisconnect = async (event) => {
  await db.send(
    new DeleteCommand({ TableName: table, Key: { connectionId: event.requestContext.connectionId } }),
  );
  return { statusCode: 200, body: "Disconnected." };
};

exports.sendMessage = async (event) => {
  const context = event.requestContext;
  let message;
  try {
    message = JSON.parse(event.body).message;
  } catch {
    message = undefined;
  }
  if (typeof message !== "string") {
    return { statusCode: 400, body: 'Send {"action": "sendmessage", "message": "..."}.' };
  }
  const client = managementClient(context);
  const data = Buffer.from(message);
  const recipients = (await connectionIds()).filter((id) => id !== context.connectionId);
  await Promise.all(recipients.map((id) => post(client, id, data)));
  return { statusCode: 200, body: "Data sent." };
};

exports.onDefault = async (event) => {
  const context = event.requestContext;
  await post(
    managementClient(context),
    context.connectionId,
    Buffer.from(
      `Use the sendmessage route to send a message: {"action": "sendmessage", "message": "hello"}. ` +
        `Your connection id is ${context.connectionId}.`,
    ),
  );
  return { statusCode: 200 };
};
