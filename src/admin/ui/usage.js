// Usage: totals and series by key, account, model or overall; chart, table and CSV.

import { get, qs, directory } from './api.js';
import { h, clear, button, field, messageLine, table, section, latestOnly } from './dom.js';
import { fmtUsd, fmtInt, fmtCompact, fmtUtc, isoDateUtc, nanoToDecimal } from './format.js';
import { barChart } from './charts.js';

const METRICS = [
  ['cost_nanousd', 'Cost', fmtUsd],
  ['requests', 'Requests', fmtInt],
  ['input_tokens', 'Input tokens', fmtCompact],
  ['output_tokens', 'Output tokens', fmtCompact],
  ['cache_creation_input_tokens', 'Cache write tokens', fmtCompact],
  ['cache_read_input_tokens', 'Cache read tokens', fmtCompact],
];

const COLUMNS = [
  ['requests', 'Requests', fmtInt],
  ['input_tokens', 'Input', fmtInt],
  ['output_tokens', 'Output', fmtInt],
  ['cache_creation_5m_input_tokens', 'Cache write 5m', fmtInt],
  ['cache_creation_1h_input_tokens', 'Cache write 1h', fmtInt],
  ['cache_read_input_tokens', 'Cache read', fmtInt],
  ['images', 'Images', fmtInt],
  ['cost_nanousd', 'Cost', fmtUsd],
];

/** A bucket's start as the table shows it: in UTC, as the server counts (hours too). */
function periodLabel(start, granularity) {
  if (granularity === 'month') return start.slice(0, 7);
  if (granularity === 'day') return start.slice(0, 10);
  return fmtUtc(start);
}

function usageTable(rows, granularity, totals) {
  const cols = [
    { label: granularity === 'hour' ? 'Hour (UTC)' : granularity === 'day' ? 'Day (UTC)' : granularity === 'month' ? 'Month (UTC)' : 'Range (UTC)', cell: (r) => r.label },
    ...COLUMNS.map(([k, label, f]) => ({ label, cls: 'num', cell: (r) => f(r[k]) })),
  ];
  const t = table(cols, rows, { empty: 'No usage in this range.', caption: 'Usage', rowClass: (r) => (r.requests ? null : 'dim') });
  if (totals && rows.length > 1) {
    t.querySelector('table').append(h('tfoot', null, h('tr', null,
      h('th', { scope: 'row' }, 'Total'), COLUMNS.map(([k, , f]) => h('td', { class: 'num' }, f(totals[k]))))));
  }
  return t;
}

/** A key's or an account's usage: the last 30 days by day, and all-time totals. */
export async function usageSummary(filter, ctx) {
  const box = h('div');
  const metric = h('select', { 'aria-label': 'Chart shows' }, METRICS.slice(0, 2).map(([k, l]) => h('option', { value: k }, l)));
  const link = h('a', { href: `#/usage${qs({ ...filter, granularity: 'day' })}` }, 'Open in Usage');
  const sec = section('Usage, last 30 days (UTC days)', [h('label', { class: 'inline' }, 'Show ', metric), link], box);
  const from = isoDateUtc(new Date(Date.now() - 29 * 86_400_000));
  try {
    const [series, total] = await Promise.all([
      get(`usage${qs({ ...filter, granularity: 'day', from })}`),
      get(`usage${qs(filter)}`),
    ]);
    if (!ctx.alive()) return sec;
    const draw = () => {
      clear(box);
      const [k, l, f] = METRICS.find((m) => m[0] === metric.value);
      box.append(barChart((series.series || []).map((p) => ({ label: p.start.slice(5, 10), tip: p.start.slice(0, 10), value: p[k] })), { format: f, title: `${l} per day` }));
      box.append(usageTable([
        { label: 'Last 30 days', ...series.totals },
        { label: 'All time', ...total.totals },
      ], null));
    };
    metric.addEventListener('change', draw);
    draw();
  } catch (e) {
    box.append(h('p', { class: 'message error', role: 'alert' }, `Could not load the usage: ${e.message}`));
  }
  return sec;
}

