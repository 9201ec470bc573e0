// Test harness: the real switchboard binary and Debian's chromium, both started fresh.
//
// SWITCHBOARD_BIN names the binary (tests/browser.rs passes cargo's); CHROMIUM the browser
// (default /usr/bin/chromium). Nothing is downloaded: playwright-core drives the system's
// chromium.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { chromium } from 'playwright-core';

export const BIN = process.env.SWITCHBOARD_BIN;
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

if (!BIN) {
  throw new Error('SWITCHBOARD_BIN is not set: run these tests through `cargo nextest run --test browser`');
}

/** A fresh directory, removed by `cleanup`. */
export function tempDir(prefix) {
  return mkdtempSync(join(tmpdir(), `switchboard-${prefix}-`));
}

export function cleanup(dir) {
  rmSync(dir, { recursive: true, force: true });
}

/** The real server: `switchboard serve` over `dataDir`, on `listen` (port 0: any free port). */
export class Server {
  static async start({ dataDir, listen = '127.0.0.1:0', config = '' }) {
    const args = ['serve', '--listen', listen, '--data-dir', dataDir];
    if (config) {
      const file = join(dataDir, 'switchboard.toml');
      writeFileSync(file, config);
      args.push('--config', file);
    }
    const proc = spawn(BIN, args, {
      env: { ...process.env, RUST_LOG: 'info' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let log = '';
    const address = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the server did not start:\n${log}`)), 15000);
      proc.stderr.setEncoding('utf8');
      proc.stderr.on('data', (chunk) => {
        log += chunk;
        // The log line `... listening address=127.0.0.1:PORT stage=dev`.
        const m = /listening address=(\S+)/.exec(log);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]);
        }
      });
      proc.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`the server exited with ${code}:\n${log}`));
      });
    });
    const server = new Server();
    server.proc = proc;
    server.address = address;
    server.port = Number(address.split(':').pop());
    server.url = `http://${address}/`;
    return server;
  }

  /** SIGTERM, and wait for the graceful stop. */
  async stop() {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const exited = once(this.proc, 'exit');
    this.proc.kill('SIGTERM');
    await exited;
  }
}

/** Starts a server on a given port, retrying while the old socket is still being released. */
export async function startOnPort(dataDir, port) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await Server.start({ dataDir, listen: `127.0.0.1:${port}` });
    } catch (e) {
      if (attempt >= 20 || !/cannot listen/.test(String(e))) throw e;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

/** Headless chromium with a fresh profile; every context is a separate user. */
export async function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-quic',
      '--no-first-run',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/** A new user (own storage) on `url`, connected, with the name `name`. */
export async function openUser(browser, url, name, viewport = { width: 1100, height: 760 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  // Script errors on the page fail the test (checked with `assertNoErrors`).
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(e.message));
  await page.goto(url);
  await online(page);
  if (name) await rename(page, name);
  return page;
}

export async function online(page, timeout = 20000) {
  await page.waitForSelector('#status[data-state="online"]', { timeout });
}

export async function rename(page, name) {
  await page.click('#nick-button');
  await page.fill('#nick-input', name);
  await page.press('#nick-input', 'Enter');
  await page.waitForFunction((n) => document.getElementById('my-name').textContent === n, name);
}

export async function joinRoom(page, room) {
  await page.fill('#join-input', room);
  await page.press('#join-input', 'Enter');
  await page.waitForSelector(`#room-title:text-is("#${room}")`);
  await page.waitForSelector(`#members li.me`);
}

export async function say(page, text) {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
  await waitForMessage(page, text);
}

/** Waits until a (stored, not pending) message with exactly this text is shown. */
export async function waitForMessage(page, text, timeout = 20000) {
  await page.waitForFunction(
    (t) => [...document.querySelectorAll('#message-list li[data-id] .text')].some((e) => e.textContent === t),
    text,
    { timeout },
  );
}

export async function messageTexts(page) {
  return page.$$eval('#message-list li[data-id] .text', (els) => els.map((e) => e.textContent));
}

export function assertNoErrors(...pages) {
  const errors = pages.flatMap((p) => p.errors);
  if (errors.length) throw new Error(`script errors on the page: ${errors.join('; ')}`);
}
