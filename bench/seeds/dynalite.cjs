// The peer's DynamoDB: dynalite (in memory) on loopback, with every AWS::DynamoDB::Table of the
// service created in it, as a deployment would create them.
//
//   node dynalite.cjs PORT RESOLVED.json   # RESOLVED.json: `serverless print --format json`
"use strict";

const fs = require("node:fs");
const dynalite = require("dynalite");
const { DynamoDBClient, CreateTableCommand } = require("@aws-sdk/client-dynamodb");

const [port, resolved] = [Number(process.argv[2]), process.argv[3]];
const resources = JSON.parse(fs.readFileSync(resolved, "utf8")).resources?.Resources ?? {};
const server = dynalite({ createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });

server.listen(port, "127.0.0.1", async () => {
  const db = new DynamoDBClient({
    endpoint: `http://127.0.0.1:${port}`,
    region: "us-east-1",
    credentials: { accessKeyId: "local", secretAccessKey: "local" },
  });
  for (const [id, resource] of Object.entries(resources)) {
    if (resource.Type !== "AWS::DynamoDB::Table") continue;
    const { TableName, KeySchema, AttributeDefinitions, BillingMode, ProvisionedThroughput } =
      resource.Properties;
    await db.send(
      new CreateTableCommand({
        TableName: TableName ?? id,
        KeySchema,
        AttributeDefinitions,
        BillingMode,
        ProvisionedThroughput,
      }),
    );
    console.log(`created table ${TableName ?? id}`);
  }
  db.destroy();
  console.log("listening");
});
