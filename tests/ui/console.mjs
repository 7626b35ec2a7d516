// End-to-end test of the admin console in a real browser (playwright-core + system Chromium).
//
//   CONSOLE_URL=http://127.0.0.1:PORT/admin/ui/ RELAY_URL=http://127.0.0.1:PORT ADMIN_TOKEN=... \
//   UPSTREAM_URL=http://127.0.0.1:MOCK [CHROMIUM=/usr/bin/chromium] [SCREENSHOT_DIR=/tmp/shots] \
//   node tests/ui/console.mjs
//
// Exits 0 when every step passed; otherwise prints what failed and exits 1 (2 on the global
// timeout).

import assert from 'node:assert/strict';
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
const WAIT = 10_000;

const globalTimer = setTimeout(() => {
  console.error(`FAIL: the whole run took more than 120 s (last step: ${current})`);
  process.exit(2);
}, 120_000);

const run = Date.now().toString(36);
const ACCOUNT = `e2e-acct-${run}`;
const KEY = `e2e-key-${run}`;
const HOSTILE = `<img src=x onerror=alert(1)> ${run}`;

let current = 'start';
const problems = []; // console errors, page errors, CSP violations, dialogs
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

async function relayMessage(secret) {
  const res = await fetch(`${RELAY_URL}/v1/messages`, {
    method: 'POST',
    headers: { 'x-api-key': secret, 'anthropic-version': '2023-06-01', 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] }),
  });
  await res.arrayBuffer();
  return res.status;
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

async function shot(page, name) {
  if (SCREENSHOT_DIR) await page.screenshot({ path: join(SCREENSHOT_DIR, `${name}.png`), fullPage: true });
}

/** [step, status]: the API refusals a step provokes on purpose (the browser logs them). */
const expectedRefusals = [];
const steps = [];
const step = (name, fn) => steps.push([name, fn]);

let browser;
let page;
let accountId;
let keyId;
let secret;

expectedRefusals.push(['a wrong token shows the API error and stays on sign-in', 401]);
step('a wrong token shows the API error and stays on sign-in', async () => {
  await page.goto(CONSOLE_URL);
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
  await page.getByRole('heading', { name: 'Overview', level: 1 }).waitFor({ timeout: WAIT });
  await page.getByText('Accounts by status').waitFor({ timeout: WAIT });
  const stored = await page.evaluate(() => ({ s: Object.values(sessionStorage), l: localStorage.length }));
  assert.deepEqual(stored, { s: [ADMIN_TOKEN], l: 0 });
  assert.ok(!page.url().includes(ADMIN_TOKEN), 'the token is not in the URL');
  await shot(page, 'e2e-overview');
});

step('add an Anthropic account through the form (bad budget refused, then 12.5 dollars)', async () => {
  await page.getByRole('link', { name: 'Accounts' }).click();
  await page.getByRole('button', { name: 'Add account' }).click();
  const dlg = page.getByRole('dialog', { name: 'Add an account' });
  await dlg.waitFor({ timeout: WAIT });
  // Provider-specific fields follow the provider.
  await dlg.getByLabel('Provider').selectOption('bedrock');
  assert.ok(await dlg.getByLabel('Region').isVisible(), 'bedrock shows a region');
  await dlg.getByLabel('Provider').selectOption('anthropic');
  assert.equal(await dlg.getByLabel('Region').isVisible(), false, 'anthropic shows no region');
  await dlg.getByLabel('Name').fill(ACCOUNT);
  await dlg.getByLabel('API key').fill('sk-ant-test');
  await dlg.getByLabel(/^Base URL/).fill(UPSTREAM_URL);
  await dlg.getByLabel('Daily budget (USD)').fill('1.2.3');
  await dlg.getByRole('button', { name: 'Add account' }).click();
  await dlg.getByRole('alert').filter({ hasText: 'Daily budget' }).waitFor({ timeout: WAIT });
  await dlg.getByLabel('Daily budget (USD)').fill('12.5');
  await shot(page, 'e2e-add-account');
  await dlg.getByRole('button', { name: 'Add account' }).click();
  await dlg.waitFor({ state: 'detached', timeout: WAIT });
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
  assert.ok((await row.textContent()).includes(accountId), 'the row shows the id');
});