function csvCell(v) {
  const s = String(v ?? '');
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export async function render(main, _parts, query, ctx) {
  const msg = messageLine();
  const today = new Date();
  const q = (k, d) => query.get(k) || d;
  const scope = h('select', { name: 'scope' },
    h('option', { value: 'all' }, 'Everything'), h('option', { value: 'key' }, 'A key'),
    h('option', { value: 'account' }, 'An account'), h('option', { value: 'model' }, 'A model'));
  const keySel = h('select', { name: 'key_id' });
  const accSel = h('select', { name: 'account_id' });
  const model = h('input', { name: 'model', placeholder: 'claude-sonnet-4-5', spellcheck: false, autocomplete: 'off' });
  const from = h('input', { name: 'from', type: 'date', value: q('from', isoDateUtc(new Date(today.getTime() - 29 * 86_400_000))) });
  const through = h('input', { name: 'through', type: 'date', value: q('through', isoDateUtc(today)) });
  const gran = h('select', { name: 'granularity' },
    [['hour', 'By hour'], ['day', 'By day'], ['month', 'By month'], ['', 'Totals only']]
      .map(([v, l]) => h('option', { value: v }, l)));
  gran.value = query.has('granularity') ? query.get('granularity') : 'day';
  const metric = h('select', { name: 'metric' }, METRICS.map(([k, l]) => h('option', { value: k }, l)));
  metric.value = q('metric', 'cost_nanousd');
  const keyF = field('Key', keySel);
  const accF = field('Account', accSel);
  const modelF = field('Model', model);
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Show usage');
  const csv = button('Download CSV', () => download(), null, { disabled: true });
  const form = h('form', { class: 'query-form', novalidate: true },
    field('Usage of', scope), keyF, accF, modelF,
    field('From (UTC date)', from), field('Through (UTC date)', through),
    field('Granularity', gran), field('Chart', metric),
    h('div', { class: 'form-buttons' }, submit, csv));
  const out = h('div');
  main.append(h('div', { class: 'page-head' }, h('h1', null, 'Usage')),
    h('section', { class: 'panel' }, form,
      h('p', { class: 'help' }, 'Usage is counted in UTC hours, days and months. Hours are kept 35 days, days 400.')),
    msg.el, out);

  let shown = null;
  const syncScope = () => {
    keyF.hidden = scope.value !== 'key';
    accF.hidden = scope.value !== 'account';
    modelF.hidden = scope.value !== 'model';
  };
  scope.addEventListener('change', syncScope);
  metric.addEventListener('change', () => shown && draw());

  // Never rejects: without the keys or accounts (dir.error), names fall back to ids.
  const dir = await directory();
  if (!ctx.alive()) return;
  if (dir.error) msg.error(dir.error);
  keySel.append(...dir.keys.map((k) => h('option', { value: k.id }, `${k.name} (${k.id})`)));
  accSel.append(...dir.accounts.map((a) => h('option', { value: a.id }, `${a.name} (${a.id})`)));
  if (query.get('key_id')) {
    scope.value = 'key';
    if (!dir.keys.some((k) => k.id === query.get('key_id'))) keySel.append(h('option', { value: query.get('key_id') }, query.get('key_id')));
    keySel.value = query.get('key_id');
  } else if (query.get('account_id')) {
    scope.value = 'account';
    if (!dir.accounts.some((a) => a.id === query.get('account_id'))) accSel.append(h('option', { value: query.get('account_id') }, query.get('account_id')));
    accSel.value = query.get('account_id');
  } else if (query.get('model')) {
    scope.value = 'model';
    model.value = query.get('model');
  }
  syncScope();

  function params() {
    const p = {};
    if (scope.value === 'key') p.key_id = keySel.value;
    if (scope.value === 'account') p.account_id = accSel.value;
    if (scope.value === 'model') p.model = model.value.trim();
    p.from = from.value;
    p.through = through.value;
    p.granularity = gran.value;
    p.metric = metric.value;
    return p;
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const p = params();
    if (scope.value === 'key' && !p.key_id) return msg.error('Choose a key.');
    if (scope.value === 'account' && !p.account_id) return msg.error('Choose an account.');
    if (scope.value === 'model' && !p.model) return msg.error('Enter a model name.');
    const hash = `#/usage${qs({ ...p, granularity: p.granularity || 'none' })}`;
    if (location.hash === hash) load();
    else location.hash = hash;
    return undefined;
  });

  const begin = latestOnly(ctx);
  async function load() {
    const live = begin();
    const p = params();
    const api = { key_id: p.key_id, account_id: p.account_id, model: p.model, granularity: p.granularity === 'none' ? '' : p.granularity };
    if (p.from) api.from = p.from;
    if (p.through) {
      const d = new Date(`${p.through}T00:00:00Z`);
      if (Number.isNaN(d.getTime())) return msg.error('Through: not a date.');
      api.to = isoDateUtc(new Date(d.getTime() + 86_400_000));
    }
    submit.disabled = true;
    msg.clear();
    if (dir.error) msg.error(dir.error);
    try {
      const res = await get(`usage${qs(api)}`);
      if (!live()) return undefined;
      shown = { res, p, api };
      draw();
    } catch (e) {
      if (live()) msg.error(e.message);
    } finally {
      if (live()) submit.disabled = false;
    }
    return undefined;
  }

  function rowsOf() {
    const { res } = shown;
    if (res.series) {
      return res.series.map((s) => ({ label: periodLabel(s.start, res.granularity), ...s }));
    }
    return [{ label: `${res.from ? fmtUtc(res.from) : 'All time'}${res.to ? ` to ${fmtUtc(res.to)}` : ''}`, ...res.totals }];
  }

  function draw() {
    clear(out);
    const { res } = shown;
    const rows = rowsOf();
    const [k, l, f] = METRICS.find((m) => m[0] === metric.value);
    const scopeText = res.filter.key_id ? `key ${dir.keyName(res.filter.key_id) || res.filter.key_id}`
      : res.filter.account_id ? `account ${dir.accountName(res.filter.account_id) || res.filter.account_id}`
        : res.filter.model ? `model ${res.filter.model}` : 'everything';
    const head = h('p', { class: 'summary' }, `Usage of ${scopeText}: `,
      h('strong', null, fmtUsd(res.totals.cost_nanousd)), `, ${fmtInt(res.totals.requests)} requests, `,
      `${fmtCompact(res.totals.input_tokens)} input and ${fmtCompact(res.totals.output_tokens)} output tokens.`);
    out.append(h('section', { class: 'panel' }, head,
      res.series ? barChart(rows.map((r) => ({ label: res.granularity === 'hour' ? r.start.slice(11, 13) : res.granularity === 'day' ? r.start.slice(5, 10) : r.start.slice(0, 7), tip: r.label, value: r[k] })), { format: f, title: `${l} by ${res.granularity} (UTC)` }) : null,
      usageTable(rows, res.granularity || null, res.totals)));
    csv.disabled = false;
  }

  function download() {
    if (!shown) return;
    const rows = rowsOf();
    const header = ['period', 'start', ...COLUMNS.map(([k]) => k), 'cache_creation_input_tokens', 'cost_usd'];
    const lines = [header.join(',')];
    for (const r of rows) {
      lines.push([r.label, r.start || '', ...COLUMNS.map(([k]) => r[k]), r.cache_creation_input_tokens, nanoToDecimal(r.cost_nanousd)].map(csvCell).join(','));
    }
    const blob = new Blob([`${lines.join('\r\n')}\r\n`], { type: 'text/csv;charset=utf-8' });
    const url = URL.createObjectURL(blob);
    const f = shown.api;
    const who = f.key_id || f.account_id || (f.model ? f.model.replace(/[^\w.-]+/g, '_') : 'all');
    const a = h('a', { href: url, download: `switchyard-usage-${who}-${shown.p.from || 'start'}-${shown.p.through || 'now'}-${f.granularity || 'totals'}.csv`, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }

  if (query.get('granularity') === 'none') gran.value = '';
  await load();
}

