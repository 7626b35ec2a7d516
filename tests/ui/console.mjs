// End-to-end test of the admin console in a real browser (playwright-core + system Chromium).
//
//   CONSOLE_URL=http://127.0.0.1:PORT/admin/ui/ RELAY_URL=http://127.0.0.1:PORT ADMIN_TOKEN=... \
//   UPSTREAM_URL=http://127.0.0.1:MOCK [CHROMIUM=/usr/bin/chromium] [SCREENSHOT_DIR=/tmp/shots] \
//   node tests/ui/console.mjs
//
// Exits 0 when every step passed; otherwise prints what failed and exits 1 (2 on the global
// timeout). Before the browser starts it checks format.js's parsing directly in Node.

import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined || v === '') {
    console.error(`missing environment variable ${name}`);
    process.exit(1);
  }
  return v;
};
const CONSOLE_URL = env('CONSOLE_URL');
const RELAY_URL = env('RELAY_URL').replace(/\/$/, '');
const ADMIN_TOKEN = env('ADMIN_TOKEN');
const UPSTREAM_URL = env('UPSTREAM_URL').replace(/\/$/, '');
const CHROMIUM = env('CHROMIUM', '/usr/bin/chromium');
const SCREENSHOT_DIR = process.env.SCREENSHOT_DIR || '';
// The suite runs on small, busy machines (two cores, hundreds of other tests at once): checks
// wait 10 s; navigation (the first load into a cold Chromium) and a dialog leaving after a save
// (an API write, then a reload) 30 s; the whole run 220 s (the Rust wrapper allows 240 s).
const WAIT = 10_000;
const NAV = 30_000;
const RUN_LIMIT = 220_000;

const globalTimer = setTimeout(() => {
  console.error(`FAIL: the whole run took more than ${RUN_LIMIT / 1000} s (last step: ${current})`);
  process.exit(2);
}, RUN_LIMIT);

const run = Date.now().toString(36);
const ACCOUNT = `e2e-acct-${run}`;
const KEY = `e2e-key-${run}`;
const HOSTILE = `<img src=x onerror=alert(1)> ${run}`;

let current = 'start';
const problems = []; // page errors, CSP violations, dialogs, console errors other than failed loads
const failedLoads = []; // console "Failed to load resource" errors: {step, url, status}
const refusals = []; // every answer of 400 or more the page got: {step, method, path, url, status}
const cleanup = { keys: [], accounts: [] };

async function adminApi(method, path, body) {
  const res = await fetch(`${RELAY_URL}/admin/${path}`, {
    method,
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null };
}

async function relayMessage(secret, model = 'claude-sonnet-4-5') {
  const res = await fetch(`${RELAY_URL}/v1/messages`, {
    method: 'POST',
    headers: { 'x-api-key': secret, 'anthropic-version': '2023-06-01', 'content-type': 'application/json' },
    body: JSON.stringify({ model, max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] }),
  });
  await res.arrayBuffer();
  return res.status;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** RFC 4180 CSV: rows of fields, quoted fields (with commas, quotes, line breaks) included. */
function parseCsv(text) {
  const rows = [];
  let row = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i += 1) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        i += 1;
      } else if (c === '"') {
        quoted = false;
      } else {
        field += c;
      }
    } else if (c === '"' && field === '') {
      quoted = true;
    } else if (c === ',') {
      row.push(field);
      field = '';
    } else if (c === '\r' && text[i + 1] === '\n') {
      // the \n ends the row
    } else if (c === '\n') {
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
    } else {
      field += c;
    }
  }
  assert.equal(quoted, false, 'the CSV ends inside a quoted field');
  if (field !== '' || row.length) {
    row.push(field);
    rows.push(row);
  }
  return rows;
}

/** format.js's parsing, checked in Node (it has no DOM dependency), before the browser starts. */
async function checkFormat() {
  const url = new URL('../../src/admin/ui/format.js', import.meta.url);
  const source = readFileSync(url, 'utf8');
  const f = await import(`data:text/javascript;base64,${Buffer.from(source).toString('base64')}`);
  assert.deepEqual(f.parseUsd('12.50'), { value: 12_500_000_000 });
  assert.deepEqual(f.parseUsd(' $12 '), { value: 12_000_000_000 });
  assert.deepEqual(f.parseUsd('.5'), { value: 500_000_000 });
  assert.deepEqual(f.parseUsd('0.1'), { value: 100_000_000 });
  assert.deepEqual(f.parseUsd('0.000000001'), { value: 1 });
  assert.deepEqual(f.parseUsd('1,234.56'), { value: 1_234_560_000_000 });
  assert.deepEqual(f.parseUsd('$1,234'), { value: 1_234_000_000_000 });
  assert.deepEqual(f.parseUsd('1,000,000'), { value: 1_000_000_000_000_000 });
  assert.deepEqual(f.parseUsd('12,345.'), { value: 12_345_000_000_000 });
  // A decimal comma, or commas not between groups of three digits: refused, not read as 1250.
  for (const bad of ['12,50', '1,2', '1,2345', ',5', '1234,567', '1,234,56', '12,50.5', '1,,234']) {
    const r = f.parseUsd(bad);
    assert.ok(r.error && /use a dot for decimals/.test(r.error), `parseUsd(${JSON.stringify(bad)}) = ${JSON.stringify(r)}`);
  }
  for (const bad of ['', ' ', '1.2.3', 'abc', '-5', '.', '$', '1e3', '0.0000000001', '9007200']) {
    const r = f.parseUsd(bad);
    assert.ok(r.error && r.value === undefined, `parseUsd(${JSON.stringify(bad)}) = ${JSON.stringify(r)}`);
  }
  assert.match(f.parseUsd('9007200').error, /too large/);
  assert.deepEqual(f.parseUsd('9007199'), { value: 9_007_199_000_000_000 });
  // Times as the API writes them: plain RFC 3339 with an offset, or with a [Zone] annotation.
  assert.equal(f.parseTime('2026-11-23T00:00:00+09:00').toISOString(), '2026-11-22T15:00:00.000Z');
  assert.equal(f.parseTime('2026-11-23T00:00:00+09:00[Asia/Tokyo]').toISOString(), '2026-11-22T15:00:00.000Z');
  assert.equal(f.parseTime('nonsense'), null);
  assert.equal(f.fmtUtc('2026-11-22T08:00:00Z'), '2026-11-22 08:00 UTC');
  assert.equal(f.utcMidnight(new Date('2026-11-22T23:59:00-05:00')).toISOString(), '2026-11-23T00:00:00.000Z');
  assert.equal(f.utcMonthStart(new Date('2026-11-22T08:00:00Z')).toISOString(), '2026-11-01T00:00:00.000Z');
  assert.equal(f.nanoToDecimal(12_500_000_000), '12.5');
  assert.equal(f.fmtUsd(12_500_000_000), '$12.50');
}

