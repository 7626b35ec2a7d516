// Keys: the team's API keys, their limits and use, binding, usage and requests.

import { get, post, patch, del, enc, qs, directory } from './api.js';
import {
  h, clear, button, busy, checkbox, field, formDialog, confirmDialog, openDialog, messageLine,
  table, facts, badge, meter, section, nextId, latestOnly, reportAfter,
} from './dom.js';
import {
  fmtUsd, fmtInt, fmtCompact, fmtRel, fmtTime, fmtWhen, fmtSeconds, parseUsd, splitList,
} from './format.js';
import { usageSummary } from './usage.js';
import { recordPage, recentRequests } from './record.js';

/** A message for the next list view (after a delete from the detail view). */
let flash = null;

export async function render(main, parts, query, ctx) {
  if (parts[0]) return renderDetail(main, parts[0], ctx);
  return renderList(main, ctx);
}

const LIMIT_LABELS = {
  daily_cost: 'Daily cost',
  weekly_cost: 'Weekly cost',
  total_cost: 'Total cost',
  window_requests: 'Window requests',
  window_tokens: 'Window tokens',
  window_cost: 'Window cost',
};
export function limitLabel(name) {
  if (LIMIT_LABELS[name]) return LIMIT_LABELS[name];
  const s = name.replace(/_/g, ' ');
  return s.charAt(0).toUpperCase() + s.slice(1);
}

export function amount(unit, n) {
  return unit === 'nanousd' ? fmtUsd(n) : fmtCompact(n);
}

/** An amount with its unit, in full: "$0.42", "1,200 tokens", "3 requests". */
function amountWithUnit(unit, n) {
  if (unit === 'nanousd') return fmtUsd(n);
  return `${fmtInt(n)}${unit ? ` ${unit}` : ''}`;
}

/** Short phrases for a key's limits. */
export function limitsSummary(l) {
  const out = [];
  if (!l) return out;
  if (l.max_concurrency) out.push(`${l.max_concurrency} at once`);
  if (l.window) {
    const per = ` / ${fmtSeconds(l.window.seconds)}`;
    if (l.window.requests) out.push(`${fmtCompact(l.window.requests)} req${per}`);
    if (l.window.tokens) out.push(`${fmtCompact(l.window.tokens)} tok${per}`);
    if (l.window.cost_nanousd) out.push(`${fmtUsd(l.window.cost_nanousd)}${per}`);
  }
  if (l.daily_cost_nanousd) out.push(`${fmtUsd(l.daily_cost_nanousd)} / day`);
  if (l.weekly_cost_nanousd) out.push(`${fmtUsd(l.weekly_cost_nanousd)} / week`);
  if (l.total_cost_nanousd) out.push(`${fmtUsd(l.total_cost_nanousd)} total`);
  for (const [f, n] of Object.entries(l.weekly_family_cost_nanousd || {})) out.push(`${f} ${fmtUsd(n)} / week`);
  if (l.starts_at) out.push(`from ${fmtWhen(l.starts_at)}`);
  if (l.expires_at) out.push(`until ${fmtWhen(l.expires_at)}`);
  if (l.active_days) out.push(`${l.active_days} d from first use`);
  if ((l.allowed_models || []).length) out.push(`models: ${l.allowed_models.join(', ')}`);
  if ((l.blocked_models || []).length) out.push(`blocked: ${l.blocked_models.join(', ')}`);
  if ((l.allowed_clients || []).length) out.push(`clients: ${l.allowed_clients.join(', ')}`);
  if ((l.allowed_surfaces || []).length) out.push(`APIs: ${l.allowed_surfaces.join(', ')}`);
  return out;
}

function bindingText(b, dir) {
  if (!b) return null;
  const parts = [];
  if ((b.accounts || []).length) parts.push(b.accounts.map((id) => dir.accountName(id) || id).join(', '));
  if (b.group) parts.push(`group ${b.group}`);
  return `${parts.join('; ')}${b.fallback ? ' (falls back to shared)' : ''}`;
}

