// The JavaScript SDK v2's DocumentClient against a DynamoDB endpoint.
// Usage: node sdk_v2.js ENDPOINT_URL TABLE_PREFIX
"use strict";
const assert = require("node:assert/strict");
require("aws-sdk/lib/maintenance_mode_message").suppress = true;
const AWS = require("aws-sdk");

const [endpoint, prefix] = process.argv.slice(2);
const options = {
  endpoint,
  region: "us-east-1",
  credentials: new AWS.Credentials("AKIDEXAMPLE", "secret"),
};
const db = new AWS.DynamoDB(options);
const doc = new AWS.DynamoDB.DocumentClient(options);
const TableName = `${prefix}-v2`;

async function failure(request) {
  try {
    await request.promise();
  } catch (e) {
    return e;
  }
  assert.fail("the call succeeded");
}

(async () => {
  await db.createTable({
    TableName,
    KeySchema: [{ AttributeName: "id", KeyType: "HASH" }],
    AttributeDefinitions: [{ AttributeName: "id", AttributeType: "S" }],
    BillingMode: "PAY_PER_REQUEST",
  }).promise();
  await db.waitFor("tableExists", { TableName }).promise();
  assert.ok((await db.listTables().promise()).TableNames.includes(TableName));
  await doc.put({ TableName, Item: { id: "conn-1", room: "lobby", joined: 1 } }).promise();
  let e = await failure(doc.put({
    TableName, Item: { id: "conn-1" }, ConditionExpression: "attribute_not_exists(id)",
  }));
  assert.equal(e.code, "ConditionalCheckFailedException");
  const updated = await doc.update({
    TableName, Key: { id: "conn-1" }, UpdateExpression: "SET joined = joined + :one",
    ConditionExpression: "room = :lobby", ExpressionAttributeValues: { ":one": 1, ":lobby": "lobby" },
    ReturnValues: "ALL_NEW",
  }).promise();
  assert.equal(updated.Attributes.joined, 2);
  assert.equal((await doc.get({ TableName, Key: { id: "conn-1" } }).promise()).Item.room, "lobby");
  const batch = [];
  for (let i = 2; i <= 21; i++) batch.push({ PutRequest: { Item: { id: `conn-${i}`, room: "games" } } });
  await doc.batchWrite({ RequestItems: { [TableName]: batch.slice(0, 20) } }).promise();
  let items = 0, pages = 0, ExclusiveStartKey;
  do {
    const page = await doc.scan({ TableName, Limit: 6, ExclusiveStartKey }).promise();
    items += page.Count;
    pages += 1;
    ExclusiveStartKey = page.LastEvaluatedKey;
  } while (ExclusiveStartKey);
  assert.equal(items, 21);
  assert.ok(pages >= 4);
  const q = await doc.query({
    TableName, KeyConditionExpression: "id = :id", ExpressionAttributeValues: { ":id": "conn-7" },
  }).promise();
  assert.equal(q.Items[0].room, "games");
  e = await failure(doc.transactWrite({
    TransactItems: [
      { Put: { TableName, Item: { id: "new" } } },
      { ConditionCheck: { TableName, Key: { id: "conn-1" }, ConditionExpression: "attribute_not_exists(id)" } },
    ],
  }));
  assert.equal(e.code, "TransactionCanceledException");
  assert.match(e.message, /ConditionalCheckFailed/);
  await doc.delete({ TableName, Key: { id: "conn-1" } }).promise();
  assert.equal((await doc.get({ TableName, Key: { id: "conn-1" } }).promise()).Item, undefined);
  await db.deleteTable({ TableName }).promise();
  e = await failure(db.describeTable({ TableName }));
  assert.equal(e.code, "ResourceNotFoundException");
  console.log("sdk v2 suite passed");
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