/** Retries `fn` (which throws while not yet true) for up to `ms`. */
async function eventually(what, fn, ms = WAIT) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms: ${last && last.message}`);
    await new Promise((r) => setTimeout(r, 300));
  }
}

/** A link of the navigation bar (a page's own links may have the same name). */
const nav = (name) => page.getByRole('navigation', { name: 'Sections' }).getByRole('link', { name, exact: true });

/** The text of the "Last used" cell of the key list's row for the key named `name`. */
async function lastUsedCell(name) {
  const table = page.locator('table', { has: page.locator('th', { hasText: 'Last used' }) });
  await table.waitFor({ timeout: WAIT });
  const column = (await table.locator('thead th').allTextContents()).findIndex((t) => t.trim() === 'Last used');
  assert.ok(column >= 0, 'the key list has a Last used column');
  return (await table.locator('tbody tr', { hasText: name }).first().locator('td').nth(column).textContent()).trim();
}

/** Clicks the page's Refresh and waits for the reload to be painted (the old button replaced). */
async function refreshed() {
  const old = await page.getByRole('button', { name: 'Refresh' }).elementHandle();
  await old.click();
  await page.waitForFunction((el) => !el.isConnected, old, { timeout: WAIT });
  await old.dispose();
}

async function shot(page, name) {
  if (SCREENSHOT_DIR) await page.screenshot({ path: join(SCREENSHOT_DIR, `${name}.png`), fullPage: true });
}

/**
 * [step, method, path (a RegExp on the URL's path), status]: the answers of 400 or more a step
 * provokes on purpose. Any other such answer to the page fails the run, as does a console error
 * for a failed load that is not one of them.
 */
const expectedRefusals = [];
const ID = '[^/]+';
const path = (re) => new RegExp(`^${re}$`);
const steps = [];
const step = (name, fn) => steps.push([name, fn]);

let browser;
let page;
let accountId;
let keyId;
let secret;

expectedRefusals.push(['a wrong token shows the API error and stays on sign-in', 'GET', path('/admin/keys'), 401]);
step('a wrong token shows the API error and stays on sign-in', async () => {
  await page.goto(CONSOLE_URL, { timeout: NAV });
  await page.getByLabel('Admin token').fill('not-the-admin-token-0000');
  await page.getByRole('button', { name: 'Sign in' }).click();
  const err = page.locator('#signin-error');
  await err.waitFor({ state: 'visible', timeout: WAIT });
  assert.match(await err.textContent(), /invalid admin token/);
  assert.equal(await page.locator('#shell').isVisible(), false);
  assert.equal(await page.evaluate(() => sessionStorage.length + localStorage.length), 0);
});

step('the right token shows the overview; the token is in sessionStorage only', async () => {
  await page.getByLabel('Admin token').fill(ADMIN_TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Overview', level: 1 }).waitFor({ timeout: NAV });
  await page.getByText('Accounts by status').waitFor({ timeout: WAIT });
  // Today and this month are UTC days and months, as the server counts usage; the cards say so.
  await page.getByRole('heading', { name: 'Today (UTC)', level: 2 }).waitFor({ timeout: WAIT });
  await page.getByRole('heading', { name: 'This month (UTC)', level: 2 }).waitFor({ timeout: WAIT });
  const stored = await page.evaluate(() => ({ s: Object.values(sessionStorage), l: localStorage.length }));
  assert.deepEqual(stored, { s: [ADMIN_TOKEN], l: 0 });
  assert.ok(!page.url().includes(ADMIN_TOKEN), 'the token is not in the URL');
  await shot(page, 'e2e-overview');
});

step('a hash that cannot be decoded shows "Not found" (no page error)', async () => {
  await page.goto(`${CONSOLE_URL}#/keys/%E0%A4%A`, { timeout: NAV });
  await page.getByRole('heading', { name: 'Not found', level: 1 }).waitFor({ timeout: WAIT });
  assert.equal(await page.locator('#app-error').isVisible(), false);
  // The console still works from there.
  await page.getByRole('link', { name: 'Go to the overview' }).click();
  await page.getByRole('heading', { name: 'Overview', level: 1 }).waitFor({ timeout: WAIT });
});