/** The use of each limit: "Daily cost $0.01 / $1.00" with a meter. */
function useLines(detail) {
  const lines = [];
  if (detail.limits && detail.limits.max_concurrency) {
    lines.push(h('div', { class: 'use-line' }, h('span', { class: 'small' }, `In flight ${detail.in_flight} / ${detail.limits.max_concurrency}`),
      meter(detail.in_flight, detail.limits.max_concurrency, 'Concurrency used')));
  }
  for (const [name, u] of Object.entries(detail.usage || {})) {
    lines.push(h('div', { class: 'use-line', title: `${amountWithUnit(u.unit, u.remaining)} remaining${u.resets_at ? `, resets ${fmtTime(u.resets_at)}` : ''}` },
      h('span', { class: 'small' }, `${limitLabel(name)} ${amount(u.unit, u.used + u.reserved)} / ${amount(u.unit, u.limit)}`),
      meter(u.used + u.reserved, u.limit, `${limitLabel(name)} used`)));
  }
  if (detail.expired) lines.push(badge('expired', 'bad'));
  return lines;
}

async function renderList(main, ctx) {
  const msg = messageLine();
  const box = h('div', null, h('p', { class: 'muted' }, 'Loading...'));
  const refresh = button('Refresh', () => load());
  const begin = latestOnly(ctx);
  let dir = null;
  const create = button('Create key', () => createKeyDialog(dir ? dir.accounts : [], (k) => reportAfter(msg, `Key "${k.name}" created.`, load)), 'primary');
  main.append(
    h('div', { class: 'page-head' }, h('h1', null, 'Keys'), h('div', { class: 'tools' }, refresh, create)),
    msg.el, box);
  if (flash) {
    msg.ok(flash);
    flash = null;
  }

  /** Loads and shows the keys; resolves to null, or what failed. */
  async function load() {
    const live = begin();
    refresh.disabled = true;
    try {
      const d = await directory({ keyUsage: true });
      if (!live()) return null;
      if (!d.keysOk) {
        msg.error(d.error);
        return d.error;
      }
      dir = d;
      // The keys without the accounts: shown, their bindings by account id.
      if (d.error) msg.error(d.error);
      const keys = d.keys;
      clear(box).append(table([
        {
          label: 'Name',
          cell: (k) => h('div', null, h('a', { href: `#/keys/${enc(k.id)}`, class: 'strong' }, k.name),
            h('div', { class: 'mono muted small', title: `Secret starts with ${k.prefix}` }, k.id)),
        },
        { label: 'Status', cell: (k) => (k.enabled ? badge('Enabled', 'good') : badge('Disabled', 'neutral')) },
        {
          label: 'Limits',
          cls: 'wrap',
          cell: (k) => {
            const s = limitsSummary(k.limits);
            return s.length ? h('ul', { class: 'chips' }, s.map((x) => h('li', null, x))) : h('span', { class: 'muted' }, 'none');
          },
        },
        {
          label: 'Use',
          cls: 'use',
          cell: (k) => h('div', null, limitsSummary(k.limits).length ? useLines(k) : h('span', { class: 'muted' }, '-')),
        },
        { label: 'Binding', cls: 'wrap', cell: (k) => bindingText(k.binding, dir) || h('span', { class: 'muted' }, 'shared pool') },
        { label: 'Last used', cell: (k) => (k.last_used_at ? h('span', { title: fmtTime(k.last_used_at) }, fmtRel(k.last_used_at)) : h('span', { class: 'muted' }, 'never')) },
        { label: 'Created', cell: (k) => h('span', { title: fmtTime(k.created_at) }, fmtRel(k.created_at)) },
        {
          label: 'Actions',
          cls: 'actions',
          cell: (k) => [
            button(k.enabled ? 'Disable' : 'Enable', (e) => busy(e.currentTarget, msg, async () => {
              await patch(`keys/${enc(k.id)}`, { enabled: !k.enabled });
              await reportAfter(msg, `Key "${k.name}" ${k.enabled ? 'disabled: its requests are refused' : 'enabled'}.`, load);
            }), 'small', { 'aria-label': `${k.enabled ? 'Disable' : 'Enable'} key ${k.name}` }),
            button('Delete', (e) => deleteKey(k, e.currentTarget, msg, () => reportAfter(msg, `Key "${k.name}" deleted.`, load)),
              'small danger', { 'aria-label': `Delete key ${k.name}` }),
          ],
        },
      ], keys, { empty: 'No keys yet. Create one for each person or tool.', caption: 'Keys', rowClass: (k) => (k.enabled ? null : 'dim') }));
      if (!d.error) msg.clearError();
      return d.error;
    } catch (e) {
      const problem = `Could not load the keys: ${e.message}`;
      if (live()) msg.error(problem);
      return problem;
    } finally {
      if (live()) refresh.disabled = false;
    }
  }
  await load();
}

