// Drives ../index.html like a user: join, see another user come online and
// type, see their message, type and send one. The test plays the other user.
//   PAGE_URL=http://127.0.0.1:8080/?url=ws://…&token=…&room=… ME=alice OTHER=bob node e2e/page.mjs
import { env, openBrowser, report } from './browser.mjs';

const TIMEOUT = 15_000;
const me = env('ME');
const other = env('OTHER');
const text = process.env.TEXT || 'hello from the browser';

const browser = await openBrowser();
const { page } = browser;
const state = () => page.evaluate(() => ({
  status: document.querySelector('#status').textContent,
  typing: document.querySelector('#typing').textContent,
  presence: [...document.querySelectorAll('#presence li')].map((li) => [li.dataset.user, li.dataset.status]),
  messages: [...document.querySelectorAll('#messages li')].map((li) => ({
    type: li.dataset.type,
    user: li.dataset.user,
    text: li.querySelector('.text')?.textContent ?? li.textContent,
  })),
}));
try {
  await page.goto(env('PAGE_URL'));
  await page.waitForSelector('#status[data-state=live]', { timeout: TIMEOUT });
  report('live', await state());
  await page.waitForSelector(`#presence li[data-user="${other}"][data-status=ONLINE]`, { timeout: TIMEOUT });
  await page.waitForFunction((who) => document.querySelector('#typing').textContent === `${who} is typing…`, other, { timeout: TIMEOUT });
  report('typing', await state());
  await page.waitForSelector(`#messages li[data-type=MESSAGE][data-user="${other}"]`, { timeout: TIMEOUT });
  await page.waitForFunction(() => document.querySelector('#typing').textContent === '', null, { timeout: TIMEOUT });
  await page.locator('#send input[name=text]').pressSequentially(text);
  await page.keyboard.press('Enter');
  await page.waitForSelector(`#messages li[data-type=MESSAGE][data-user="${me}"]`, { timeout: TIMEOUT });
  report('done', { ...(await state()), external: browser.external, errors: browser.errors, consoleErrors: browser.consoleErrors });
} catch (err) {
  report('failed', { error: String(err), ...(await state().catch(() => ({}))), external: browser.external, errors: browser.errors, consoleErrors: browser.consoleErrors });
  process.exitCode = 1;
} finally {
  await browser.close();
}
