// The chat UI in a real browser: headless Debian chromium driven by playwright-core, against
// the real switchboard binary. Run by `cargo nextest run --test browser`.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Server,
  assertNoErrors,
  cleanup,
  joinRoom,
  launchBrowser,
  messageTexts,
  online,
  openUser,
  say,
  startOnPort,
  tempDir,
  waitForMessage,
} from './harness.mjs';

test('two pages chat in a room, with live presence and reactions', { timeout: 90000 }, async () => {
  const dir = tempDir('two-pages');
  const server = await Server.start({ dataDir: dir });
  const browser = await launchBrowser();
  try {
    const alice = await openUser(browser, server.url, 'alice');
    const bob = await openUser(browser, server.url, 'bob');
    await joinRoom(alice, 'team');
    await joinRoom(bob, 'team');

    // Live presence: Alice sees Bob arrive.
    await alice.waitForSelector('#members li:text-is("bob")');
    assert.deepEqual(await bob.$$eval('#members li', (l) => l.map((e) => e.textContent).sort()), ['alice', 'bob']);

    await say(alice, 'hello bob');
    await waitForMessage(bob, 'hello bob');
    const author = await bob.$eval('#message-list li[data-id]:last-child .author', (e) => e.textContent);
    assert.equal(author, 'alice');
    await say(bob, 'hi alice');
    await waitForMessage(alice, 'hi alice');

    // Reactions: Bob applauds Alice's message twice; both see the live count.
    const first = '#message-list li[data-id="1"]';
    await bob.click(`${first} .reactions .add`);
    await bob.click(`${first} .palette button[data-emoji="👏"]`);
    await alice.waitForSelector(`${first} .reactions button[data-emoji="👏"] .count:text-is("1")`);
    await bob.click(`${first} .reactions button[data-emoji="👏"]`);
    await alice.waitForSelector(`${first} .reactions button[data-emoji="👏"] .count:text-is("2")`);
    await bob.waitForSelector(`${first} .reactions button[data-emoji="👏"] .count:text-is("2")`);

    // A rename shows in the other's member list.
    await bob.click('#nick-button');
    await bob.fill('#nick-input', 'Bobby');
    await bob.press('#nick-input', 'Enter');
    await alice.waitForSelector('#members li:text-is("Bobby")');

    // Bob leaves (closes his page): he leaves Alice's member list.
    await bob.context().close();
    await alice.waitForFunction(() => !document.querySelector('#members li:not(.me)'));
    assertNoErrors(alice);
  } finally {
    await browser.close();
    await server.stop();
    cleanup(dir);
  }
});

test('history is there after a server restart', { timeout: 90000 }, async () => {
  const dir = tempDir('restart');
  let server = await Server.start({ dataDir: dir });
  const browser = await launchBrowser();
  try {
    const alice = await openUser(browser, server.url, 'alice');
    await say(alice, 'said before the restart');
    await say(alice, 'and this too');
    await alice.context().close();
    await server.stop();

    server = await Server.start({ dataDir: dir });
    const carol = await openUser(browser, server.url, null);
    await waitForMessage(carol, 'said before the restart');
    assert.deepEqual(await messageTexts(carol), ['said before the restart', 'and this too']);
    const authors = await carol.$$eval('#message-list li[data-id] .author', (l) => l.map((e) => e.textContent));
    assert.deepEqual(authors, ['alice', 'alice']);
    assertNoErrors(carol);
  } finally {
    await browser.close();
    await server.stop();
    cleanup(dir);
  }
});

