// The inspector page in a real browser: a client connects (from a second page), sends a frame
// to a routed echo function; the page shows the frame, the route decision and the invocation
// with its event, and the connection's messages in and out; a post from the page reaches the
// client; a Lambda function's environment shows its cold start and invocations; a disconnect
// from the page shows the client's `$disconnect`. Then the tables: a DynamoDB table of 60
// items is listed with its count and read page by page.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { Server, launchBrowser, tempDir, cleanup } from './harness.mjs';

// The Python custom-runtime function of the Rust tests.
const FUNCTIONS = fileURLToPath(new URL('../functions/', import.meta.url));

const CONFIG = `
stage = "dev"

[routes.echo]
integration = { type = "builtin", name = "echo" }
route_response = "$default"

[routes.pid]
integration = { type = "lambda", command = ["python3", "runtime.py"], working_dir = ${JSON.stringify(FUNCTIONS)}, function_name = "py-env" }
route_response = "$default"

[routes."$disconnect"]
integration = { type = "builtin", name = "echo" }
`;

const TABLES_CONFIG = `
stage = "dev"

[[dynamodb.tables]]
TableName = "things"
KeySchema = [{ AttributeName = "id", KeyType = "HASH" }]
AttributeDefinitions = [{ AttributeName = "id", AttributeType = "S" }]
BillingMode = "PAY_PER_REQUEST"
`;

/** One DynamoDB call as an SDK sends it (on loopback without credentials any signature does). */
async function dynamodb(server, operation, body) {
  const r = await fetch(`http://${server.address}/`, {
    method: 'POST',
    headers: {
      'x-amz-target': `DynamoDB_20120810.${operation}`,
      'content-type': 'application/x-amz-json-1.0',
      'x-amz-date': '20260101T000000Z',
      authorization: 'AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host;x-amz-date, Signature=00',
    },
    body: JSON.stringify(body),
  });
  assert.equal(r.status, 200, `${operation}: ${await r.text()}`);
}

test('the inspector shows a frame, its route, the invocation, messages in and out, a post, a function\'s environment and a disconnect', async () => {
  const dir = tempDir('inspector');
  const server = await Server.start({ dataDir: dir, config: CONFIG });
  const browser = await launchBrowser();
  try {
    const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`http://${server.address}/_switchboard/`);
    await page.waitForSelector('#status:text-is("live")');

    // The client: a WebSocket in a second page, recording what it receives.
    const client = await context.newPage();
    await client.goto(`http://${server.address}/healthz`);
    await client.evaluate((url) => new Promise((resolve) => {
      window.received = [];
      window.ws = new WebSocket(url);
      window.ws.onmessage = (m) => window.received.push(m.data);
      window.ws.onopen = resolve;
    }), `ws://${server.address}/dev`);

    const row = page.locator('#connections tbody tr');
    await row.first().waitFor();
    const id = await row.first().getAttribute('data-id');
    assert.ok(id);
    const counted = (cell, n) => row.first().locator(`td.${cell}:text-is("${n}")`).waitFor();
    await counted('messages-in', 0);

    await client.evaluate(() => window.ws.send('{"action":"echo","hello":"inspector"}'));
    await client.waitForFunction(() => window.received.length === 1);
    const events = page.locator('#events li');
    await page.locator('#events li.frame', { hasText: '{"action":"echo","hello":"inspector"}' }).waitFor();
    await page.locator('#events li.route', { hasText: '$request.body.action = echo' }).waitFor();
    const invocation = page.locator('#events li.invocation', { hasText: 'invocation echo' });
    await invocation.waitFor();
    await invocation.click();
    const detail = await page.locator('#detail').textContent();
    assert.match(detail, /"routeKey": "echo"/);
    assert.match(detail, /"connectionId": /);
    assert.match(detail, /statusCode/);
    await counted('messages-in', 1);
    await counted('messages-out', 1);

    // Post from the page.
    await page.fill('#connections tbody tr input', 'posted from the page');
    await page.click('#connections tbody tr button[type="submit"]');
    await client.waitForFunction(() => window.received.includes('posted from the page'));
    await page.locator('#events li.management', { hasText: 'by inspector: 200' }).waitFor();
    await counted('messages-out', 2);

    // A Lambda function: its one environment, started with the server (one cold start), takes
    // the invocation.
    const fn = page.locator('#functions tbody tr[data-function="py-env"]');
    await fn.locator('td.cold-starts:text-is("1")').waitFor();
    await client.evaluate(() => window.ws.send('{"action":"pid"}'));
    await client.waitForFunction(() => window.received.length === 3);
    await fn.locator('td.invocations:text-is("1")').waitFor();
    assert.equal(await fn.locator('td.environments').textContent(), '1');
    assert.equal(await fn.locator('td.cold-starts').textContent(), '1');
    assert.equal(await fn.locator('td.restarts').textContent(), '0');
    await counted('messages-in', 2);
    await counted('messages-out', 3);
    // Without DynamoDB tables, no Tables section.
    assert.equal(await page.locator('#tables-section').isHidden(), true);

    // The README's screenshot: the connection with its counts, the function's environment.
    if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });

    // Disconnect from the page: the close and the `$disconnect` invocation.
    await page.click('#connections tbody tr button:text-is("Disconnect")');
    await page.locator('#events li.disconnected', { hasText: 'code 1000' }).waitFor();
    await page.locator('#events li.invocation', { hasText: 'invocation $disconnect' }).waitFor();
    assert.ok((await events.count()) >= 7);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    await server.stop();
    cleanup(dir);
  }
});

