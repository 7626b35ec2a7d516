// Requests: the recent request log, newest first.

import { get, qs, enc, directory, emptyDirectory } from './api.js';
import { h, clear, button, field, messageLine, table, badge, latestOnly } from './dom.js';
import { fmtUsd, fmtInt, fmtMs, fmtWhen, fmtTime } from './format.js';

function statusBadge(s) {
  const kind = s >= 200 && s < 300 ? 'good' : s === 499 || (s >= 400 && s < 500) ? 'warn' : 'bad';
  return badge(String(s), kind);
}

/** A key or account: its name as a link; null: deleted; undefined: names not loaded (the id). */
function who(id, name, kind) {
  if (!id) return h('span', { class: 'muted' }, '-');
  if (name === null) return h('span', { class: 'mono small muted', title: `${id} (deleted)` }, `${id.slice(0, 12)}...`);
  if (name === undefined) return h('a', { href: `#/${kind}/${enc(id)}`, title: id, class: 'mono small' }, `${id.slice(0, 12)}...`);
  return h('a', { href: `#/${kind}/${enc(id)}`, title: id }, name);
}

/** The request log as a table; `dir` resolves key and account names. */
export function requestsTable(rows, dir, { hideKey = false, hideAccount = false } = {}) {
  const cols = [
    { label: 'Time', cell: (r) => h('time', { dateTime: r.time, title: `${fmtTime(r.time)}\n${r.request_id}` }, fmtWhen(r.time)) },
    hideKey ? null : { label: 'Key', cell: (r) => who(r.key_id, dir.keyName(r.key_id), 'keys') },
    hideAccount ? null : { label: 'Account', cell: (r) => who(r.account_id, dir.accountName(r.account_id), 'accounts') },
    { label: 'Model', cell: (r) => r.model || h('span', { class: 'muted' }, '-') },
    { label: 'API', cell: (r) => r.surface },
    { label: 'Status', cell: (r) => statusBadge(r.status) },
    { label: 'Input', cls: 'num', cell: (r) => fmtInt(r.input_tokens) },
    { label: 'Output', cls: 'num', cell: (r) => fmtInt(r.output_tokens) },
    { label: 'Cache write', cls: 'num', cell: (r) => fmtInt(r.cache_creation_input_tokens) },
    { label: 'Cache read', cls: 'num', cell: (r) => fmtInt(r.cache_read_input_tokens) },
    { label: 'Cost', cls: 'num', cell: (r) => fmtUsd(r.cost_nanousd) },
    { label: 'Latency (first byte)', cls: 'num', cell: (r) => `${fmtMs(r.latency_ms)} (${fmtMs(r.ttfb_ms)})` },
    {
      label: 'Notes',
      cell: (r) => [
        r.cache_hit ? badge('cached', 'neutral', 'Answered from the result cache') : null,
        r.estimated ? badge('estimated', 'warn', 'Tokens estimated: the answer did not report its usage') : null,
        r.images ? badge(`${r.images} images`, 'neutral') : null,
        r.web_search_requests ? badge(`${r.web_search_requests} searches`, 'neutral', 'Web searches') : null,
      ],
    },
  ].filter(Boolean);
  return table(cols, rows, { empty: 'No requests yet.', caption: 'Recent requests' });
}

export async function render(main, _parts, query, ctx) {
  const msg = messageLine();
  const limit = h('select', { name: 'limit' }, [25, 50, 100, 250, 500, 1000].map((n) => h('option', { value: String(n) }, String(n))));
  limit.value = query.get('limit') || '100';
  const keySel = h('select', { name: 'key_id' }, h('option', { value: '' }, 'Every key'));
  const accountSel = h('select', { name: 'account_id' }, h('option', { value: '' }, 'Every account'));
  const refresh = button('Refresh', () => load(), 'primary');
  const box = h('div', null, h('p', { class: 'muted' }, 'Loading...'));
  main.append(
    h('div', { class: 'page-head' }, h('h1', null, 'Requests'),
      h('div', { class: 'tools filters' }, field('Key', keySel, null, 'inline-field'), field('Account', accountSel, null, 'inline-field'), field('Show', limit, null, 'inline-field'), refresh)),
    msg.el, box);

  let dir = emptyDirectory();
  const begin = latestOnly(ctx);
  const sync = () => {
    const hash = `#/requests${qs({ key_id: keySel.value, account_id: accountSel.value, limit: limit.value === '100' ? '' : limit.value })}`;
    if (location.hash !== hash) history.replaceState(null, '', hash);
    load();
  };
  keySel.addEventListener('change', sync);
  accountSel.addEventListener('change', sync);
  limit.addEventListener('change', sync);

  async function load() {
    const live = begin();
    refresh.disabled = true;
    try {
      const [d, r] = await Promise.all([directory(), get(`requests${qs({ limit: limit.value, key_id: keySel.value, account_id: accountSel.value })}`)]);
      if (!live()) return;
      dir = d;
      // What the select shows now (before the first load: the URL's key, set below); "Every key"
      // stays "Every key".
      const chosen = keySel.value;
      clear(keySel).append(h('option', { value: '' }, 'Every key'), ...dir.keys.map((k) => h('option', { value: k.id }, k.name)));
      if (chosen && !dir.keys.some((k) => k.id === chosen)) keySel.append(h('option', { value: chosen }, chosen));
      keySel.value = chosen;
      const account = accountSel.value;
      clear(accountSel).append(h('option', { value: '' }, 'Every account'), ...dir.accounts.map((a) => h('option', { value: a.id }, a.name)));
      if (account && !dir.accounts.some((a) => a.id === account)) accountSel.append(h('option', { value: account }, account));
      accountSel.value = account;
      const rows = r.data || [];
      clear(box).append(h('p', { class: 'muted small' }, `${fmtInt(rows.length)} most recent, newest first. Updated ${fmtWhen(new Date().toISOString())}.`),
        requestsTable(rows, dir));
      if (d.error) msg.error(d.error);
      else msg.clear();
    } catch (e) {
      if (live()) msg.error(`Could not load the requests: ${e.message}`);
    } finally {
      if (live()) refresh.disabled = false;
    }
  }
  if (query.get('key_id')) {
    keySel.append(h('option', { value: query.get('key_id') }, query.get('key_id')));
    keySel.value = query.get('key_id');
  }
  if (query.get('account_id')) {
    accountSel.append(h('option', { value: query.get('account_id') }, query.get('account_id')));
    accountSel.value = query.get('account_id');
  }
  await load();
}