async function deleteKey(k, btn, msg, after) {
  const yes = await confirmDialog({
    title: 'Delete key',
    message: `Delete the key "${k.name}" (${k.id})? Clients using it are refused at once. Its usage history stays; its limits' counters are deleted.`,
    confirmLabel: 'Delete key',
  });
  if (!yes) return;
  await busy(btn, msg, async () => {
    await del(`keys/${enc(k.id)}`);
    await after();
  });
}

function renderDetail(main, id, ctx) {
  return recordPage(main, ctx, {
    section: 'Keys', href: '#/keys', id, what: 'key', fetch: () => get(`keys/${enc(id)}`), paint,
  });

  async function paint(k, dir, { head, body, msg, live, reload: load }) {
    ctx.setTitle(`Key ${k.name}`);
    const saved = (text) => reportAfter(msg, text, load);
    head.append(h('h1', null, k.name, ' ', k.enabled ? badge('Enabled', 'good') : badge('Disabled', 'neutral'), k.expired ? badge('Expired', 'bad') : null),
      h('div', { class: 'tools' },
        button('Refresh', (e) => busy(e.currentTarget, msg, load)),
        button('Rename', () => renameDialog(k, () => saved('Key renamed.'))),
        button(k.enabled ? 'Disable' : 'Enable', (e) => busy(e.currentTarget, msg, async () => {
          await patch(`keys/${enc(id)}`, { enabled: !k.enabled });
          await saved(k.enabled ? 'Key disabled: its requests are refused.' : 'Key enabled.');
        })),
        button('Rotate secret', (e) => rotateKey(k, e.currentTarget, msg, () => saved('New secret made: the old one is refused from now on.'))),
        button('Edit limits', () => limitsDialog(k, () => saved('Limits saved.'))),
        button('Edit binding', () => {
          // Without the accounts, the editor would offer none and could not keep the binding.
          if (!dir.accountsOk) msg.error(`${dir.error} Refresh, then edit the binding.`);
          else bindingDialog(k, dir.accounts, () => saved('Binding saved.'));
        }),
        button('Delete', (e) => deleteKey(k, e.currentTarget, msg, async () => {
          flash = `Key "${k.name}" deleted.`;
          location.hash = '#/keys';
        }), 'danger')));

    const uses = Object.entries(k.usage || {}).map(([name, u]) => ({ name, ...u }));
    body.append(h('div', { class: 'two-col' },
      h('section', { class: 'panel' }, h('div', { class: 'panel-head' }, h('h2', null, 'Key')),
        facts([
          ['ID', h('span', { class: 'mono' }, k.id)],
          ['Secret starts with', h('span', { class: 'mono' }, `${k.prefix}...`)],
          ['Created', `${fmtTime(k.created_at)} (${fmtRel(k.created_at)})`],
          ['First used', k.first_used_at ? fmtTime(k.first_used_at) : null],
          ['Last used', k.last_used_at ? `${fmtTime(k.last_used_at)} (${fmtRel(k.last_used_at)})` : 'never'],
          ['Expires', k.expires_at ? `${fmtTime(k.expires_at)} (${fmtRel(k.expires_at)})` : null],
          ['In flight', String(k.in_flight ?? 0)],
          ['Binding', bindingText(k.binding, dir) || 'none: the shared pool of accounts'],
          ['Limits time zone', k.timezone],
        ])),
      h('section', { class: 'panel' }, h('div', { class: 'panel-head' }, h('h2', null, 'Limits')),
        limitsSummary(k.limits).length ? h('ul', { class: 'chips' }, limitsSummary(k.limits).map((x) => h('li', null, x))) : h('p', { class: 'muted' }, 'No limits.'),
        h('details', null, h('summary', null, 'Limits as JSON'), h('pre', { class: 'code' }, JSON.stringify(k.limits || {}, null, 2))))));
    body.append(section('Limits in use', null, uses.length || (k.limits && k.limits.max_concurrency) ? table([
      { label: 'Limit', cell: (u) => limitLabel(u.name) },
      { label: 'Used', cls: 'num', cell: (u) => amount(u.unit, u.used) },
      { label: 'Reserved', cls: 'num', cell: (u) => amount(u.unit, u.reserved) },
      { label: 'Remaining', cls: 'num', cell: (u) => amount(u.unit, u.remaining) },
      { label: 'Limit', cls: 'num', cell: (u) => amount(u.unit, u.limit) },
      { label: 'Use', cell: (u) => meter(u.used + u.reserved, u.limit, `${limitLabel(u.name)} used`) },
      { label: 'Resets', cell: (u) => (u.resets_at ? h('span', { title: fmtTime(u.resets_at) }, `${fmtWhen(u.resets_at)} (${fmtRel(u.resets_at)})`) : u.name === 'concurrency' ? '-' : 'never') },
    ], [
      ...(k.limits && k.limits.max_concurrency ? [{ name: 'concurrency', unit: 'requests', used: k.in_flight || 0, reserved: 0, remaining: Math.max(0, k.limits.max_concurrency - (k.in_flight || 0)), limit: k.limits.max_concurrency }] : []),
      ...uses,
    ], { caption: 'Limits in use' }) : h('p', { class: 'muted' }, 'No counted limits.')));

    body.append(await usageSummary({ key_id: k.id }, ctx));
    if (!live()) return;
    await recentRequests(body, dir, live,
      async () => (await get(`requests${qs({ key_id: k.id, limit: 25 })}`)).data || [],
      h('a', { href: `#/requests${qs({ key_id: k.id })}` }, 'All of this key\'s requests'),
      { hideKey: true });
  }
}