step('a hostile account name is shown as text', async () => {
  const created = await adminApi('POST', 'accounts', {
    name: HOSTILE, provider: 'anthropic', api_key: 'sk-ant-test', base_url: UPSTREAM_URL, schedulable: false, priority: 99,
  });
  assert.equal(created.status, 201);
  cleanup.accounts.push(created.json.id);
  await page.getByRole('button', { name: 'Refresh' }).click();
  await page.locator('tbody tr a', { hasText: HOSTILE }).waitFor({ timeout: WAIT });
  await page.goto(`${CONSOLE_URL}#/accounts/${created.json.id}`);
  await page.getByRole('heading', { level: 1 }).filter({ hasText: HOSTILE }).waitFor({ timeout: WAIT });
  assert.equal(await page.locator('img').count(), 0, 'no img element was created');
});

step('create a key with max concurrency 3: the secret is shown once, then kept nowhere', async () => {
  await page.getByRole('link', { name: 'Keys' }).click();
  await page.getByRole('button', { name: 'Create key' }).click();
  const dlg = page.getByRole('dialog', { name: 'Create a key' });
  await dlg.waitFor({ timeout: WAIT });
  await dlg.getByLabel('Name').fill(KEY);
  await dlg.getByLabel('Max concurrency').fill('3');
  await dlg.getByRole('button', { name: 'Create key' }).click();
  const secretDlg = page.getByRole('dialog', { name: `Key "${KEY}" created` });
  await secretDlg.waitFor({ timeout: WAIT });
  await secretDlg.getByText('you will not see it again').waitFor();
  secret = (await secretDlg.locator('code.secret').textContent()).trim();
  assert.match(secret, /^sy-/);
  await shot(page, 'e2e-secret');
  await secretDlg.getByRole('button', { name: 'I have saved it, close' }).click();
  await page.locator('dialog code.secret').waitFor({ state: 'detached', timeout: WAIT });
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
});

