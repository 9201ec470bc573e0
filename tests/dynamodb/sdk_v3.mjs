// The JavaScript SDK v3 (client and lib-dynamodb's document client) against a DynamoDB
// endpoint. Usage: node sdk_v3.mjs ENDPOINT_URL TABLE_PREFIX
import assert from "node:assert/strict";
import {
  CreateTableCommand, DescribeTableCommand, ListTablesCommand, DeleteTableCommand,
  TransactWriteItemsCommand, DynamoDBClient, waitUntilTableExists,
} from "@aws-sdk/client-dynamodb";
import {
  DynamoDBDocumentClient, PutCommand, GetCommand, UpdateCommand, DeleteCommand,
  QueryCommand, BatchWriteCommand, paginateScan,
} from "@aws-sdk/lib-dynamodb";

const [endpoint, prefix] = process.argv.slice(2);
const client = new DynamoDBClient({
  endpoint,
  region: "us-east-1",
  credentials: { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "secret" },
});
const doc = DynamoDBDocumentClient.from(client);
const TableName = `${prefix}-v3`;

async function errorName(promise) {
  try {
    await promise;
  } catch (e) {
    return e;
  }
  assert.fail("the call succeeded");
}

await client.send(new CreateTableCommand({
  TableName,
  KeySchema: [{ AttributeName: "pk", KeyType: "HASH" }, { AttributeName: "sk", KeyType: "RANGE" }],
  AttributeDefinitions: [
    { AttributeName: "pk", AttributeType: "S" },
    { AttributeName: "sk", AttributeType: "N" },
    { AttributeName: "kind", AttributeType: "S" },
  ],
  GlobalSecondaryIndexes: [{
    IndexName: "byKind",
    KeySchema: [{ AttributeName: "kind", KeyType: "HASH" }],
    Projection: { ProjectionType: "KEYS_ONLY" },
  }],
  BillingMode: "PAY_PER_REQUEST",
}));
await waitUntilTableExists({ client, maxWaitTime: 30, minDelay: 1 }, { TableName });
const { Table } = await client.send(new DescribeTableCommand({ TableName }));
assert.equal(Table.TableStatus, "ACTIVE");
assert.ok((await client.send(new ListTablesCommand({}))).TableNames.includes(TableName));

await doc.send(new PutCommand({ TableName, Item: { pk: "a", sk: 1, kind: "x", n: 1, tags: new Set(["t"]) } }));
let e = await errorName(doc.send(new PutCommand({
  TableName, Item: { pk: "a", sk: 1 }, ConditionExpression: "attribute_not_exists(pk)",
})));
assert.equal(e.name, "ConditionalCheckFailedException");
const { Attributes } = await doc.send(new UpdateCommand({
  TableName, Key: { pk: "a", sk: 1 },
  UpdateExpression: "ADD n :two", ConditionExpression: "kind = :x",
  ExpressionAttributeValues: { ":two": 2, ":x": "x" }, ReturnValues: "UPDATED_NEW",
}));
assert.deepEqual(Attributes, { n: 3 });
const { Item } = await doc.send(new GetCommand({ TableName, Key: { pk: "a", sk: 1 } }));
assert.equal(Item.n, 3);
assert.ok(Item.tags.has("t"));

const writes = [];
for (let sk = 2; sk <= 30; sk++) writes.push({ PutRequest: { Item: { pk: "b", sk, kind: sk % 3 ? "y" : "z" } } });
for (let i = 0; i < writes.length; i += 25) {
  const out = await doc.send(new BatchWriteCommand({ RequestItems: { [TableName]: writes.slice(i, i + 25) } }));
  assert.deepEqual(out.UnprocessedItems, {});
}
const q = await doc.send(new QueryCommand({
  TableName, KeyConditionExpression: "pk = :b AND sk >= :from",
  ExpressionAttributeValues: { ":b": "b", ":from": 28 },
}));
assert.deepEqual(q.Items.map((i) => i.sk), [28, 29, 30]);
const g = await doc.send(new QueryCommand({
  TableName, IndexName: "byKind", KeyConditionExpression: "kind = :z",
  ExpressionAttributeValues: { ":z": "z" },
}));
assert.equal(g.Count, 10);
let scanned = 0, pages = 0;
for await (const page of paginateScan({ client: doc, pageSize: 4 }, { TableName })) {
  scanned += page.Count;
  pages += 1;
}
assert.equal(scanned, 30);
assert.ok(pages >= 8, `pages: ${pages}`);

e = await errorName(client.send(new TransactWriteItemsCommand({
  TransactItems: [
    { ConditionCheck: {
      TableName, Key: { pk: { S: "a" }, sk: { N: "1" } },
      ConditionExpression: "n > :big", ExpressionAttributeValues: { ":big": { N: "100" } },
    } },
    { Delete: { TableName, Key: { pk: { S: "b" }, sk: { N: "2" } } } },
  ],
})));
assert.equal(e.name, "TransactionCanceledException");
assert.deepEqual(e.CancellationReasons.map((r) => r.Code), ["ConditionalCheckFailed", "None"]);

e = await errorName(doc.send(new DeleteCommand({
  TableName, Key: { pk: "a", sk: 1 }, ConditionExpression: "n = :one", ExpressionAttributeValues: { ":one": 1 },
})));
assert.equal(e.name, "ConditionalCheckFailedException");
await doc.send(new DeleteCommand({ TableName, Key: { pk: "a", sk: 1 } }));
assert.equal((await doc.send(new GetCommand({ TableName, Key: { pk: "a", sk: 1 } }))).Item, undefined);
await client.send(new DeleteTableCommand({ TableName }));
e = await errorName(client.send(new DescribeTableCommand({ TableName })));
assert.equal(e.name, "ResourceNotFoundException");
console.log("sdk v3 suite passed");