step('add an Anthropic account through the form (bad budget refused, then 12.5 dollars)', async () => {
  await page.getByRole('link', { name: 'Accounts' }).click();
  await page.getByRole('button', { name: 'Add account' }).click();
  const dlg = page.getByRole('dialog', { name: 'Add an account' });
  await dlg.waitFor({ timeout: WAIT });
  // Provider-specific fields follow the provider.
  await dlg.getByLabel('Provider').selectOption('bedrock');
  assert.ok(await dlg.getByLabel('Region').isVisible(), 'bedrock shows a region');
  assert.equal(await dlg.getByLabel('Model map').isVisible(), false, 'bedrock has deployments, no model map');
  await dlg.getByLabel('Provider').selectOption('anthropic');
  assert.equal(await dlg.getByLabel('Region').isVisible(), false, 'anthropic shows no region');
  await dlg.getByLabel('Model map').fill('claude-opus-*');
  await dlg.getByLabel('Name').fill(ACCOUNT);
  await dlg.getByLabel('API key').fill('sk-ant-test');
  await dlg.getByRole('button', { name: 'Add account' }).click();
  await dlg.getByRole('alert').filter({ hasText: 'Model map: "claude-opus-*" is not model=name' }).waitFor({ timeout: WAIT });
  await dlg.getByLabel('Model map').fill('claude-opus-*=e2e-opus');
  await dlg.getByLabel('Name').fill(ACCOUNT);
  await dlg.getByLabel('API key').fill('sk-ant-test');
  await dlg.getByLabel(/^Base URL/).fill(UPSTREAM_URL);
  await dlg.getByLabel('Daily budget (USD)').fill('1.2.3');
  await dlg.getByRole('button', { name: 'Add account' }).click();
  await dlg.getByRole('alert').filter({ hasText: 'Daily budget' }).waitFor({ timeout: WAIT });
  // A decimal comma is refused, not read as $1,250.
  await dlg.getByLabel('Daily budget (USD)').fill('12,50');
  await dlg.getByRole('button', { name: 'Add account' }).click();
  await dlg.getByRole('alert').filter({ hasText: 'use a dot for decimals' }).waitFor({ timeout: WAIT });
  await dlg.getByLabel('Daily budget (USD)').fill('12.5');
  // Text a number field cannot read is refused, not taken as "no limit".
  await dlg.getByLabel('Max concurrency').fill('two');
  await dlg.getByRole('button', { name: 'Add account' }).click();
  await dlg.getByRole('alert').filter({ hasText: 'Max concurrency: enter a whole number' }).waitFor({ timeout: WAIT });
  await dlg.getByLabel('Max concurrency').fill('');
  await shot(page, 'e2e-add-account');
  await dlg.getByRole('button', { name: 'Add account' }).click();
  await dlg.waitFor({ state: 'detached', timeout: NAV });
  const row = page.locator('tbody tr', { hasText: ACCOUNT });
  await row.waitFor({ timeout: WAIT });
  const list = await adminApi('GET', 'accounts');
  const acct = list.json.data.find((a) => a.name === ACCOUNT);
  assert.ok(acct, 'the API lists the account');
  accountId = acct.id;
  cleanup.accounts.push(accountId);
  const one = await adminApi('GET', `accounts/${accountId}`);
  assert.equal(one.status, 200);
  assert.equal(one.json.daily_cost_nanousd, 12_500_000_000);
  assert.equal(one.json.base_url, UPSTREAM_URL);
  assert.equal(one.json.provider, 'anthropic');
  assert.equal(one.json.max_concurrency ?? null, null);
  assert.deepEqual(one.json.model_map, { 'claude-opus-*': 'e2e-opus' });
  assert.ok((await row.textContent()).includes(accountId), 'the row shows the id');
});

step('a hostile name is shown as text: accounts list and page, keys list, overview', async () => {
  // An upstream that refuses every credential: the hostile account's one request marks it
  // unauthorized, so the overview lists it among the accounts that need attention. It serves only
  // e2e-hostile-* models: nothing else is sent to it.
  const refuser = createServer((req, res) => {
    req.resume();
    res.writeHead(401, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ type: 'error', error: { type: 'authentication_error', message: 'invalid x-api-key' } }));
  });
  await new Promise((r) => refuser.listen(0, '127.0.0.1', r));
  try {
    const created = await adminApi('POST', 'accounts', {
      name: HOSTILE, provider: 'anthropic', api_key: 'sk-ant-test', base_url: `http://127.0.0.1:${refuser.address().port}`, priority: 99, models: ['e2e-hostile-*'],
    });
    assert.equal(created.status, 201);
    cleanup.accounts.push(created.json.id);
    const hostileKey = await adminApi('POST', 'keys', { name: `${HOSTILE} key`, binding: { accounts: [created.json.id] } });
    assert.equal(hostileKey.status, 201);
    cleanup.keys.push(hostileKey.json.id);
    assert.notEqual(await relayMessage(hostileKey.json.key, 'e2e-hostile-model'), 200);
    await eventually('the hostile account is marked unauthorized', async () => {
      assert.equal((await adminApi('GET', `accounts/${created.json.id}`)).json.state.status, 'unauthorized');
    });

    await page.getByRole('button', { name: 'Refresh' }).click();
    await page.locator('tbody tr a', { hasText: HOSTILE }).waitFor({ timeout: WAIT });
    assert.equal(await page.locator('img').count(), 0, 'no img element on the accounts list');
    await page.goto(`${CONSOLE_URL}#/accounts/${created.json.id}`, { timeout: NAV });
    await page.getByRole('heading', { level: 1 }).filter({ hasText: HOSTILE }).waitFor({ timeout: WAIT });
    assert.equal(await page.locator('img').count(), 0, 'no img element on the account page');

    await nav('Keys').click();
    const keyRow = page.locator('tbody tr', { hasText: `${HOSTILE} key` });
    await keyRow.waitFor({ timeout: WAIT });
    // The binding column names the hostile account too.
    assert.ok((await keyRow.textContent()).split(HOSTILE).length >= 3, 'the key row shows both hostile names');
    assert.equal(await page.locator('img').count(), 0, 'no img element on the keys list');

    await nav('Overview').click();
    await page.locator('.attention a', { hasText: HOSTILE }).waitFor({ timeout: WAIT });
    assert.equal(await page.locator('img').count(), 0, 'no img element on the overview');
    await nav('Accounts').click();
    await page.getByRole('heading', { name: 'Accounts', level: 1 }).waitFor({ timeout: WAIT });
  } finally {
    refuser.close();
    refuser.closeAllConnections();
  }
});

