// Overview: usage today, this month and in total, cost per day, accounts by status, and what
// needs the admin: accounts out of rotation, keys at or near a limit.

import { get, qs } from './api.js';
import { h, clear, button, checkbox, messageLine, latestOnly } from './dom.js';
import {
  fmtUsd, fmtInt, fmtCompact, fmtRel, fmtWhen, isoDateUtc, utcMidnight, utcMonthStart,
} from './format.js';
import { barChart } from './charts.js';
import { statusOf, statusBadge, STATUS_LABELS, lastError } from './accounts.js';
import { limitLabel, amount } from './keys.js';

/** A key's limit counts as near once this share of it is used or reserved. */
const NEAR = 0.9;

export async function render(main, _parts, _query, ctx) {
  const msg = messageLine();
  const stats = h('div', { class: 'stat-grid' });
  const chartBox = h('div', { class: 'chart-box' });
  const statusBox = h('div', { class: 'status-counts' });
  const attention = h('div');
  const keysNear = h('div');
  const metric = h('select', { 'aria-label': 'Chart shows' },
    h('option', { value: 'cost' }, 'Cost'), h('option', { value: 'requests' }, 'Requests'),
    h('option', { value: 'tokens' }, 'Tokens'));
  const refresh = button('Refresh', () => load(), null);
  const auto = checkbox('Refresh every 10 s', false);
  let series = [];

  main.append(
    h('div', { class: 'page-head' }, h('h1', null, 'Overview'),
      h('div', { class: 'tools' }, auto.wrap, refresh)),
    msg.el,
    stats,
    h('section', { class: 'panel' },
      h('div', { class: 'panel-head' }, h('h2', null, 'Last 30 days (UTC days)'),
        h('div', { class: 'tools' }, h('label', { class: 'inline' }, 'Show ', metric))),
      chartBox),
    h('div', { class: 'two-col' },
      h('section', { class: 'panel' }, h('div', { class: 'panel-head' }, h('h2', null, 'Accounts by status')), statusBox),
      h('section', { class: 'panel' }, h('div', { class: 'panel-head' }, h('h2', null, 'Accounts that need attention')), attention)),
    h('section', { class: 'panel' },
      h('div', { class: 'panel-head' }, h('h2', null, 'Keys at or near a limit'),
        h('div', { class: 'tools' }, h('span', { class: 'muted small' }, `${Math.round(NEAR * 100)}% or more used, or expired`))),
      keysNear),
  );

  metric.addEventListener('change', drawChart);

  function drawChart() {
    clear(chartBox);
    const m = metric.value;
    const value = (p) => (m === 'cost' ? p.cost_nanousd : m === 'requests' ? p.requests
      : p.input_tokens + p.output_tokens + p.cache_creation_input_tokens + p.cache_read_input_tokens);
    const fmt = m === 'cost' ? fmtUsd : fmtCompact;
    chartBox.append(barChart(series.map((p) => ({
      label: p.start.slice(5, 10),
      tip: p.start.slice(0, 10),
      value: value(p),
    })), { format: fmt, title: `${metric.selectedOptions[0].textContent} per day` }));
  }

  // The auto refresh and the button may overlap: only the latest load paints.
  const begin = latestOnly(ctx);
  async function load() {
    const live = begin();
    // UTC days and months, as the server counts usage (and as the chart shows it).
    const now = new Date();
    const midnight = utcMidnight(now);
    const monthStart = utcMonthStart(now);
    const from30 = new Date(midnight.getTime() - 29 * 86_400_000);
    refresh.disabled = true;
    try {
      // The keys' use is one store read per key: its failure shows in its own panel only.
      const keys = get('keys?with=usage').catch((e) => ({ error: e }));
      const [today, month, total, daily, accounts] = await Promise.all([
        get(`usage${qs({ from: midnight.toISOString() })}`),
        get(`usage${qs({ from: monthStart.toISOString() })}`),
        get('usage'),
        get(`usage${qs({ granularity: 'day', from: isoDateUtc(from30) })}`),
        get('accounts'),
      ]);
      if (!live()) return;
      msg.clear();
      clear(stats);
      stats.append(statCard('Today (UTC)', today), statCard('This month (UTC)', month), statCard('All time', total));
      series = daily.series || [];
      drawChart();
      drawAccounts(accounts.data || []);
      const k = await keys;
      if (!live()) return;
      if (k.error) clear(keysNear).append(h('p', { class: 'message error' }, `Could not load the keys: ${k.error.message}`));
      else drawKeys(k.data || []);
    } catch (e) {
      if (live()) msg.error(`Could not load the overview: ${e.message}`);
    } finally {
      if (live()) refresh.disabled = false;
    }
  }

  function drawAccounts(list) {
    clear(statusBox);
    clear(attention);
    const counts = new Map();
    for (const a of list) {
      const s = statusOf(a);
      counts.set(s, (counts.get(s) || 0) + 1);
    }
    if (!list.length) {
      statusBox.append(h('p', { class: 'muted' }, 'No accounts yet. ', h('a', { href: '#/accounts' }, 'Add one'), '.'));
    } else {
      statusBox.append(h('ul', { class: 'count-list' },
        Object.keys(STATUS_LABELS).filter((s) => counts.has(s)).map((s) => h('li', null,
          statusBadge(s), h('span', { class: 'count' }, fmtInt(counts.get(s)))))));
    }
    const needs = list.filter((a) => {
      const s = statusOf(a);
      return (s !== 'ok' && s !== 'disabled' && s !== 'paused') || a.state.consecutive_failures > 0
        || (a.oauth && a.oauth.failure);
    });
    if (!needs.length) {
      attention.append(h('p', { class: 'muted' }, list.length ? 'Every account is serving.' : 'Nothing to show.'));
      return;
    }
    attention.append(h('ul', { class: 'attention' }, needs.map((a) => h('li', null,
      h('div', { class: 'attention-head' },
        h('a', { href: `#/accounts/${encodeURIComponent(a.id)}`, class: 'strong' }, a.name),
        h('span', { class: 'muted small' }, a.provider),
        statusBadge(statusOf(a)),
        a.state.until ? h('span', { class: 'muted small', title: fmtWhen(a.state.until) }, `until ${fmtRel(a.state.until)}`) : null),
      h('div', { class: 'small' }, lastError(a))))));
  }

  function drawKeys(list) {
    clear(keysNear);
    const near = [];
    for (const k of list) {
      if (!k.enabled) continue;
      const limits = Object.entries(k.usage || {})
        .filter(([, u]) => u.limit > 0 && (u.used + u.reserved) / u.limit >= NEAR)
        .map(([name, u]) => `${limitLabel(name)} ${amount(u.unit, u.used + u.reserved)} / ${amount(u.unit, u.limit)}${u.resets_at ? `, resets ${fmtRel(u.resets_at)}` : ''}`);
      if (k.expired) limits.unshift('expired');
      if (limits.length) near.push([k, limits]);
    }
    if (!near.length) {
      keysNear.append(h('p', { class: 'muted' }, list.length ? 'No key is near its limits.' : 'No keys yet.'));
      return;
    }
    keysNear.append(h('ul', { class: 'attention' }, near.map(([k, limits]) => h('li', null,
      h('div', { class: 'attention-head' },
        h('a', { href: `#/keys/${encodeURIComponent(k.id)}`, class: 'strong' }, k.name),
        h('span', { class: 'mono muted small' }, k.id)),
      h('div', { class: 'small' }, limits.join('; '))))));
  }

  ctx.onCleanup(startAuto(auto.input, load));
  await load();
}