function renameDialog(k, done) {
  const name = h('input', { name: 'name', value: k.name, maxLength: 200, required: true, autocomplete: 'off' });
  formDialog({
    title: `Rename key ${k.name}`,
    submitLabel: 'Rename key',
    fields: [field('Name', name)],
    onSubmit: async () => {
      const v = name.value.trim();
      if (!v) throw new Error('Name: required.');
      if (v !== k.name) await patch(`keys/${enc(k.id)}`, { name: v });
      await done();
      return true;
    },
  });
}

/** The RFC 7396 merge patch that turns `from` into `to` (arrays replaced whole). */
export function diffPatch(from, to) {
  const isObj = (x) => x !== null && typeof x === 'object' && !Array.isArray(x);
  const out = {};
  for (const k of Object.keys(from)) {
    if (!(k in to) || to[k] === null) out[k] = null;
  }
  for (const [k, v] of Object.entries(to)) {
    if (v === null) continue;
    if (isObj(v) && isObj(from[k])) {
      const sub = diffPatch(from[k], v);
      if (Object.keys(sub).length) out[k] = sub;
    } else if (JSON.stringify(v) !== JSON.stringify(from[k])) {
      out[k] = v;
    }
  }
  return out;
}

function parseLimitsJson(text) {
  let v;
  try {
    v = JSON.parse(text.trim() || '{}');
  } catch (e) {
    throw new Error(`Limits JSON: ${e.message}`);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('Limits JSON: must be an object, such as {"max_concurrency": 4}.');
  return v;
}

const LIMITS_HELP = [
  'Fields (docs/limits.md): max_concurrency; window {seconds, requests, tokens, cost_nanousd}; ',
  'daily_cost_nanousd, weekly_cost_nanousd, total_cost_nanousd; weekly_family_cost_nanousd {"opus": n}; ',
  'starts_at, expires_at (RFC 3339); active_days; allowed_models, blocked_models (globs); ',
  'allowed_clients (claude-code, gemini-cli, codex); allowed_surfaces (anthropic, openai, gemini, images). ',
  'Amounts are integer nano-dollars: $1 = 1000000000.',
].join('');

/** A "$ to nano-dollars" helper line for the JSON editors. */
function converter() {
  const input = h('input', { inputMode: 'decimal', placeholder: '5.00', autocomplete: 'off', 'aria-label': 'Dollars to convert' });
  const out = h('output', { class: 'mono' });
  input.addEventListener('input', () => {
    if (!input.value.trim()) {
      out.textContent = '';
      return;
    }
    const r = parseUsd(input.value);
    out.textContent = r.error ? r.error : `= ${r.value} nano-dollars`;
  });
  return h('div', { class: 'converter small' }, h('span', null, 'Convert $ '), input, ' ', out);
}

function limitsDialog(k, done) {
  const ta = h('textarea', { name: 'limits', rows: 14, spellcheck: false, class: 'code' });
  ta.value = JSON.stringify(k.limits || {}, null, 2);
  formDialog({
    title: `Limits of key ${k.name}`,
    submitLabel: 'Save limits',
    wide: true,
    fields: [
      field('Limits (JSON)', ta, 'The key\'s full limits: change a value, add a field, or delete a field (or set it to null) to take it away; {} removes every limit. Only the difference is sent (as a JSON merge patch).'),
      h('p', { class: 'help' }, LIMITS_HELP),
      converter(),
    ],
    onSubmit: async () => {
      const next = parseLimitsJson(ta.value);
      const p = diffPatch(k.limits || {}, next);
      if (Object.keys(p).length) await patch(`keys/${enc(k.id)}`, { limits: p });
      await done();
      return true;
    },
  });
}

/**
 * Binding fields: not bound, or bound to the accounts checked, to the accounts of a group, or to
 * both (a key may name both; the scheduler picks among all of them). `value()` gives the binding
 * or null. What the current binding names that is gone (a deleted account, a group no account is
 * in any more) stays shown and chosen, marked: saving does not silently switch to something else.
 */
function bindingFields(current, accounts) {
  const name = nextId('bind');
  const curAccounts = (current && current.accounts) || [];
  const curGroup = (current && current.group) || '';
  const radio = (value, label, checked) => {
    const input = h('input', { type: 'radio', name, value, checked, id: nextId('rb') });
    return { input, wrap: h('div', { class: 'check' }, input, h('label', { for: input.id }, label)) };
  };
  const rNone = radio('none', 'Not bound: any account of the shared pool', !current);
  const rBound = radio('bound', 'Bound: to the accounts checked, to the accounts of a group, or both', !!current);
  const listed = accounts.map((a) => ({ id: a.id, label: `${a.name} (${a.provider}${a.group ? `, group ${a.group}` : ''})` }));
  for (const id of curAccounts) {
    if (!accounts.some((a) => a.id === id)) listed.push({ id, label: `${id} (no such account any more)` });
  }
  const checks = listed.map(({ id, label }) => {
    const c = checkbox(label, curAccounts.includes(id));
    c.input.value = id;
    return c;
  });
  const counts = new Map();
  for (const a of accounts) if (a.group) counts.set(a.group, (counts.get(a.group) || 0) + 1);
  const groups = [...counts.keys()].sort();
  const group = h('select', { name: 'group' },
    h('option', { value: '' }, groups.length ? 'No group' : 'No group (no account has one)'),
    groups.map((g) => h('option', { value: g }, `${g} (${counts.get(g)} account${counts.get(g) === 1 ? '' : 's'})`)),
    curGroup && !counts.has(curGroup) ? h('option', { value: curGroup }, `${curGroup} (no account in it)`) : null);
  group.value = curGroup;
  const fallback = checkbox('Fall back to the shared pool when none of the bound accounts can serve (else: 503)', !!(current && current.fallback));
  const accBox = h('div', { class: 'check-list' }, checks.length ? checks.map((c) => c.wrap) : h('p', { class: 'muted' }, 'No accounts yet.'));
  const accTitle = nextId('accs');
  const boundBox = h('div', { class: 'indent' },
    h('div', { role: 'group', 'aria-labelledby': accTitle }, h('p', { class: 'help', id: accTitle }, 'These accounts:'), accBox),
    field('And the accounts of the group', group, 'Both parts count: a key bound to accounts and a group is served by any of them.'),
    fallback.wrap);
  const sync = () => {
    boundBox.hidden = !rBound.input.checked;
  };
  for (const r of [rNone, rBound]) r.input.addEventListener('change', sync);
  sync();
  const nodes = h('fieldset', { class: 'binding' }, h('legend', null, 'Binding'),
    rNone.wrap, rBound.wrap, boundBox);
  return {
    nodes,
    value() {
      if (!rBound.input.checked) return null;
      const ids = checks.filter((c) => c.input.checked).map((c) => c.input.value);
      const g = group.value;
      if (!ids.length && !g) throw new Error('Binding: check at least one account or choose a group (or choose "Not bound").');
      const b = { accounts: ids, fallback: fallback.input.checked };
      if (g) b.group = g;
      return b;
    },
  };
}

function bindingDialog(k, accounts, done) {
  const b = bindingFields(k.binding, accounts);
  formDialog({
    title: `Binding of key ${k.name}`,
    submitLabel: 'Save binding',
    fields: [b.nodes],
    onSubmit: async () => {
      await patch(`keys/${enc(k.id)}`, { binding: b.value() });
      await done();
      return true;
    },
  });
}

function createKeyDialog(accounts, done) {
  const name = h('input', { name: 'name', required: true, maxLength: 200, autocomplete: 'off', placeholder: 'alice, ci-bot...' });
  const enabled = checkbox('Enabled', true);
  // Text, not type=number: a number input reports unparseable text as "" (read as no limit).
  const conc = h('input', { name: 'max_concurrency', inputMode: 'numeric', placeholder: 'no limit', autocomplete: 'off' });
  const daily = h('input', { name: 'daily', inputMode: 'decimal', placeholder: 'no budget', autocomplete: 'off' });
  const models = h('input', { name: 'allowed_models', placeholder: 'claude-*, gpt-4o (empty: every model)', spellcheck: false, autocomplete: 'off' });
  const ta = h('textarea', { name: 'limits', rows: 5, spellcheck: false, class: 'code' });
  ta.value = '{}';
  const b = bindingFields(null, accounts);
  formDialog({
    title: 'Create a key',
    submitLabel: 'Create key',
    wide: true,
    fields: [
      h('div', { class: 'grid2' }, field('Name', name, 'Who or what uses it.'), h('div', { class: 'checks top' }, enabled.wrap)),
      h('fieldset', null, h('legend', null, 'Common limits (optional)'),
        h('div', { class: 'grid3' },
          field('Max concurrency', conc, 'Requests at once.'),
          field('Daily cost budget (USD)', daily, 'Such as 5 or 12.50.'),
          field('Allowed models', models, 'Globs, comma separated.'))),
      field('More limits (JSON)', ta, 'Merged with the fields above, which win. Every limit of docs/limits.md.'),
      h('details', null, h('summary', null, 'Limit fields'), h('p', { class: 'help' }, LIMITS_HELP), converter()),
      b.nodes,
    ],
    onSubmit: async () => {
      const n = name.value.trim();
      if (!n) throw new Error('Name: required.');
      const limits = parseLimitsJson(ta.value);
      if (conc.value.trim()) {
        const c = conc.value.trim();
        if (!/^\d+$/.test(c) || Number(c) < 1 || Number(c) > 4294967295) throw new Error('Max concurrency: a whole number of at least 1.');
        limits.max_concurrency = Number(c);
      }
      if (daily.value.trim()) {
        const r = parseUsd(daily.value);
        if (r.error) throw new Error(`Daily cost budget: ${r.error}.`);
        if (r.value === 0) throw new Error('Daily cost budget: must be more than $0 (to block a key, disable it).');
        limits.daily_cost_nanousd = r.value;
      }
      const m = splitList(models.value);
      if (m.length) limits.allowed_models = m;
      const body = { name: n, enabled: enabled.input.checked, limits };
      const binding = b.value();
      if (binding) body.binding = binding;
      const created = await post('keys', body);
      const secret = created.key;
      delete created.key;
      // After this form has closed: the secret's dialog alone, then the list behind it.
      setTimeout(() => {
        showSecret(created, secret);
        done(created);
      }, 0);
      return true;
    },
  });
}

/** Asks, then gives the key a new secret, shown once; the old one is refused from then on. */
async function rotateKey(k, btn, msg, after) {
  const yes = await confirmDialog({
    title: 'Rotate secret',
    message: `Give the key "${k.name}" (${k.id}) a new secret? The current one (${k.prefix}...) is refused at once; clients must be given the new one. Its limits, their use and its usage stay.`,
    confirmLabel: 'Rotate secret',
  });
  if (!yes) return;
  await busy(btn, msg, async () => {
    const rotated = await post(`keys/${enc(k.id)}/rotate`);
    const secret = rotated.key;
    delete rotated.key;
    showSecret(rotated, secret, `New secret for "${rotated.name}"`);
    await after();
  });
}

/** Shows a new key's secret once. It is kept nowhere: the dialog is removed when it closes. */
function showSecret(k, secret, title = `Key "${k.name}" created`) {
  const code = h('code', { class: 'secret', id: 'new-key-secret' }, secret);
  const status = h('p', { class: 'message ok', role: 'status', hidden: true });
  const copy = button('Copy key', async () => {
    try {
      await navigator.clipboard.writeText(code.textContent);
      status.textContent = 'Copied to the clipboard.';
    } catch {
      const range = document.createRange();
      range.selectNodeContents(code);
      const sel = getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      status.textContent = 'Selected: press Ctrl+C (Cmd+C) to copy.';
    }
    status.hidden = false;
  }, 'primary');
  const closeBtn = button('I have saved it, close', () => d.close());
  const d = openDialog({
    title,
    content: [
      h('p', { class: 'warning' }, 'Copy this key now: you will not see it again. Only its hash is stored.'),
      h('div', { class: 'secret-row' }, code, copy),
      status,
      h('p', { class: 'help' }, 'Clients send it as x-api-key, Authorization: Bearer, or the Gemini key.'),
    ],
    actions: [closeBtn],
    onClose: () => {
      code.textContent = '';
      const sel = getSelection();
      if (sel) sel.removeAllRanges();
    },
  });
  copy.focus();
}