step('create a key with max concurrency 3: the secret is shown once, then kept nowhere', async () => {
  await page.getByRole('link', { name: 'Keys' }).click();
  await page.getByRole('button', { name: 'Create key' }).click();
  const dlg = page.getByRole('dialog', { name: 'Create a key' });
  await dlg.waitFor({ timeout: WAIT });
  await dlg.getByLabel('Name').fill(KEY);
  await dlg.getByLabel('Max concurrency').fill('3 keys');
  await dlg.getByRole('button', { name: 'Create key' }).click();
  await dlg.getByRole('alert').filter({ hasText: 'Max concurrency: a whole number' }).waitFor({ timeout: WAIT });
  await dlg.getByLabel('Max concurrency').fill('3');
  await dlg.getByRole('button', { name: 'Create key' }).click();
  const secretDlg = page.getByRole('dialog', { name: `Key "${KEY}" created` });
  await secretDlg.waitFor({ timeout: NAV });
  await secretDlg.getByText('you will not see it again').waitFor();
  secret = (await secretDlg.locator('code.secret').textContent()).trim();
  assert.match(secret, /^sy-/);
  await shot(page, 'e2e-secret');
  await secretDlg.getByRole('button', { name: 'I have saved it, close' }).click();
  await page.locator('dialog code.secret').waitFor({ state: 'detached', timeout: NAV });
  await page.locator('tbody tr', { hasText: KEY }).waitFor({ timeout: WAIT });
  const found = await page.evaluate((s) => {
    const inputs = [...document.querySelectorAll('input, textarea')].some((i) => i.value.includes(s));
    return {
      html: document.documentElement.outerHTML.includes(s),
      text: document.body.innerText.includes(s),
      inputs,
      storage: JSON.stringify({ ...sessionStorage }).includes(s) || JSON.stringify({ ...localStorage }).includes(s),
    };
  }, secret);
  assert.deepEqual(found, { html: false, text: false, inputs: false, storage: false });
  const list = await adminApi('GET', 'keys');
  const key = list.json.data.find((k) => k.name === KEY);
  assert.ok(key, 'the API lists the key');
  keyId = key.id;
  cleanup.keys.push(keyId);
  assert.equal(key.limits.max_concurrency, 3);
  assert.equal(await lastUsedCell(KEY), 'never');
});

step('a request through the relay with the key is listed with its usage', async () => {
  assert.equal(await relayMessage(secret), 200);
  await page.getByRole('link', { name: 'Requests' }).click();
  await eventually('the request log lists the key\'s request', async () => {
    await page.getByRole('button', { name: 'Refresh' }).click();
    await page.locator('tbody tr', { hasText: KEY }).filter({ hasText: 'claude-sonnet-4-5' }).first().waitFor({ timeout: 1000 });
  });
  await shot(page, 'e2e-requests');
  const keySel = page.getByLabel('Key', { exact: true });
  const refresh = page.getByRole('button', { name: 'Refresh' });
  // Opened for one key, then "Every key" chosen: the list follows, and "Every key" stays chosen
  // (the key the page was opened with does not come back).
  await page.goto(`${CONSOLE_URL}#/requests?key_id=${keyId}`, { timeout: NAV });
  // (Until the new view has loaded, the page may still show the previous one: every key's.)
  await eventually('the key\'s requests alone are loaded', async () => {
    assert.equal(await keySel.inputValue(), keyId);
    assert.ok(await refresh.isEnabled());
    assert.ok(await page.locator('tbody tr', { hasText: KEY }).count() > 0, 'the key\'s requests');
    assert.equal(await page.locator('tbody tr', { hasText: 'e2e-hostile-model' }).count(), 0, 'only the key\'s requests');
  });
  await keySel.selectOption('');
  await eventually('every key\'s requests are loaded', async () => assert.ok(await refresh.isEnabled()));
  assert.equal(await keySel.inputValue(), '');
  assert.ok(!page.url().includes('key_id'), page.url());
  await page.locator('tbody tr', { hasText: 'e2e-hostile-model' }).first().waitFor({ timeout: WAIT });
  // A → B with A's answer last: B's rows stay (A's late answer is not painted).
  const held = (u) => u.pathname.endsWith('/admin/requests') && u.searchParams.get('key_id') === keyId;
  await page.route(held, async (route) => {
    await sleep(1500);
    await route.continue().catch(() => {});
  });
  try {
    const lateAnswer = page.waitForResponse((r) => held(new URL(r.url())), { timeout: NAV });
    await keySel.selectOption(keyId);
    await keySel.selectOption('');
    await lateAnswer;
    await sleep(500);
    await eventually('every key\'s requests are shown', async () => assert.ok(await refresh.isEnabled()));
    assert.equal(await keySel.inputValue(), '');
    assert.ok(await page.locator('tbody tr', { hasText: 'e2e-hostile-model' }).count() > 0, 'the rows are every key\'s');
  } finally {
    await page.unroute(held);
  }
  // An account's requests: the account chosen, its rows only.
  await page.goto(`${CONSOLE_URL}#/requests?account_id=${accountId}`, { timeout: NAV });
  await eventually('the account\'s requests alone are loaded', async () => {
    assert.equal(await page.getByLabel('Account', { exact: true }).inputValue(), accountId);
    assert.ok(await page.locator('tbody tr', { hasText: KEY }).count() > 0, 'the key\'s request, which the account served');
    assert.equal(await page.locator('tbody tr', { hasText: 'e2e-hostile-model' }).count(), 0, 'only the account\'s requests');
  });
  await page.goto(`${CONSOLE_URL}#/keys/${keyId}`, { timeout: NAV });
  await eventually('the key\'s usage shows 1 request', async () => {
    await page.getByRole('button', { name: 'Refresh' }).click();
    const cell = page.locator('tr', { hasText: 'All time' }).locator('td').nth(1);
    await cell.waitFor({ timeout: 1000 });
    assert.equal((await cell.textContent()).trim(), '1');
  });
  const lastUsed = page.locator('dl.facts div', { has: page.locator('dt', { hasText: 'Last used' }) }).locator('dd');
  assert.match((await lastUsed.textContent()).trim(), /\(just now\)$/);
  await page.getByRole('heading', { name: 'Recent requests' }).waitFor();
  await shot(page, 'e2e-key-detail');
  await nav('Keys').click();
  await eventually('the key list shows the key used just now', async () => assert.equal(await lastUsedCell(KEY), 'just now'));
  const listed = (await adminApi('GET', 'keys?with=usage')).json.data.find((k) => k.id === keyId);
  const sent = Date.parse(listed.last_used_at);
  assert.ok(Date.now() - sent < 60_000 && Date.now() - sent >= 0, listed.last_used_at);
  await page.goto(`${CONSOLE_URL}#/keys/${keyId}`, { timeout: NAV });
  await page.getByRole('heading', { name: 'Recent requests' }).waitFor({ timeout: WAIT });
});