function statCard(title, u) {
  const cacheW = u.cache_creation_input_tokens || 0;
  const cacheR = u.cache_read_input_tokens || 0;
  return h('section', { class: 'stat' },
    h('h2', null, title),
    h('p', { class: 'stat-main' }, fmtUsd(u.cost_nanousd)),
    h('dl', { class: 'stat-list' },
      h('div', null, h('dt', null, 'Requests'), h('dd', null, fmtInt(u.requests))),
      h('div', null, h('dt', null, 'Input tokens'), h('dd', { title: fmtInt(u.input_tokens) }, fmtCompact(u.input_tokens))),
      h('div', null, h('dt', null, 'Output tokens'), h('dd', { title: fmtInt(u.output_tokens) }, fmtCompact(u.output_tokens))),
      h('div', null, h('dt', null, 'Cache writes'), h('dd', { title: fmtInt(cacheW) }, fmtCompact(cacheW))),
      h('div', null, h('dt', null, 'Cache reads'), h('dd', { title: fmtInt(cacheR) }, fmtCompact(cacheR))),
      u.images ? h('div', null, h('dt', null, 'Images'), h('dd', null, fmtInt(u.images))) : null));
}

/** Calls `load` every 10 s while `input` is checked and the tab is visible; returns a stop. */
function startAuto(input, load) {
  let timer = null;
  const tick = () => {
    if (!document.hidden) load();
  };
  const sync = () => {
    if (input.checked && !timer) timer = setInterval(tick, 10_000);
    if (!input.checked && timer) {
      clearInterval(timer);
      timer = null;
    }
  };
  input.addEventListener('change', sync);
  const onVisible = () => {
    if (!document.hidden && input.checked) load();
  };
  document.addEventListener('visibilitychange', onVisible);
  return () => {
    if (timer) clearInterval(timer);
    document.removeEventListener('visibilitychange', onVisible);
  };
}

