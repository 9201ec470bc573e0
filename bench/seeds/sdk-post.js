// What one `postToConnection` costs the handler itself: the CPU of this Node.js process per
// PostToConnectionCommand of the AWS SDK v3 (the same client and call as chat.js), against a
// running server, in batches of BATCH concurrent calls (one `sendmessage` to BATCH recipients).
//
//   node bench/seeds/sdk-post.js ws://127.0.0.1:8080/dev [CALLS] [BATCH]
//
// Connects one WebSocket client, learns its connection id from the `$default` route's answer
// (chat.js's onDefault), then posts to it CALLS times, twice (the first round warms up), and
// prints calls/s and this process's CPU µs per call for each round. Run with the server's
// process id at hand to compare with the server's own CPU per POST (bench/management).
"use strict";

const WebSocket = require("ws");
const {
  ApiGatewayManagementApiClient,
  PostToConnectionCommand,
} = require("@aws-sdk/client-apigatewaymanagementapi");

const url = new URL(process.argv[2] || "ws://127.0.0.1:8080/dev");
const calls = Number(process.argv[3] || 20000);
const batch = Number(process.argv[4] || 99);
const endpoint = `http://${url.host}${url.pathname.replace(/\/$/, "")}`;

const ws = new WebSocket(url.href);
ws.on("error", (err) => {
  console.error(`${url.href}: ${err.message}`);
  process.exit(1);
});
ws.on("open", () => ws.send(JSON.stringify({ action: "hello" })));
ws.once("message", async (message) => {
  const id = /connection id is (\S+)\./.exec(message.toString());
  if (!id) {
    console.error(`no connection id in the $default answer: ${message}`);
    process.exit(1);
  }
  const client = new ApiGatewayManagementApiClient({
    endpoint,
    region: process.env.AWS_REGION || "us-east-1",
    credentials: {
      accessKeyId: process.env.AWS_ACCESS_KEY_ID || "local",
      secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY || "local",
    },
  });
  const data = Buffer.from("x".repeat(64));
  const results = [];
  for (const round of ["warm-up", "measured"]) {
    const cpu = process.cpuUsage();
    const started = process.hrtime.bigint();
    for (let done = 0; done < calls; done += batch) {
      const n = Math.min(batch, calls - done);
      await Promise.all(
        Array.from({ length: n }, () =>
          client.send(new PostToConnectionCommand({ ConnectionId: id[1], Data: data })),
        ),
      );
    }
    const used = process.cpuUsage(cpu);
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    results.push({
      round,
      calls,
      batch,
      calls_per_sec: Math.round(calls / seconds),
      cpu_us_per_call: Number(((used.user + used.system) / calls).toFixed(1)),
    });
  }
  for (const r of results) console.log(JSON.stringify(r));
  ws.close();
  process.exit(0);
});