step('disable the key in the UI: the relay refuses it (401); enable it again', async () => {
  await page.getByRole('button', { name: 'Disable' }).click();
  await page.getByText('Key disabled').waitFor({ timeout: WAIT });
  assert.equal((await adminApi('GET', `keys/${keyId}`)).json.enabled, false);
  await eventually('the relay refuses the disabled key', async () => assert.equal(await relayMessage(secret), 401));
  await page.getByRole('button', { name: 'Enable' }).click();
  await page.getByText('Key enabled').waitFor({ timeout: WAIT });
  assert.equal((await adminApi('GET', `keys/${keyId}`)).json.enabled, true);
  await eventually('the relay takes the key again', async () => assert.equal(await relayMessage(secret), 200));
});

step('rotate the key\'s secret: the new one is shown once and served, the old one refused', async () => {
  await page.getByRole('button', { name: 'Rotate secret' }).click();
  const confirm = page.getByRole('dialog', { name: 'Rotate secret' });
  await confirm.getByText(KEY).waitFor({ timeout: WAIT });
  await confirm.getByRole('button', { name: 'Rotate secret' }).click();
  const secretDlg = page.getByRole('dialog', { name: `New secret for "${KEY}"` });
  await secretDlg.waitFor({ timeout: NAV });
  const fresh = (await secretDlg.locator('code.secret').textContent()).trim();
  assert.match(fresh, /^sy-/);
  assert.notEqual(fresh, secret);
  await secretDlg.getByRole('button', { name: 'I have saved it, close' }).click();
  await page.locator('dialog code.secret').waitFor({ state: 'detached', timeout: NAV });
  await page.getByText('New secret made').waitFor({ timeout: WAIT });
  const inPage = await page.evaluate((s) => document.documentElement.outerHTML.includes(s), fresh);
  assert.equal(inPage, false, 'the new secret is kept nowhere in the page');
  assert.equal(await relayMessage(secret), 401);
  assert.equal(await relayMessage(fresh), 200);
  assert.equal((await adminApi('GET', `keys/${keyId}`)).json.id, keyId);
  secret = fresh;
});

expectedRefusals.push(['edit the limits JSON: change, add, then remove a limit', 'PATCH', path(`/admin/keys/${ID}`), 400]);
step('edit the limits JSON: change, add, then remove a limit', async () => {
  await page.getByRole('button', { name: 'Edit limits' }).click();
  let dlg = page.getByRole('dialog', { name: `Limits of key ${KEY}` });
  await dlg.waitFor({ timeout: WAIT });
  const ta = dlg.getByLabel('Limits (JSON)');
  assert.deepEqual(JSON.parse(await ta.inputValue()), { max_concurrency: 3 });
  await ta.fill('{"max_concurrency": 5, "window": {"seconds": 3600, "requests": 50, "tokens": 100000}}');
  await dlg.getByRole('button', { name: 'Save limits' }).click();
  await dlg.waitFor({ state: 'detached', timeout: NAV });
  let limits = (await adminApi('GET', `keys/${keyId}`)).json.limits;
  assert.deepEqual(limits, { max_concurrency: 5, window: { seconds: 3600, requests: 50, tokens: 100000 } });
  // Removing fields (a nested one too) takes them away.
  await page.getByRole('button', { name: 'Edit limits' }).click();
  dlg = page.getByRole('dialog', { name: `Limits of key ${KEY}` });
  await dlg.getByLabel('Limits (JSON)').fill('{"window": {"seconds": 3600, "requests": 50}, "daily_cost_nanousd": 5000000000}');
  await dlg.getByRole('button', { name: 'Save limits' }).click();
  await dlg.waitFor({ state: 'detached', timeout: NAV });
  limits = (await adminApi('GET', `keys/${keyId}`)).json.limits;
  assert.deepEqual(limits, { window: { seconds: 3600, requests: 50 }, daily_cost_nanousd: 5_000_000_000 });
  // Invalid JSON is refused in the dialog.
  await page.getByRole('button', { name: 'Edit limits' }).click();
  dlg = page.getByRole('dialog', { name: `Limits of key ${KEY}` });
  await dlg.getByLabel('Limits (JSON)').fill('{"max_concurrency": 0}');
  await dlg.getByRole('button', { name: 'Save limits' }).click();
  await dlg.getByRole('alert').filter({ hasText: 'max_concurrency' }).waitFor({ timeout: WAIT });
  await dlg.getByRole('button', { name: 'Cancel' }).click();
  await dlg.waitFor({ state: 'detached', timeout: WAIT });
  // The refused change and the cancel left the limits as they were.
  limits = (await adminApi('GET', `keys/${keyId}`)).json.limits;
  assert.deepEqual(limits, { window: { seconds: 3600, requests: 50 }, daily_cost_nanousd: 5_000_000_000 });
  await page.getByText('Window requests').first().waitFor({ timeout: WAIT });
  // In the keys list, each use line's tooltip tells what remains in the limit's unit.
  await nav('Keys').click();
  const row = page.locator('tbody tr', { hasText: KEY });
  const requestsUse = row.locator('.use-line', { hasText: 'Window requests' });
  await requestsUse.waitFor({ timeout: WAIT });
  assert.match(await requestsUse.getAttribute('title'), /^\d[\d,]* requests remaining/);
  assert.match(await row.locator('.use-line', { hasText: 'Daily cost' }).getAttribute('title'), /^\$[\d,]+\.\d\d+ remaining, resets /);
  await page.goto(`${CONSOLE_URL}#/keys/${keyId}`, { timeout: NAV });
  await page.getByRole('heading', { level: 1 }).filter({ hasText: KEY }).waitFor({ timeout: WAIT });
});

