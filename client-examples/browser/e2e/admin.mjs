// The admin dashboard (/admin) as an admin uses it. One scenario a run; the
// test plays everyone else (members, their sockets) and checks the server.
//   ADMIN_URL=http://127.0.0.1:8000/admin TOKEN=… SCENARIO=room ROOM=… MEMBER=… SHOTS=dir node e2e/admin.mjs
// Scenarios: room (members, live tail, history, hostile text, ban), overview
// (nodes, a chart moving), connections (disconnect), expired (a stale token),
// expires (the token expires on an open page), notadmin (a user's token).
// Each screen is saved as SHOTS/<scenario>-<screen>.png.
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { env, openBrowser, report } from './browser.mjs';

const TIMEOUT = 15_000;
const scenario = env('SCENARIO');
const shots = env('SHOTS');
const url = env('ADMIN_URL');

const browser = await openBrowser();
const { page } = browser;
const dialogs = []; // alert/confirm/prompt: the page must never open one
page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss(); });
const graphqlRequests = [];
page.on('request', (r) => { if (new URL(r.url()).pathname === '/graphql') graphqlRequests.push(r.method()); });

async function shot(name) {
  const path = join(shots, `${scenario}-${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

async function stdinLine() {
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    lines.close();
    return line.trim();
  }
  throw new Error('stdin closed before a line came');
}

async function signIn(token) {
  await page.goto(url);
  await page.getByLabel('Admin token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByText('Signed in as').waitFor({ timeout: TIMEOUT });
}

// Click an action, read the confirmation, confirm it.
async function confirmAction(button, action, screenName) {
  await button.click();
  const dialog = page.locator('dialog.confirm[open]');
  await dialog.waitFor({ timeout: TIMEOUT });
  const question = await dialog.locator('#confirm-question').textContent();
  if (screenName) await shot(screenName);
  await dialog.getByRole('button', { name: action, exact: true }).click();
  await page.locator('dialog.confirm[open]').waitFor({ state: 'detached', timeout: TIMEOUT }).catch(() => {});
  return question;
}

const messageTexts = (list) => page.locator(`ol.messages.${list} .text`).allTextContents();

async function room() {
  const roomId = env('ROOM');
  const member = env('MEMBER');
  const hostile = env('HOSTILE');
  await signIn(env('TOKEN'));
  await shot('overview');
  await page.getByRole('link', { name: 'Rooms' }).click();
  // A private room the admin is not in is listed too (Query.adminRooms).
  const hidden = env('PRIVATE_ROOM');
  await page.getByLabel('Search rooms').fill(hidden);
  await page.locator('tr.room', { hasText: hidden }).waitFor({ timeout: TIMEOUT });
  report('private-listed', { rows: await page.locator('tr.room th').allTextContents() });
  await page.getByLabel('Search rooms').fill(roomId);
  await page.locator('tr.room', { hasText: roomId }).waitFor({ timeout: TIMEOUT });
  await shot('rooms');
  await page.getByRole('link', { name: roomId }).click();
  await page.locator(`tr.member[data-user="${member}"]`).waitFor({ timeout: TIMEOUT });
  await page.getByText('Live tail: live').waitFor({ timeout: TIMEOUT });
  report('room-open', { members: await page.locator('tr.member th').allTextContents() });

  // The test sends the hostile text now; it must arrive as text.
  await page.locator('ol.messages.live .text', { hasText: hostile }).waitFor({ timeout: TIMEOUT });
  await page.getByRole('button', { name: 'Load history' }).click();
  await page.locator('ol.messages.history .text', { hasText: hostile }).first().waitFor({ timeout: TIMEOUT });
  const counts = await page.evaluate(() => ({
    img: document.querySelectorAll('img').length,
    script: document.querySelectorAll('main script, #app script').length,
    pwned: document.body.dataset.pwned ?? null,
  }));
  await shot('room');
  report('hostile', { live: await messageTexts('live'), history: await messageTexts('history'), ...counts, dialogs });

  const question = await confirmAction(page.getByRole('button', { name: `Ban ${member}` }), 'Ban', 'confirm-ban');
  await page.getByRole('status').filter({ hasText: `${member} was banned.` }).waitFor({ timeout: TIMEOUT });
  await shot('banned');
  await page.setViewportSize({ width: 390, height: 844 });
  await shot('room-phone');
  report('banned', { question, dialogs, errors: browser.errors, external: browser.external, consoleErrors: browser.consoleErrors });
}

async function overview() {
  await signIn(env('TOKEN'));
  await page.locator('tr.node').first().waitFor({ timeout: TIMEOUT });
  const nodes = await page.locator('tr.node th').allTextContents();
  report('overview', { nodes });
  // The test sends messages now: the Messages/s chart gets new points,
  // the newest above zero.
  const chart = page.locator('figure.chart[data-title="Messages/s"]');
  const before = Number(await chart.getAttribute('data-points'));
  await page.waitForFunction(
    (start) => {
      const figure = document.querySelector('figure.chart[data-title="Messages/s"]');
      return Number(figure.dataset.points) >= start + 2 && Number(figure.dataset.last || 0) > 0;
    },
    before,
    { timeout: 30_000 },
  );
  await shot('overview');
  await page.setViewportSize({ width: 390, height: 844 });
  await shot('overview-phone');
  report('moved', { before, points: Number(await chart.getAttribute('data-points')), last: Number(await chart.getAttribute('data-last')), errors: browser.errors, external: browser.external, consoleErrors: browser.consoleErrors });
}

async function connections() {
  const member = env('MEMBER');
  await signIn(env('TOKEN'));
  await page.getByRole('link', { name: 'Connections' }).click();
  await page.getByLabel('User id').fill(member);
  await page.getByRole('button', { name: 'Filter' }).click();
  const row = page.locator(`tr.connection[data-user="${member}"]`);
  await row.first().waitFor({ timeout: TIMEOUT });
  await shot('connections');
  const question = await confirmAction(page.getByRole('button', { name: `Disconnect ${member}` }).first(), 'Disconnect', 'confirm-disconnect');
  const status = page.getByRole('status').filter({ hasText: `of ${member} closed` });
  await status.waitFor({ timeout: TIMEOUT });
  await shot('disconnected');
  report('disconnected', { question, status: await status.textContent(), errors: browser.errors, external: browser.external, consoleErrors: browser.consoleErrors });
}

async function expired() {
  // A token saved in this tab that has expired since: one request, then sign-in.
  const stale = env('EXPIRED_TOKEN');
  await page.addInitScript((token) => { if (!sessionStorage.getItem('seeded')) { sessionStorage.setItem('seeded', '1'); sessionStorage.setItem('forge-admin-token', token); } }, stale);
  await page.goto(url);
  const notice = page.locator('.signin .notice');
  await notice.waitFor({ timeout: TIMEOUT });
  // Nothing to wait for but the absence of further requests: give a loop
  // time to show itself.
  await page.waitForTimeout(1500);
  const afterLoad = graphqlRequests.length;
  const saved = await page.evaluate(() => sessionStorage.getItem('forge-admin-token'));
  await shot('signin');
  // Typed in by hand: refused with a message, one request.
  await page.getByLabel('Admin token').fill(stale);
  await page.getByRole('button', { name: 'Sign in' }).click();
  const typed = page.locator('.signin .notice');
  await typed.waitFor({ timeout: TIMEOUT });
  await page.waitForTimeout(1500);
  report('expired', { notice: await notice.textContent(), afterLoad, afterTyped: graphqlRequests.length, saved, signedIn: await page.getByText('Signed in as').count(), errors: browser.errors, consoleErrors: browser.consoleErrors });
}

async function expires() {
  // Signed in with a token about to expire, on a room's page (its live tail
  // open): when the server ends the socket for the expired token, the page
  // goes back to sign-in, and asks nothing more.
  await page.goto(url);
  report('ready'); // the test mints the short-lived token now: browser start-up is slow
  await signIn(await stdinLine());
  await page.goto(`${url}#/rooms/${encodeURIComponent(env('ROOM'))}`);
  await page.getByText('Live tail: live').waitFor({ timeout: TIMEOUT });
  report('open');
  const notice = page.locator('.signin .notice');
  await notice.waitFor({ timeout: 30_000 });
  const atSignIn = graphqlRequests.length;
  await page.waitForTimeout(1500); // a loop would show itself by now
  await shot('signin');
  report('expired', { notice: await notice.textContent(), atSignIn, later: graphqlRequests.length, saved: await page.evaluate(() => sessionStorage.getItem('forge-admin-token')), errors: browser.errors, consoleErrors: browser.consoleErrors });
}

async function notadmin() {
  await page.goto(url);
  await page.getByLabel('Admin token').fill(env('TOKEN'));
  await page.getByRole('button', { name: 'Sign in' }).click();
  const failure = page.locator('.signin .failure');
  await failure.waitFor({ timeout: TIMEOUT });
  await shot('signin');
  report('refused', { failure: await failure.textContent(), signedIn: await page.getByText('Signed in as').count(), saved: await page.evaluate(() => sessionStorage.getItem('forge-admin-token')), errors: browser.errors, consoleErrors: browser.consoleErrors });
}

async function actions() {
  // Every room action from the page, by keyboard where a person would use
  // it: each asks first; Cancel changes nothing.
  const roomId = env('ROOM');
  const member = env('MEMBER');
  await page.goto(url);
  await page.getByLabel('Admin token').fill(env('TOKEN'));
  await page.getByLabel('Admin token').press('Enter');
  await page.getByText('Signed in as').waitFor({ timeout: TIMEOUT });
  await page.getByRole('link', { name: 'Rooms' }).click();
  await page.getByLabel(/Open a room by id/).fill(roomId);
  await page.getByLabel(/Open a room by id/).press('Enter');
  await page.locator(`tr.member[data-user="${member}"]`).waitFor({ timeout: TIMEOUT });
  await page.getByText('Live tail: live').waitFor({ timeout: TIMEOUT });

  // Cancelled with Escape: nothing happens.
  await page.getByRole('button', { name: `Remove ${member}` }).click();
  await page.locator('dialog.confirm[open]').waitFor({ timeout: TIMEOUT });
  await page.keyboard.press('Escape');
  await page.locator('dialog.confirm[open]').waitFor({ state: 'detached', timeout: TIMEOUT });
  report('cancelled');
  await stdinLine(); // the test checked the member is still there

  await page.getByLabel(`Role of ${member}`, { exact: true }).selectOption('ADMIN');
  const role = await confirmAction(page.getByRole('button', { name: `Change role of ${member}` }), 'Change role', 'confirm-role');
  await page.getByRole('status').filter({ hasText: `${member} is now ADMIN.` }).waitFor({ timeout: TIMEOUT });

  await page.getByLabel('System message').fill(env('SYSTEM_TEXT'));
  const system = await confirmAction(page.getByRole('button', { name: 'Send system message' }), 'Send', null);
  await page.locator('ol.messages.live li.system .text', { hasText: env('SYSTEM_TEXT') }).waitFor({ timeout: TIMEOUT });

  const remove = await confirmAction(page.getByRole('button', { name: `Remove ${member}` }), 'Remove', null);
  await page.getByRole('status').filter({ hasText: `${member} was removed.` }).waitFor({ timeout: TIMEOUT });
  await shot('room-after');

  const del = await confirmAction(page.getByRole('button', { name: 'Delete room' }), 'Delete room', 'confirm-delete');
  await page.getByRole('heading', { name: 'Rooms' }).waitFor({ timeout: TIMEOUT });

  await page.getByRole('link', { name: 'Channels' }).click();
  await page.getByLabel('Search channels').fill(env('CHANNEL'));
  await page.locator('tr.channel', { hasText: env('CHANNEL') }).waitFor({ timeout: TIMEOUT });
  await shot('channels');
  await page.getByRole('link', { name: 'Presence' }).click();
  await page.getByLabel(/User ids/).fill(member);
  await page.getByRole('button', { name: 'Look up' }).click();
  await page.locator('tbody tr', { hasText: member }).waitFor({ timeout: TIMEOUT });
  await shot('presence');
  report('done', { questions: [role, system, remove, del], dialogs, errors: browser.errors, external: browser.external, consoleErrors: browser.consoleErrors });
}

const SCENARIOS = { room, overview, connections, expired, expires, notadmin, actions };
try {
  await SCENARIOS[scenario]();
} catch (err) {
  const path = await shot('failed').catch(() => null);
  report('failed', { error: String(err), screenshot: path, dialogs, errors: browser.errors, consoleErrors: browser.consoleErrors, external: browser.external });
  process.exitCode = 1;
} finally {
  await browser.close();
}