test('a page that lost its connection recovers the messages it missed', { timeout: 120000 }, async () => {
  const dir = tempDir('reconnect');
  let first = await Server.start({ dataDir: dir });
  const port = first.port;
  const browser = await launchBrowser();
  let other;
  try {
    const alice = await openUser(browser, first.url, 'alice');
    await joinRoom(alice, 'ops');
    await say(alice, 'before the outage');
    await alice.evaluate(() => {
      window.sameDocument = true;
    });

    // Alice's server goes away; her page keeps trying the same address.
    await first.stop();
    await alice.waitForSelector('#status:not([data-state="online"])');

    // Meanwhile, on another server over the same data (another address, so Alice cannot
    // reach it), Bob says two things in the room.
    other = await Server.start({ dataDir: dir });
    const bob = await openUser(browser, other.url, 'bob');
    await joinRoom(bob, 'ops');
    await say(bob, 'missed one');
    await say(bob, 'missed two');
    await bob.context().close();
    await other.stop();

    // Alice's address comes back: her page reconnects by itself and recovers both.
    first = await startOnPort(dir, port);
    await online(alice, 30000);
    await waitForMessage(alice, 'missed two');
    assert.deepEqual(await messageTexts(alice), ['before the outage', 'missed one', 'missed two']);
    assert.equal(await alice.evaluate(() => window.sameDocument), true, 'no page reload');
    // And she is live again.
    await say(alice, 'back');
    assertNoErrors(alice);
  } finally {
    await browser.close();
    await first.stop();
    if (other) await other.stop();
    cleanup(dir);
  }
});

test('markup in a message is shown as text', { timeout: 90000 }, async () => {
  const dir = tempDir('injection');
  const server = await Server.start({ dataDir: dir });
  const browser = await launchBrowser();
  try {
    const mallory = await openUser(browser, server.url, '<b>mallory</b>');
    const alice = await openUser(browser, server.url, 'alice');
    const payload = '<img src=x onerror="window.pwned=1;document.title=\'pwned\'">';
    await say(mallory, payload);
    await say(mallory, '<script>window.pwned=2</script><b>bold?</b>');
    await waitForMessage(alice, payload);
    await waitForMessage(alice, '<script>window.pwned=2</script><b>bold?</b>');
    assert.equal(await alice.$$eval('#message-list img, #message-list script, #message-list b', (l) => l.length), 0);
    assert.equal(await alice.evaluate(() => window.pwned), undefined);
    assert.notEqual(await alice.title(), 'pwned');
    const authors = await alice.$$eval('#message-list li[data-id] .author', (l) => l.map((e) => e.textContent));
    assert.ok(authors.includes('<b>mallory</b>'), 'names are text too');
    assert.ok(await alice.$('#members li:text-is("<b>mallory</b>")'));
    assertNoErrors(alice, mallory);
  } finally {
    await browser.close();
    await server.stop();
    cleanup(dir);
  }
});

test('scrolling back loads older messages', { timeout: 90000 }, async () => {
  const dir = tempDir('history');
  // No rate limit, so that this test can fill the room quickly.
  const server = await Server.start({ dataDir: dir, config: '[chat]\nrate_per_sec = 0\n' });
  const browser = await launchBrowser();
  try {
    const alice = await openUser(browser, server.url, 'alice');
    // 70 messages straight over a WebSocket from the page.
    await alice.evaluate(async (url) => {
      const ws = new WebSocket(url);
      await new Promise((r) => ws.addEventListener('open', r));
      ws.send(JSON.stringify({ action: 'join', room: 'lobby', name: 'script' }));
      for (let i = 1; i <= 70; i++) ws.send(JSON.stringify({ action: 'send', room: 'lobby', text: `line ${i}` }));
      await new Promise((r) => {
        let n = 0;
        ws.addEventListener('message', (e) => {
          if (JSON.parse(e.data).type === 'message' && ++n === 70) r();
        });
      });
      ws.close();
    }, `ws://${server.address}/dev`);
    await waitForMessage(alice, 'line 70');

    // A newcomer sees the latest 50, and older ones when scrolling up.
    const carol = await openUser(browser, server.url, 'carol');
    await waitForMessage(carol, 'line 70');
    assert.equal((await messageTexts(carol)).length, 50);
    await carol.$eval('#messages', (e) => {
      e.scrollTop = 0;
    });
    await waitForMessage(carol, 'line 1');
    const texts = await messageTexts(carol);
    assert.equal(texts.length, 70);
    assert.equal(texts[0], 'line 1');
    assert.ok(await carol.$('#older[hidden]'), 'nothing older left');
    assertNoErrors(alice, carol);
  } finally {
    await browser.close();
    await server.stop();
    cleanup(dir);
  }
});