step('a request through the relay with the key is listed with its usage', async () => {
  assert.equal(await relayMessage(secret), 200);
  await page.getByRole('link', { name: 'Requests' }).click();
  await eventually('the request log lists the key\'s request', async () => {
    await page.getByRole('button', { name: 'Refresh' }).click();
    await page.locator('tbody tr', { hasText: KEY }).filter({ hasText: 'claude-sonnet-4-5' }).first().waitFor({ timeout: 1000 });
  });
  await shot(page, 'e2e-requests');
  await page.goto(`${CONSOLE_URL}#/keys/${keyId}`);
  await eventually('the key\'s usage shows 1 request', async () => {
    await page.getByRole('button', { name: 'Refresh' }).click();
    const cell = page.locator('tr', { hasText: 'All time' }).locator('td').nth(1);
    await cell.waitFor({ timeout: 1000 });
    assert.equal((await cell.textContent()).trim(), '1');
  });
  await page.getByRole('heading', { name: 'Recent requests' }).waitFor();
  await shot(page, 'e2e-key-detail');
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

expectedRefusals.push(['edit the limits JSON: change, add, then remove a limit', 400]);
step('edit the limits JSON: change, add, then remove a limit', async () => {
  await page.getByRole('button', { name: 'Edit limits' }).click();
  let dlg = page.getByRole('dialog', { name: `Limits of key ${KEY}` });
  await dlg.waitFor({ timeout: WAIT });
  const ta = dlg.getByLabel('Limits (JSON)');
  assert.deepEqual(JSON.parse(await ta.inputValue()), { max_concurrency: 3 });
  await ta.fill('{"max_concurrency": 5, "window": {"seconds": 3600, "requests": 50, "tokens": 100000}}');
  await dlg.getByRole('button', { name: 'Save limits' }).click();
  await dlg.waitFor({ state: 'detached', timeout: WAIT });
  let limits = (await adminApi('GET', `keys/${keyId}`)).json.limits;
  assert.deepEqual(limits, { max_concurrency: 5, window: { seconds: 3600, requests: 50, tokens: 100000 } });
  // Removing fields (a nested one too) takes them away.
  await page.getByRole('button', { name: 'Edit limits' }).click();
  dlg = page.getByRole('dialog', { name: `Limits of key ${KEY}` });
  await dlg.getByLabel('Limits (JSON)').fill('{"window": {"seconds": 3600, "requests": 50}}');
  await dlg.getByRole('button', { name: 'Save limits' }).click();
  await dlg.waitFor({ state: 'detached', timeout: WAIT });
  limits = (await adminApi('GET', `keys/${keyId}`)).json.limits;
  assert.deepEqual(limits, { window: { seconds: 3600, requests: 50 } });
  // Invalid JSON is refused in the dialog.
  await page.getByRole('button', { name: 'Edit limits' }).click();
  dlg = page.getByRole('dialog', { name: `Limits of key ${KEY}` });
  await dlg.getByLabel('Limits (JSON)').fill('{"max_concurrency": 0}');
  await dlg.getByRole('button', { name: 'Save limits' }).click();
  await dlg.getByRole('alert').filter({ hasText: 'max_concurrency' }).waitFor({ timeout: WAIT });
  await dlg.getByRole('button', { name: 'Cancel' }).click();
  await page.getByText('Window requests').first().waitFor({ timeout: WAIT });
});

expectedRefusals.push(['an account with a key bound to it cannot be deleted (the API\'s 409 is shown)', 409]);
step('an account with a key bound to it cannot be deleted (the API\'s 409 is shown)', async () => {
  const bound = await adminApi('POST', 'keys', { name: `e2e-bound-${run}`, binding: { accounts: [accountId] } });
  assert.equal(bound.status, 201);
  cleanup.keys.push(bound.json.id);
  await page.goto(`${CONSOLE_URL}#/accounts/${accountId}`);
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
  await dlg.waitFor({ state: 'detached', timeout: WAIT });
  assert.equal((await adminApi('GET', `accounts/${accountId}`)).json.priority, 7);
  await page.getByRole('button', { name: 'Reset state' }).click();
  await page.getByText('State reset').waitFor({ timeout: WAIT });
  await shot(page, 'e2e-account-detail');
});

step('usage page: a series, its table and a CSV download', async () => {
  await page.goto(`${CONSOLE_URL}#/usage?key_id=${keyId}&granularity=day`);
  await page.getByText(/^Usage of key/).waitFor({ timeout: WAIT });
  const [download] = await Promise.all([
    page.waitForEvent('download', { timeout: WAIT }),
    page.getByRole('button', { name: 'Download CSV' }).click(),
  ]);
  const csv = readFileSync(await download.path(), 'utf8');
  const lines = csv.trim().split(/\r?\n/);
  assert.match(lines[0], /^period,start,requests,/);
  const total = lines.slice(1).reduce((s, l) => s + Number(l.split(',')[2]), 0);
  assert.ok(total >= 2, `the CSV counts the key's requests (${total})`);
  await shot(page, 'e2e-usage');
});

expectedRefusals.push(['pricing: the import shows the API\'s answer', 400]);
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
  await page.goto(`${CONSOLE_URL}#/accounts/${accountId}`);
  await page.getByRole('heading', { level: 1 }).filter({ hasText: ACCOUNT }).waitFor({ timeout: WAIT });
  await page.getByRole('button', { name: 'Delete' }).click();
  await page.getByRole('dialog', { name: 'Delete account' }).getByRole('button', { name: 'Delete account' }).click();
  await page.getByRole('heading', { name: 'Accounts', level: 1 }).waitFor({ timeout: WAIT });
  await page.locator('tbody tr').first().waitFor({ timeout: WAIT });
  assert.equal(await page.locator('tbody tr', { hasText: ACCOUNT }).count(), 0);
  assert.equal((await adminApi('GET', `accounts/${accountId}`)).status, 404);
});

expectedRefusals.push(['a token the API refuses returns to sign-in with its message; sign out clears the token', 401]);
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
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.locator('#signin').waitFor({ state: 'visible', timeout: WAIT });
  assert.equal(await page.evaluate(() => sessionStorage.length + localStorage.length), 0);
  assert.equal(await page.locator('#main').evaluate((m) => m.childElementCount), 0, 'nothing stays on the page');
});

async function main() {
  if (SCREENSHOT_DIR) mkdirSync(SCREENSHOT_DIR, { recursive: true });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
  context.setDefaultTimeout(WAIT);
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console error during "${current}": ${m.text()}`);
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

  // The refusals the test provokes on purpose are logged by the browser as failed loads.
  const real = problems.filter((p) => !expectedRefusals.some(([stepName, status]) => p.startsWith(`console error during "${stepName}": Failed to load resource: the server responded with a status of ${status}`)));
  if (real.length) {
    failed += 1;
    console.log(`FAIL no console error, page error, CSP violation or dialog\n     ${real.join('\n     ')}`);
  } else {
    console.log('ok   no console error, page error, CSP violation or dialog');
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
