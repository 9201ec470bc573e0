// The articles' chat on the Node.js `ws` library: a benchmark peer for `switchboard bench`.
//
// {"action":"sendmessage","message":"hi"} sends `hi` to every other client, like the AWS
// tutorial's sendmessage route; other frames are ignored. Written the way a Node developer
// usually writes it: one server, `wss.clients`, `client.send(text)` per recipient.
'use strict';

const { WebSocketServer, WebSocket } = require('ws');

const port = Number(process.argv[2] || process.env.PORT || 8081);
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false });

wss.on('connection', (ws) => {
  ws.on('message', (data) => {
    let body;
    try {
      body = JSON.parse(data);
    } catch {
      return;
    }
    if (body === null || body.action !== 'sendmessage' || body.message === undefined) {
      return;
    }
    const text = typeof body.message === 'string' ? body.message : JSON.stringify(body.message);
    for (const client of wss.clients) {
      if (client !== ws && client.readyState === WebSocket.OPEN) {
        client.send(text);
      }
    }
  });
});

wss.on('listening', () => {
  console.log(`ready on ws://127.0.0.1:${port}/ (node ${process.version}, pid ${process.pid})`);
});
