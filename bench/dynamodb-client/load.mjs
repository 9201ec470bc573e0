// The load client of bench/dynamodb: one operation against one DynamoDB endpoint, from
// CONCURRENCY requests in flight over keep-alive connections, for DURATION seconds.
//
//   node load.mjs setup URL            # the tables: `bench` (1,000 items) and `scan` (1,000)
//   node load.mjs run URL OP SECONDS CONCURRENCY   # OP: put | get | scan
//
// Requests are signed with a fixed, well-formed SigV4 header: neither server checks the
// signature (switchboard on loopback without credentials, dynalite never), and signing each
// request would make the client, not the server, the thing measured. Prints one JSON line:
// {"op", "ops_per_sec", "p50_ms", "p99_ms", "errors"}.
import http from "node:http";

const [command, url, op, seconds, concurrency] = process.argv.slice(2);
const target = new URL(url);
const agent = new http.Agent({ keepAlive: true, maxSockets: Number(concurrency || 8) });
const HEADERS = {
  "content-type": "application/x-amz-json-1.0",
  "x-amz-date": "20260101T000000Z",
  authorization:
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/dynamodb/aws4_request, " +
    "SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=" + "0".repeat(64),
};
const PAYLOAD = "x".repeat(100);

function call(operation, body) {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const request = http.request(
      {
        host: target.hostname,
        port: target.port,
        path: "/",
        method: "POST",
        agent,
        headers: { ...HEADERS, "x-amz-target": `DynamoDB_20120810.${operation}`, "content-length": Buffer.byteLength(data) },
      },
      (response) => {
        const chunks = [];
        response.on("data", (c) => chunks.push(c));
        response.on("end", () => resolve({ status: response.statusCode, body: Buffer.concat(chunks) }));
      },
    );
    request.on("error", reject);
    request.end(data);
  });
}

async function ok(operation, body) {
  const answer = await call(operation, body);
  if (answer.status !== 200) throw new Error(`${operation}: ${answer.status} ${answer.body}`);
  return JSON.parse(answer.body);
}

async function setup() {
  for (const TableName of ["bench", "scan"]) {
    await ok("CreateTable", {
      TableName,
      KeySchema: [{ AttributeName: "pk", KeyType: "HASH" }],
      AttributeDefinitions: [{ AttributeName: "pk", AttributeType: "S" }],
      ProvisionedThroughput: { ReadCapacityUnits: 1000, WriteCapacityUnits: 1000 },
    });
    for (;;) {
      const { Table } = await ok("DescribeTable", { TableName });
      if (Table.TableStatus === "ACTIVE") break;
      await new Promise((r) => setTimeout(r, 50));
    }
    for (let i = 0; i < 1000; i += 25) {
      const RequestItems = { [TableName]: [] };
      for (let j = i; j < i + 25; j++) {
        RequestItems[TableName].push({ PutRequest: { Item: { pk: { S: `k${j}` }, data: { S: PAYLOAD }, n: { N: String(j) } } } });
      }
      const out = await ok("BatchWriteItem", { RequestItems });
      if (Object.keys(out.UnprocessedItems || {}).length) throw new Error("unprocessed items");
    }
  }
  const { Count } = await ok("Scan", { TableName: "scan", Select: "COUNT" });
  if (Count !== 1000) throw new Error(`scan table holds ${Count} items`);
}

let sequence = 0;
function next() {
  const i = sequence++;
  switch (op) {
    case "put":
      return ["PutItem", { TableName: "bench", Item: { pk: { S: `p${process.pid}-${i}` }, data: { S: PAYLOAD }, n: { N: String(i) } } }];
    case "get":
      return ["GetItem", { TableName: "bench", Key: { pk: { S: `k${(i * 7919) % 1000}` } } }];
    case "scan":
      return ["Scan", { TableName: "scan" }];
    default:
      throw new Error(`unknown operation ${op}`);
  }
}

async function run() {
  const deadline = performance.now() + Number(seconds) * 1000;
  const latencies = [];
  let errors = 0;
  const started = performance.now();
  async function worker() {
    while (performance.now() < deadline) {
      const [operation, body] = next();
      const t0 = performance.now();
      const answer = await call(operation, body);
      latencies.push(performance.now() - t0);
      if (answer.status !== 200) errors++;
      else if (op === "scan" && !answer.body.includes('"Count":1000')) errors++;
    }
  }
  await Promise.all(Array.from({ length: Number(concurrency) }, worker));
  const elapsed = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  const at = (q) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))];
  console.log(JSON.stringify({
    op,
    ops_per_sec: Math.round(latencies.length / elapsed),
    p50_ms: Number(at(0.5).toFixed(3)),
    p99_ms: Number(at(0.99).toFixed(3)),
    errors,
  }));
}

await (command === "setup" ? setup() : run());
agent.destroy();