test('the tables view lists a table with its item count and pages through its items', async () => {
  const dir = tempDir('inspector-tables');
  const server = await Server.start({ dataDir: dir, config: TABLES_CONFIG });
  const browser = await launchBrowser();
  try {
    const ITEMS = 60;
    for (let batch = 0; batch < ITEMS / 20; batch++) {
      const puts = Array.from({ length: 20 }, (_, i) => {
        const n = batch * 20 + i;
        return { PutRequest: { Item: { id: { S: `item-${String(n).padStart(2, '0')}` }, n: { N: String(n) } } } };
      });
      await dynamodb(server, 'BatchWriteItem', { RequestItems: { things: puts } });
    }
    const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`http://${server.address}/_switchboard/`);
    const row = page.locator('#tables tbody tr[data-table="things"]');
    await row.locator('td.items:text-is("60")').waitFor();
    assert.equal(await page.locator('#tables-section').isVisible(), true);
    assert.equal(await row.locator('td.partition-key').textContent(), 'id');

    await row.locator('button.table-link').click();
    const ids = new Set();
    const readPage = async (label, count) => {
      await page.locator(`#table-page:text-is("${label}")`).waitFor();
      const keys = await page.locator('#items tbody td.key').allTextContents();
      assert.equal(keys.length, count);
      for (const k of keys) ids.add(k);
    };
    await readPage('page 1, items 1 to 25', 25);
    assert.equal(await page.locator('#table-prev').isDisabled(), true);
    assert.deepEqual(await page.locator('#items thead th').allTextContents(), ['id', 'item']);
    const item = JSON.parse(await page.locator('#items tbody td.item').first().textContent());
    assert.match(item.id, /^item-\d\d$/);
    assert.equal(typeof item.n, 'number', 'numbers shown as plain JSON');
    await page.click('#table-next');
    await readPage('page 2, items 26 to 50', 25);
    await page.click('#table-next');
    await readPage('page 3, items 51 to 60', 10);
    assert.equal(await page.locator('#table-next').isDisabled(), true);
    assert.equal(ids.size, ITEMS, 'every item once');
    await page.click('#table-prev');
    await readPage('page 2, items 26 to 50', 25);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    await server.stop();
    cleanup(dir);
  }
});
