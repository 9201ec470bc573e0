// Takes the README's screenshots of the chat UI: `SWITCHBOARD_BIN=target/release/switchboard
// node tests/browser/screenshots.mjs` writes docs/screenshots/*.png. Emoji need a colour emoji
// font (`apt-get install fonts-noto-color-emoji`); the tests do not.

import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Server, cleanup, joinRoom, launchBrowser, openUser, say, tempDir, waitForMessage } from './harness.mjs';

const out = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'docs', 'screenshots');
mkdirSync(out, { recursive: true });

const dir = tempDir('screenshots');
const server = await Server.start({ dataDir: dir });
const browser = await launchBrowser();
try {
  const carol = await openUser(browser, server.url, 'Carol');
  await joinRoom(carol, 'release-planning');
  const alice = await openUser(browser, server.url, 'Alice');
  const bob = await openUser(browser, server.url, 'Bob', { width: 390, height: 760 });
  await say(alice, 'Morning all! The new build is up on staging.');
  await waitForMessage(bob, 'Morning all! The new build is up on staging.');
  await say(bob, 'Nice, checking it now 👀');
  await say(carol, 'Reconnect works on my phone too: it caught up on everything I missed.');
  await say(alice, 'Try the <img src=x onerror=alert(1)> trick: it shows up as plain text.');
  await say(bob, 'Ship it!');
  const first = '#message-list li[data-id="1"]';
  await bob.click(`${first} .reactions .add`);
  await bob.click(`${first} .palette button[data-emoji="👏"]`);
  await bob.click(`${first} .reactions button[data-emoji="👏"]`);
  await bob.click(`${first} .reactions button[data-emoji="👏"]`);
  const last = '#message-list li[data-id="4"]';
  await alice.click(`${last} .reactions .add`);
  await alice.click(`${last} .palette button[data-emoji="🎉"]`);
  await alice.waitForSelector(`${first} .reactions button[data-emoji="👏"] .count:text-is("3")`);
  await bob.waitForSelector(`${last} .reactions button[data-emoji="🎉"] .count:text-is("1")`);
  await alice.evaluate(() => document.activeElement.blur());
  await alice.mouse.move(0, 0);
  await alice.screenshot({ path: join(out, 'chat-desktop.png') });
  await bob.mouse.move(0, 0);
  await bob.screenshot({ path: join(out, 'chat-phone.png') });
  await bob.click('#toggle-rooms');
  await bob.screenshot({ path: join(out, 'chat-phone-rooms.png') });
  console.log(`screenshots written to ${out}`);
} finally {
  await browser.close();
  await server.stop();
  cleanup(dir);
}
