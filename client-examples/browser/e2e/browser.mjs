// Headless Chromium for the end-to-end scripts: Debian's /usr/bin/chromium
// (or $CHROMIUM) driven by playwright-core, which downloads no browser.
// Requests to anywhere but this machine are aborted and reported, so a page
// that would need the internet fails its test instead of hanging.
import { chromium } from 'playwright-core';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const LOCAL = new Set(['127.0.0.1', 'localhost', '[::1]']);

// `webrtc`: let peer connections use host candidates on loopback, unhidden
// by mDNS names (the machine running the tests may have no other interface).
export async function openBrowser({ webrtc = false } = {}) {
  const profile = await mkdtemp(join(tmpdir(), 'forge-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ...(webrtc ? ['--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns'] : []),
    ],
  });
  const external = [];
  const errors = []; // uncaught exceptions in the page
  const consoleErrors = []; // console.error, failed loads
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (['http:', 'https:', 'ws:', 'wss:'].includes(url.protocol) && !LOCAL.has(url.hostname)) {
      external.push(url.href);
      return route.abort();
    }
    return route.continue();
  });
  const watch = (page) => {
    page.on('pageerror', (err) => errors.push(String(err)));
    page.on('console', (msg) => { if (msg.type() === 'error') consoleErrors.push(msg.text()); });
    return page;
  };
  const page = watch(context.pages()[0] ?? (await context.newPage()));
  return {
    page,
    async newPage() { return watch(await context.newPage()); },
    external,
    errors,
    consoleErrors,
    async close() {
      await context.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}

// One JSON line on stdout per step: the test reads them as they come.
export function report(step, details = {}) {
  process.stdout.write(`${JSON.stringify({ step, ...details })}\n`);
}

export function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}