expectedRefusals.push(['the binding editor keeps both its accounts and its group, and a group no account is in', 'PATCH', path(`/admin/keys/${ID}`), 400]);
step('the binding editor keeps both its accounts and its group, and a group no account is in', async () => {
  const group = `e2e-group-${run}`;
  assert.equal((await adminApi('PATCH', `accounts/${accountId}`, { group })).status, 200);
  const both = { accounts: [accountId], group, fallback: true };
  assert.equal((await adminApi('PATCH', `keys/${keyId}`, { binding: both })).status, 200);
  await refreshed();
  await page.getByText(`group ${group}`).first().waitFor({ timeout: WAIT });
  await page.getByRole('button', { name: 'Edit binding' }).click();
  let dlg = page.getByRole('dialog', { name: `Binding of key ${KEY}` });
  await dlg.waitFor({ timeout: WAIT });
  assert.equal(await dlg.getByLabel(ACCOUNT).isChecked(), true);
  assert.equal(await dlg.getByLabel('And the accounts of the group').inputValue(), group);
  await dlg.getByRole('button', { name: 'Save binding' }).click();
  await dlg.waitFor({ state: 'detached', timeout: NAV });
  assert.deepEqual((await adminApi('GET', `keys/${keyId}`)).json.binding, both);
  // The group loses its last account (the key falls back, so the API allows it): the editor
  // still shows the group, marked, and does not switch to another.
  assert.equal((await adminApi('PATCH', `accounts/${accountId}`, { group: null })).status, 200);
  await refreshed();
  await page.getByRole('button', { name: 'Edit binding' }).click();
  dlg = page.getByRole('dialog', { name: `Binding of key ${KEY}` });
  await dlg.waitFor({ timeout: WAIT });
  const select = dlg.getByLabel('And the accounts of the group');
  assert.equal(await select.inputValue(), group);
  assert.match(await select.locator('option:checked').textContent(), /no account in it/);
  await shot(page, 'e2e-binding');
  // Saving it as is: the API's refusal is shown; choosing no group saves the accounts alone.
  await dlg.getByRole('button', { name: 'Save binding' }).click();
  await dlg.getByRole('alert').filter({ hasText: 'binding.group' }).waitFor({ timeout: WAIT });
  await select.selectOption('');
  await dlg.getByRole('button', { name: 'Save binding' }).click();
  await dlg.waitFor({ state: 'detached', timeout: NAV });
  await page.getByText('Binding saved.').waitFor({ timeout: WAIT });
  assert.deepEqual((await adminApi('GET', `keys/${keyId}`)).json.binding, { accounts: [accountId], group: null, fallback: true });
  assert.equal((await adminApi('PATCH', `keys/${keyId}`, { binding: null })).status, 200);
});

expectedRefusals.push(['an account with a key bound to it cannot be deleted (the API\'s 409 is shown)', 'DELETE', path(`/admin/accounts/${ID}`), 409]);
step('an account with a key bound to it cannot be deleted (the API\'s 409 is shown)', async () => {
  const bound = await adminApi('POST', 'keys', { name: `e2e-bound-${run}`, binding: { accounts: [accountId] } });
  assert.equal(bound.status, 201);
  cleanup.keys.push(bound.json.id);
  await page.goto(`${CONSOLE_URL}#/accounts/${accountId}`, { timeout: NAV });
  await page.getByRole('heading', { level: 1 }).filter({ hasText: ACCOUNT }).waitFor({ timeout: WAIT });
  await page.getByRole('button', { name: 'Delete' }).click();
  const confirm = page.getByRole('dialog', { name: 'Delete account' });
  await confirm.getByText(ACCOUNT).waitFor({ timeout: WAIT });
  await confirm.getByRole('button', { name: 'Delete account' }).click();
  await page.getByRole('alert').filter({ hasText: 'rebind them first' }).waitFor({ timeout: WAIT });
  assert.equal((await adminApi('GET', `accounts/${accountId}`)).status, 200);
  assert.equal((await adminApi('DELETE', `keys/${bound.json.id}`)).status, 200);
});

step('edit the account\'s priority (only the change is sent); reset its state', async () => {
  await page.getByRole('button', { name: 'Edit', exact: true }).click();
  const dlg = page.getByRole('dialog', { name: `Edit account ${ACCOUNT}` });
  await dlg.waitFor({ timeout: WAIT });
  assert.equal(await dlg.getByLabel('Daily budget (USD)').inputValue(), '12.5');
  await dlg.getByLabel('Priority').fill('7');
  const sent = page.waitForRequest((r) => r.method() === 'PATCH' && r.url().includes(`/admin/accounts/${accountId}`), { timeout: WAIT });
  await dlg.getByRole('button', { name: 'Save changes' }).click();
  assert.deepEqual(JSON.parse((await sent).postData()), { priority: 7 });
  await dlg.waitFor({ state: 'detached', timeout: NAV });
  assert.equal((await adminApi('GET', `accounts/${accountId}`)).json.priority, 7);
  await page.getByRole('button', { name: 'Reset state' }).click();
  await page.getByText('State reset').waitFor({ timeout: WAIT });

  // A test: sent to the account (under its model map's name), shown in the dialog, which stays.
  await page.getByRole('button', { name: 'Test', exact: true }).click();
  const test = page.getByRole('dialog', { name: `Test account ${ACCOUNT}` });
  await test.waitFor({ timeout: WAIT });
  await test.getByRole('button', { name: 'Send test' }).click();
  await test.getByRole('status').filter({ hasText: 'Works: claude-haiku-4-5 answered in' }).waitFor({ timeout: WAIT });
  await test.getByLabel('Model').fill('claude-opus-4-1');
  await test.getByRole('button', { name: 'Send test' }).click();
  await test.getByRole('status').filter({ hasText: 'claude-opus-4-1 (sent as e2e-opus)' }).waitFor({ timeout: WAIT });
  await test.getByRole('button', { name: 'Cancel' }).click();
  await test.waitFor({ state: 'detached', timeout: NAV });
  await shot(page, 'e2e-account-detail');

  // Emptied, the base URL goes back to the provider's own endpoint (then, through the API, to
  // the mock again for the steps after this one).
  await page.getByRole('button', { name: 'Edit', exact: true }).click();
  const again = page.getByRole('dialog', { name: `Edit account ${ACCOUNT}` });
  await again.waitFor({ timeout: WAIT });
  await again.getByLabel(/^Base URL/).fill('');
  const cleared = page.waitForRequest((r) => r.method() === 'PATCH' && r.url().includes(`/admin/accounts/${accountId}`), { timeout: WAIT });
  await again.getByRole('button', { name: 'Save changes' }).click();
  assert.deepEqual(JSON.parse((await cleared).postData()), { base_url: null });
  await again.waitFor({ state: 'detached', timeout: NAV });
  assert.equal((await adminApi('GET', `accounts/${accountId}`)).json.base_url, 'https://api.anthropic.com');
  assert.equal((await adminApi('PATCH', `accounts/${accountId}`, { base_url: UPSTREAM_URL })).status, 200);
});

