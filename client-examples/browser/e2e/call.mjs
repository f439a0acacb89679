// Two pages of ../index.html call each other through the server and pass a
// message each way over a WebRTC data channel (host candidates on loopback).
//   PAGE_A=http://…/?url=…&token=…&room=R PAGE_B=… node e2e/call.mjs
import { env, openBrowser, report } from './browser.mjs';

const TIMEOUT = 30_000;
const browser = await openBrowser({ webrtc: true });
const a = browser.page;
const b = await browser.newPage();
const state = (page) => page.evaluate(() => ({
  call: document.querySelector('#call-status').textContent,
  log: [...document.querySelectorAll('#call-log li')].map((li) => li.textContent),
}));
async function say(page, text) {
  await page.locator('#call-send input[name=text]').fill(text);
  await page.locator('#call-send input[name=text]').press('Enter');
}
try {
  for (const [page, url] of [[a, env('PAGE_A')], [b, env('PAGE_B')]]) {
    await page.goto(url);
    await page.waitForSelector('#status[data-state=live]', { timeout: TIMEOUT });
  }
  await a.click('#call-button');
  await a.waitForSelector('#call-status[data-state=waiting]', { timeout: TIMEOUT });
  report('waiting', await state(a));
  await b.click('#call-button');
  for (const page of [a, b]) await page.waitForSelector('#call-status[data-state=connected]', { timeout: TIMEOUT });
  await say(a, 'hello from a');
  await b.waitForSelector('#call-log li[data-from=them]', { timeout: TIMEOUT });
  await say(b, 'hello from b');
  await a.waitForSelector('#call-log li[data-from=them]', { timeout: TIMEOUT });
  report('done', { a: await state(a), b: await state(b), external: browser.external, errors: browser.errors, consoleErrors: browser.consoleErrors });
} catch (err) {
  report('failed', { error: String(err), a: await state(a).catch(() => ({})), b: await state(b).catch(() => ({})), errors: browser.errors, consoleErrors: browser.consoleErrors });
  process.exitCode = 1;
} finally {
  await browser.close();
}
