// GraphiQL as a person uses it: put the token in the Headers tab, run a
// subscription, watch the result pane. The test sends the message.
//   GRAPHIQL_URL=http://127.0.0.1:8000/graphql TOKEN=… QUERY='subscription …' node e2e/graphiql.mjs
import { env, openBrowser, report } from './browser.mjs';

const TIMEOUT = 15_000;
const browser = await openBrowser();
const { page } = browser;

// Replace an editor's text as a paste would (keystrokes would fight the
// editor's bracket auto-closing).
async function fill(editor, text) {
  await editor.click();
  await page.keyboard.press('Control+A');
  await page.keyboard.insertText(text);
}

const resultText = () => page.evaluate(() => document.querySelector('.result-window .CodeMirror')?.CodeMirror.getValue() ?? '');

try {
  await page.goto(env('GRAPHIQL_URL'));
  await page.waitForSelector('.graphiql-query-editor .CodeMirror', { timeout: TIMEOUT });
  await page.getByRole('button', { name: 'Headers' }).click();
  const headers = JSON.stringify({ Authorization: `Bearer ${env('TOKEN')}` });
  await fill(page.locator('.graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror'), headers);
  const query = env('QUERY');
  await fill(page.locator('.graphiql-query-editor .CodeMirror'), query);
  // GraphiQL parses the query a moment after an edit (debounced), and only a
  // parsed subscription goes over the WebSocket. The parse ends by calling the
  // page's onEditQuery, which writes the query into the URL: wait for that.
  await page.waitForFunction((q) => new URLSearchParams(location.search).get('q') === q, query, { timeout: TIMEOUT });
  await page.locator('button.graphiql-execute-button').click();
  report('subscribed');
  const expected = env('EXPECT');
  await page.waitForFunction(
    (text) => document.querySelector('.result-window .CodeMirror')?.CodeMirror.getValue().includes(text),
    expected,
    { timeout: TIMEOUT },
  );
  report('received', {
    result: JSON.parse(await resultText()),
    headers: await page.evaluate(() => document.querySelector('.graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror').CodeMirror.getValue()),
    external: browser.external,
    errors: browser.errors,
  });
} catch (err) {
  report('failed', { error: String(err), result: await resultText().catch(() => ''), external: browser.external, errors: browser.errors, consoleErrors: browser.consoleErrors });
  process.exitCode = 1;
} finally {
  await browser.close();
}