const USAGE_STEP = 'usage page: a series, its table and a CSV download; hours in UTC; without the accounts';
expectedRefusals.push([USAGE_STEP, 'GET', path('/admin/accounts'), 500]);
step(USAGE_STEP, async () => {
  await page.goto(`${CONSOLE_URL}#/usage?key_id=${keyId}&granularity=day`, { timeout: NAV });
  await page.getByText(/^Usage of key/).waitFor({ timeout: WAIT });
  const [download] = await Promise.all([
    page.waitForEvent('download', { timeout: WAIT }),
    page.getByRole('button', { name: 'Download CSV' }).click(),
  ]);
  const rows = parseCsv(readFileSync(await download.path(), 'utf8'));
  const [header, ...data] = rows;
  assert.deepEqual(header.slice(0, 3), ['period', 'start', 'requests']);
  for (const r of data) assert.equal(r.length, header.length, `a CSV row has every column: ${JSON.stringify(r)}`);
  const col = header.indexOf('requests');
  const total = data.reduce((sum, r) => sum + Number(r[col]), 0);
  assert.ok(total >= 2, `the CSV counts the key's requests (${total})`);
  await shot(page, 'e2e-usage');

  // By hour: the table's hours and the chart's are both UTC, and say so.
  await page.goto(`${CONSOLE_URL}#/usage?key_id=${keyId}&granularity=hour`, { timeout: NAV });
  await page.getByRole('columnheader', { name: 'Hour (UTC)' }).waitFor({ timeout: WAIT });
  const firstHour = (await page.locator('table.data tbody tr td').first().textContent()).trim();
  assert.match(firstHour, /^\d{4}-\d\d-\d\d \d\d:00 UTC$/);

  // The accounts cannot be loaded: the usage is still shown (the account by its id), and why.
  const accountsList = (u) => u.pathname.endsWith('/admin/accounts');
  await page.route(accountsList, (route) => route.fulfill({
    status: 500,
    contentType: 'application/json',
    body: JSON.stringify({ error: { type: 'api_error', message: 'e2e: the accounts are unavailable' } }),
  }));
  try {
    await page.goto(`${CONSOLE_URL}#/usage?account_id=${accountId}&granularity=day`, { timeout: NAV });
    await page.getByText(`Usage of account ${accountId}`).waitFor({ timeout: WAIT });
    await page.getByRole('alert').filter({ hasText: 'the accounts are unavailable' }).waitFor({ timeout: WAIT });
  } finally {
    await page.unroute(accountsList);
  }
});

expectedRefusals.push(['pricing: the import shows the API\'s answer', 'POST', path('/admin/pricing/import'), 400]);
step('pricing: the import shows the API\'s answer', async () => {
  await page.getByRole('link', { name: 'Pricing' }).click();
  const file = page.getByLabel('LiteLLM price file');
  // Not JSON: refused in the page. A JSON array: refused by the API, whose message is shown.
  // (A real import would replace the relay's imported prices, so the test does not make one.)
  await file.setInputFiles({ name: 'prices.json', mimeType: 'application/json', buffer: Buffer.from('not json') });
  await page.getByRole('button', { name: 'Import prices' }).click();
  await page.getByRole('alert').filter({ hasText: 'prices.json is not JSON' }).waitFor({ timeout: WAIT });
  await file.setInputFiles({ name: 'prices.json', mimeType: 'application/json', buffer: Buffer.from('[]') });
  await page.getByRole('button', { name: 'Import prices' }).click();
  await page.getByRole('alert').filter({ hasText: 'must be a JSON object of model name to prices' }).waitFor({ timeout: WAIT });
  // A file that prices no model is refused too: it would otherwise replace the imported prices.
  await file.setInputFiles({ name: 'empty.json', mimeType: 'application/json', buffer: Buffer.from('{}') });
  await page.getByRole('button', { name: 'Import prices' }).click();
  await page.getByRole('alert').filter({ hasText: 'prices no model' }).waitFor({ timeout: WAIT });
});

step('the overview lists a key at its limit, and not one far from it', async () => {
  // One request of a window of one: used up. The test's own key has room left.
  const spent = await adminApi('POST', 'keys', { name: `e2e-spent-${run}`, limits: { window: { seconds: 3600, requests: 1 } } });
  assert.equal(spent.status, 201);
  cleanup.keys.push(spent.json.id);
  assert.equal(await relayMessage(spent.json.key), 200);
  await eventually('the overview names the spent key', async () => {
    await page.goto(`${CONSOLE_URL}#/overview`, { timeout: NAV });
    const panel = page.locator('section', { has: page.getByRole('heading', { name: 'Keys at or near a limit' }) });
    const item = panel.locator('li', { hasText: `e2e-spent-${run}` });
    await item.waitFor({ timeout: 2_000 });
    assert.match(await item.textContent(), /Window requests 1 \/ 1/);
    assert.equal(await panel.locator('li', { hasText: keyId }).count(), 0, 'the key with room left is not listed');
  }, NAV);
});

step('delete the key after confirming: gone from the table, 404 from the API', async () => {
  await page.getByRole('link', { name: 'Keys' }).click();
  const row = page.locator('tbody tr', { hasText: KEY });
  await row.waitFor({ timeout: WAIT });
  await row.getByRole('button', { name: `Delete key ${KEY}` }).click();
  const confirm = page.getByRole('dialog', { name: 'Delete key' });
  await confirm.getByText(KEY).waitFor({ timeout: WAIT });
  await confirm.getByRole('button', { name: 'Delete key' }).click();
  await page.getByText(`Key "${KEY}" deleted.`).waitFor({ timeout: WAIT });
  assert.equal(await page.locator('tbody tr', { hasText: KEY }).count(), 0);
  assert.equal((await adminApi('GET', `keys/${keyId}`)).status, 404);
});

step('delete the account after confirming', async () => {
  await page.goto(`${CONSOLE_URL}#/accounts/${accountId}`, { timeout: NAV });
  await page.getByRole('heading', { level: 1 }).filter({ hasText: ACCOUNT }).waitFor({ timeout: WAIT });
  await page.getByRole('button', { name: 'Delete' }).click();
  await page.getByRole('dialog', { name: 'Delete account' }).getByRole('button', { name: 'Delete account' }).click();
  await page.getByRole('heading', { name: 'Accounts', level: 1 }).waitFor({ timeout: WAIT });
  await page.locator('tbody tr').first().waitFor({ timeout: WAIT });
  assert.equal(await page.locator('tbody tr', { hasText: ACCOUNT }).count(), 0);
  assert.equal((await adminApi('GET', `accounts/${accountId}`)).status, 404);
});

// The keys list asks for the keys and the accounts at once: both are refused.
expectedRefusals.push(['a token the API refuses returns to sign-in with its message; sign out clears the token', 'GET', path('/admin/(keys|accounts)'), 401]);
step('a token the API refuses returns to sign-in with its message; sign out clears the token', async () => {
  await page.evaluate(() => {
    for (const k of Object.keys(sessionStorage)) sessionStorage.setItem(k, 'revoked-token-000000000');
  });
  await page.getByRole('link', { name: 'Keys' }).click();
  const err = page.locator('#signin-error');
  await err.waitFor({ state: 'visible', timeout: WAIT });
  assert.match(await err.textContent(), /invalid admin token/);
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  await page.getByLabel('Admin token').fill(ADMIN_TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Keys', level: 1 }).waitFor({ timeout: WAIT });
  await page.locator('tbody tr').first().waitFor({ timeout: WAIT });
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.locator('#signin').waitFor({ state: 'visible', timeout: WAIT });
  assert.equal(await page.evaluate(() => sessionStorage.length + localStorage.length), 0);
  assert.equal(await page.locator('#main').evaluate((m) => m.childElementCount), 0, 'nothing stays on the page');
});

async function main() {
  current = 'format.js in Node';
  try {
    await checkFormat();
    console.log('ok   format.js parses amounts and times (in Node)');
  } catch (e) {
    console.log(`FAIL format.js parses amounts and times (in Node)\n     ${String(e.stack || e).split('\n').slice(0, 6).join('\n     ')}`);
    clearTimeout(globalTimer);
    process.exit(1);
  }
  if (SCREENSHOT_DIR) mkdirSync(SCREENSHOT_DIR, { recursive: true });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    timeout: NAV * 2,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
  context.setDefaultTimeout(WAIT);
  context.setDefaultNavigationTimeout(NAV);
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const failedLoad = /^Failed to load resource: the server responded with a status of (\d+)/.exec(m.text());
    if (failedLoad) failedLoads.push({ step: current, url: m.location().url, status: Number(failedLoad[1]), text: m.text() });
    else problems.push(`console error during "${current}": ${m.text()}`);
  });
  page.on('response', (r) => {
    if (r.status() < 400) return;
    const u = new URL(r.url());
    refusals.push({ step: current, method: r.request().method(), path: u.pathname, url: r.url(), status: r.status() });
  });
  page.on('pageerror', (e) => problems.push(`page error during "${current}": ${e.message}`));
  page.on('dialog', (d) => {
    problems.push(`a browser dialog fired during "${current}": ${d.type()} ${d.message()}`);
    d.dismiss().catch(() => {});
  });

  let failed = 0;
  for (const [name, fn] of steps) {
    current = name;
    const t0 = Date.now();
    try {
      await fn();
      console.log(`ok   ${name} (${Date.now() - t0} ms)`);
    } catch (e) {
      failed += 1;
      console.log(`FAIL ${name}\n     ${String(e.stack || e).split('\n').slice(0, 6).join('\n     ')}`);
      await shot(page, `e2e-failed-${failed}`).catch(() => {});
      break; // later steps depend on this one
    }
  }
  current = 'cleanup';
  // What this run made, also what a failed step made before the test learned its id.
  for (const kind of ['keys', 'accounts']) {
    const listed = await adminApi('GET', kind).catch(() => ({ json: { data: [] } }));
    const ids = new Set([...cleanup[kind], ...((listed.json && listed.json.data) || []).filter((x) => x.name.includes(run)).map((x) => x.id)]);
    for (const id of ids) await adminApi('DELETE', `${kind}/${id}`).catch(() => {});
  }
  await browser.close();

  // Every answer of 400 or more the page got must be one a step provokes on purpose (its method,
  // path and status); every failed load the browser logged must be one of those answers.
  for (const r of refusals) {
    const expected = expectedRefusals.some(([stepName, method, re, status]) => stepName === r.step
      && method === r.method && re.test(r.path) && status === r.status);
    if (!expected) problems.push(`unexpected answer during "${r.step}": ${r.method} ${r.path} ${r.status}`);
  }
  if (process.env.E2E_DEBUG) console.log(JSON.stringify({ failedLoads, refusals }, null, 1));
  for (const f of failedLoads) {
    const known = refusals.some((r) => r.status === f.status && (f.url ? r.url === f.url : r.step === f.step));
    if (!known) problems.push(`console error during "${f.step}": ${f.text} (${f.url || 'no URL'})`);
  }
  if (problems.length) {
    failed += 1;
    console.log(`FAIL no console error, page error, CSP violation, dialog or unexpected refusal\n     ${problems.join('\n     ')}`);
  } else {
    console.log(`ok   no console error, page error, CSP violation, dialog or unexpected refusal (${refusals.length} expected refusals)`);
  }
  const ran = steps.length;
  console.log(failed ? `\n${failed} failure(s)` : `\nall ${ran} steps passed`);
  clearTimeout(globalTimer);
  process.exit(failed ? 1 : 0);
}

main().catch((e) => {
  console.error(`FAIL ${current}: ${e.stack || e}`);
  process.exit(1);
});
