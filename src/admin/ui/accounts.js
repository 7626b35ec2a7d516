// Accounts: the upstream vendor accounts, their state, budgets and usage.

import { get, post, patch, del, enc, qs } from './api.js';
import {
  h, clear, button, busy, checkbox, field, formDialog, confirmDialog, messageLine, table, facts,
  badge, meter, nextId, latestOnly, reportAfter,
} from './dom.js';
import {
  fmtUsd, fmtRel, fmtWhen, fmtTime, parseUsd, nanoToDecimal, splitList, parsePairs,
  pairsText,
} from './format.js';
import { usageSummary } from './usage.js';
import { recordPage, recentRequests } from './record.js';

export const PROVIDERS = [
  ['anthropic', 'Anthropic', 'https://api.anthropic.com'],
  ['openai', 'OpenAI or OpenAI-compatible', 'https://api.openai.com/v1'],
  ['azure-openai', 'Azure OpenAI', 'https://<resource>.openai.azure.com (required)'],
  ['gemini', 'Google Gemini API', 'https://generativelanguage.googleapis.com'],
  ['bedrock', 'Amazon Bedrock', 'https://bedrock-runtime.<region>.amazonaws.com'],
  ['chatgpt', 'ChatGPT subscription (Codex)', 'https://chatgpt.com/backend-api/codex'],
  ['code-assist', 'Google login (Gemini Code Assist)', 'https://cloudcode-pa.googleapis.com'],
];
const AZURE_API_VERSION = '2024-10-21';
/** The providers whose accounts take a model map (Azure and Bedrock name theirs in deployments). */
const MAPS_MODELS = ['anthropic', 'openai', 'gemini', 'chatgpt'];

const API_KEY_HELP = {
  anthropic: 'An API key (sk-ant-api03-...), or a Claude subscription token made by `claude setup-token` (sk-ant-oat01-...).',
  openai: 'The vendor\'s API key.',
  'azure-openai': 'The Azure OpenAI resource\'s key.',
  gemini: 'A Gemini API key (AIza...).',
  bedrock: 'With an access key id below: the AWS secret access key. Without one: a Bedrock API key.',
  chatgpt: 'A ChatGPT access token (tokens.access_token in Codex CLI\'s auth.json). Without a grant it is not renewed: add the login with the CLI to have it renewed.',
  'code-assist': 'A Google OAuth access token. Without a grant it is not renewed: add the login with the CLI to have it renewed.',
};

export const STATUS_LABELS = {
  ok: 'Active',
  rate_limited: 'Rate-limited',
  cooling_down: 'Cooling down',
  budget_spent: 'Budget spent',
  unauthorized: 'Unauthorized',
  paused: 'Not schedulable',
  disabled: 'Disabled',
};
const STATUS_KIND = {
  ok: 'good', rate_limited: 'warn', cooling_down: 'warn', budget_spent: 'warn', unauthorized: 'bad', paused: 'neutral', disabled: 'neutral',
};

/** The account's status as the console shows it: the vendor's verdict, or why it does not serve. */
export function statusOf(a) {
  if (!a.enabled) return 'disabled';
  const s = (a.state && a.state.status) || 'ok';
  if (s === 'ok' && !a.schedulable) return 'paused';
  return s;
}

export function statusBadge(s) {
  return badge(STATUS_LABELS[s] || s, STATUS_KIND[s] || 'neutral');
}

export function lastError(a) {
  const parts = [];
  if (a.state.last_error) {
    parts.push(h('span', { class: 'error-text' }, a.state.last_error));
    if (a.state.last_error_at) {
      parts.push(h('span', { class: 'muted small', title: fmtWhen(a.state.last_error_at) }, ` (${fmtRel(a.state.last_error_at)})`));
    }
  }
  if (a.state.consecutive_failures > 0) {
    parts.push(h('div', { class: 'muted small' }, `${a.state.consecutive_failures} failures in a row`));
  }
  if (a.oauth && a.oauth.failure) {
    parts.push(h('div', { class: 'error-text small' }, `Token renewal: ${a.oauth.failure}`));
  }
  return parts.length ? parts : h('span', { class: 'muted' }, 'none');
}

function providerLabel(p) {
  const e = PROVIDERS.find((x) => x[0] === p);
  return e ? e[1] : p;
}

export async function render(main, parts, query, ctx) {
  if (parts[0]) return renderDetail(main, parts[0], ctx);
  return renderList(main, ctx);
}

function stateCell(a) {
  const s = statusOf(a);
  const until = a.state.until;
  const fam = Object.entries(a.state.rate_limited_families || {});
  return h('div', null, statusBadge(s),
    until ? h('div', { class: 'muted small', title: fmtTime(until) }, `until ${fmtRel(until)}`) : null,
    fam.length ? h('div', { class: 'muted small' }, `limited: ${fam.map(([f, t]) => `${f} ${fmtRel(t)}`).join(', ')}`) : null,
    !a.schedulable && s !== 'paused' && s !== 'disabled' ? h('div', { class: 'muted small' }, 'not schedulable') : null);
}

function budgetCell(a) {
  const b = a.budget;
  if (!b) return h('span', { class: 'muted' }, 'none');
  return ['daily', 'monthly'].filter((p) => b[p]).map((p) => {
    const x = b[p];
    return h('div', { class: 'budget-line' },
      h('span', { class: 'small' }, `${p === 'daily' ? 'Day' : 'Month'}: ${fmtUsd(x.spent_nanousd)} / ${fmtUsd(x.limit_nanousd)}`),
      meter(x.spent_nanousd, x.limit_nanousd, `${p} budget used`));
  });
}

async function renderList(main, ctx) {
  const msg = messageLine();
  const box = h('div', { class: 'table-box' }, h('p', { class: 'muted' }, 'Loading...'));
  const refresh = button('Refresh', () => load());
  const add = button('Add account', () => accountForm(null, list, (created) => reportAfter(msg, `Account "${created.name}" added.`, load)), 'primary');
  const begin = latestOnly(ctx);
  let list = [];
  main.append(
    h('div', { class: 'page-head' }, h('h1', null, 'Accounts'), h('div', { class: 'tools' }, refresh, add)),
    msg.el, box);

  /** Loads and shows the accounts; resolves to null, or what failed. */
  async function load() {
    const live = begin();
    refresh.disabled = true;
    try {
      const res = await get('accounts');
      if (!live()) return null;
      list = res.data || [];
      clear(box).append(table([
        {
          label: 'Name',
          cell: (a) => h('div', null, h('a', { href: `#/accounts/${enc(a.id)}`, class: 'strong' }, a.name),
            h('div', { class: 'mono muted small' }, a.id)),
        },
        { label: 'Provider', cell: (a) => a.provider },
        { label: 'Status', cell: stateCell },
        { label: 'Priority', cls: 'num', cell: (a) => String(a.priority) },
        { label: 'Weight', cls: 'num', cell: (a) => String(a.weight) },
        { label: 'Group', cell: (a) => a.group || h('span', { class: 'muted' }, '-') },
        {
          label: 'Models',
          cls: 'wrap models',
          cell: (a) => (a.models.length ? a.models.join(', ') : h('span', { class: 'muted' }, 'all')),
        },
        {
          label: 'In flight',
          cls: 'num',
          cell: (a) => `${a.state.in_flight}${a.max_concurrency ? ` / ${a.max_concurrency}` : ''}`,
        },
        { label: 'Budget', cell: budgetCell },
        { label: 'Last error', cls: 'wrap err', cell: (a) => (a.state.last_error ? h('span', { class: 'error-text small clamp', title: a.state.last_error }, a.state.last_error) : h('span', { class: 'muted' }, '-')) },
        {
          label: 'Actions',
          cls: 'actions',
          cell: (a) => [
            button('Edit', () => accountForm(a, list, (u) => reportAfter(msg, `Account "${u.name}" saved.`, load)),
              'small', { 'aria-label': `Edit account ${a.name}` }),
            button(a.schedulable ? 'Pause' : 'Resume', (e) => busy(e.currentTarget, msg, async () => {
              await patch(`accounts/${enc(a.id)}`, { schedulable: !a.schedulable });
              await reportAfter(msg, `Account "${a.name}" ${a.schedulable ? 'paused: it is no longer scheduled' : 'resumed: it is scheduled again'}.`, load);
            }), 'small', { 'aria-label': `${a.schedulable ? 'Pause scheduling of' : 'Resume scheduling of'} account ${a.name}` }),
          ],
        },
      ], list, { empty: 'No accounts yet. Add one to start relaying.', caption: 'Accounts', rowClass: (a) => (statusOf(a) === 'disabled' ? 'dim' : null) }));
      msg.clearError();
      return null;
    } catch (e) {
      const problem = `Could not load the accounts: ${e.message}`;
      if (live()) msg.error(problem);
      return problem;
    } finally {
      if (live()) refresh.disabled = false;
    }
  }
  await load();
}

function renderDetail(main, id, ctx) {
  return recordPage(main, ctx, {
    section: 'Accounts', href: '#/accounts', id, what: 'account', fetch: () => get(`accounts/${enc(id)}`), paint,
  });

  async function paint(a, dir, { head, body, msg, live, reload: load }) {
    ctx.setTitle(`Account ${a.name}`);
    const act = async (btn, fn, okText) => busy(btn, msg, async () => {
      await fn();
      await reportAfter(msg, okText, load);
    });
    head.append(h('h1', null, a.name, ' ', statusBadge(statusOf(a))),
      h('div', { class: 'tools' },
        button('Refresh', (e) => busy(e.currentTarget, msg, load)),
        button('Edit', () => accountForm(a, dir.accounts, (u) => reportAfter(msg, `Account "${u.name}" saved.`, load))),
        button(a.schedulable ? 'Pause scheduling' : 'Resume scheduling', (e) => act(e.currentTarget,
          () => patch(`accounts/${enc(id)}`, { schedulable: !a.schedulable }),
          a.schedulable ? 'Paused: the account is no longer scheduled.' : 'Resumed: the account is scheduled again.')),
        button('Reset state', (e) => act(e.currentTarget, () => post(`accounts/${enc(id)}/reset`),
          'State reset: rate limits, cooldowns and an unauthorized mark are cleared (a spent budget still rests).'),
        null, { title: 'Clears rate limits, cooldowns and an unauthorized mark; not a spent budget' }),
        button('Test', () => testDialog(a), null, { title: 'Sends the account a short request and shows the answer; nothing else changes' }),
        a.oauth ? button('Refresh token', (e) => act(e.currentTarget, () => post(`accounts/${enc(id)}/refresh`),
          'Token renewed.')) : null,
        button('Delete', async (e) => {
          const btn = e.currentTarget;
          const yes = await confirmDialog({
            title: 'Delete account',
            message: `Delete the account "${a.name}" (${a.id})? Its sealed credentials are removed; its usage history stays.`,
            confirmLabel: 'Delete account',
          });
          if (!yes) return;
          await busy(btn, msg, async () => {
            await del(`accounts/${enc(id)}`);
            location.hash = '#/accounts';
          });
        }, 'danger')));

    const st = a.state;
    const boundKeys = dir.keys.filter((k) => k.binding && ((k.binding.accounts || []).includes(a.id)
      || (a.group && k.binding.group === a.group)));
    body.append(h('div', { class: 'two-col' },
      h('section', { class: 'panel' }, h('div', { class: 'panel-head' }, h('h2', null, 'State')),
        facts([
          ['Status', stateCell(a)],
          ['Enabled', a.enabled ? 'yes' : 'no'],
          ['Schedulable', a.schedulable ? 'yes' : 'no'],
          ['Budget rest', st.budget_until ? h('div', null, st.budget_reason || 'A budget is spent.',
            h('div', { class: 'muted small' }, `Serves again ${fmtTime(st.budget_until)} (${fmtRel(st.budget_until)})`)) : null],
          ['In flight', `${st.in_flight}${a.max_concurrency ? ` of ${a.max_concurrency}` : ''}`],
          ['Failures in a row', String(st.consecutive_failures)],
          ['Last error', st.last_error || st.consecutive_failures ? lastError(a) : null],
          ['Last used', st.last_used_at ? `${fmtTime(st.last_used_at)} (${fmtRel(st.last_used_at)})` : 'never'],
        ])),
      h('section', { class: 'panel' }, h('div', { class: 'panel-head' }, h('h2', null, 'Configuration')),
        facts([
          ['ID', h('span', { class: 'mono' }, a.id)],
          ['Provider', providerLabel(a.provider)],
          ['Base URL', h('span', { class: 'mono break' }, a.base_url)],
          ['Models', a.models.length ? a.models.join(', ') : 'all'],
          ['Priority', String(a.priority)],
          ['Weight', String(a.weight)],
          ['Max concurrency', a.max_concurrency ? String(a.max_concurrency) : 'no limit'],
          ['Group', a.group],
          ['Proxy', a.proxy ? h('span', { class: 'mono break' }, a.proxy) : null],
          ['API version', a.api_version],
          ['Region', a.region],
          ['AWS access key id', a.aws_access_key_id],
          ['Project', a.project || (a.project_learned ? `${a.project_learned} (from the Code Assist API)` : null)],
          ['Deployments', Object.keys(a.deployments || {}).length ? h('span', { class: 'mono pre' }, pairsText(a.deployments)) : null],
          ['Model map', Object.keys(a.model_map || {}).length ? h('span', { class: 'mono pre' }, pairsText(a.model_map)) : null],
          ['Bound keys', boundKeys.length ? boundKeys.map((k, i) => [i ? ', ' : '', h('a', { href: `#/keys/${enc(k.id)}` }, k.name)]) : null],
          ['Created', fmtTime(a.created_at)],
        ]))));

    const budgetRows = a.budget ? ['daily', 'monthly'].filter((p) => a.budget[p]).map((p) => ({ p, ...a.budget[p] })) : [];
    body.append(h('section', { class: 'panel' }, h('div', { class: 'panel-head' }, h('h2', null, 'Budget')),
      budgetRows.length ? table([
        { label: 'Period', cell: (r) => (r.p === 'daily' ? 'Day' : 'Month') },
        { label: 'Limit', cls: 'num', cell: (r) => fmtUsd(r.limit_nanousd) },
        { label: 'Spent', cls: 'num', cell: (r) => fmtUsd(r.spent_nanousd) },
        { label: 'Remaining', cls: 'num', cell: (r) => fmtUsd(r.remaining_nanousd) },
        { label: 'Use', cell: (r) => meter(r.spent_nanousd, r.limit_nanousd, `${r.p} budget used`) },
        { label: 'Resets', cell: (r) => h('span', { title: fmtTime(r.resets_at) }, `${fmtWhen(r.resets_at)} (${fmtRel(r.resets_at)})`) },
      ], budgetRows, { caption: 'Budget' }) : h('p', { class: 'muted' }, 'No daily or monthly budget. Set one with Edit.')));

    if (a.oauth) {
      const o = a.oauth;
      body.append(h('section', { class: 'panel' }, h('div', { class: 'panel-head' }, h('h2', null, 'Subscription login (OAuth)')),
        facts([
          ['Token endpoint', h('span', { class: 'mono break' }, o.token_url)],
          ['Client id', h('span', { class: 'mono break' }, o.client_id)],
          ['Client secret', o.client_secret_set ? 'set' : 'not set'],
          ['Access token expires', o.expires_at ? `${fmtTime(o.expires_at)} (${fmtRel(o.expires_at)})` : 'unknown'],
          ['Last renewed', o.refreshed_at ? `${fmtTime(o.refreshed_at)} (${fmtRel(o.refreshed_at)})` : 'never'],
          ['Renewal failure', o.failure ? h('span', { class: 'error-text' }, o.failure) : null],
        ])));
    }

    body.append(await usageSummary({ account_id: a.id }, ctx));
    if (!live()) return;
    await recentRequests(body, dir, live,
      async () => (await get(`requests${qs({ account_id: a.id, limit: 25 })}`)).data || [],
      h('a', { href: `#/requests${qs({ account_id: a.id })}` }, 'All of this account\'s requests'),
      { hideAccount: true });
  }
}

/** Parses an optional whole number in [min, max]; null when empty. Throws with the field's name. */
function intField(input, label, min, max) {
  const s = input.value.trim();
  if (s === '') return null;
  if (!/^-?\d+$/.test(s)) throw new Error(`${label}: enter a whole number.`);
  const n = Number(s);
  if (n < min || n > max) throw new Error(`${label}: must be between ${min} and ${max}.`);
  return n;
}

function usdField(input, label) {
  const s = input.value.trim();
  if (s === '') return null;
  const r = parseUsd(s);
  if (r.error) throw new Error(`${label}: ${r.error}.`);
  if (r.value === 0) throw new Error(`${label}: must be more than $0; leave it empty for no budget (to stop the account, pause it).`);
  return r.value;
}

const same = (x, y) => JSON.stringify(x) === JSON.stringify(y);

/**
 * The add / edit form. `a`: the account to edit, or null to add one. `accounts`: every account
 * (for the group suggestions). `done(account)` after the API accepted it.
 */
/**
 * Sends the account a short generation (POST accounts/{id}/test) and shows what came back, in
 * the dialog, which stays open to try another model. Nothing is reported or recorded.
 */
function testDialog(a) {
  const model = h('input', { name: 'model', spellcheck: false, autocomplete: 'off', placeholder: 'its first model, or a small one of its provider\'s' });
  formDialog({
    title: `Test account ${a.name}`,
    submitLabel: 'Send test',
    fields: [
      h('p', { class: 'help' }, 'One short request, sent as a client\'s would go. The vendor bills its few tokens to the account; the relay records nothing and leaves the account\'s state as it is.'),
      field('Model (optional)', model),
    ],
    onSubmit: async (msg) => {
      const body = model.value.trim() ? { model: model.value.trim() } : {};
      const r = await post(`accounts/${enc(a.id)}/test`, body);
      const asked = r.upstream_model && r.upstream_model !== r.model ? `${r.model} (sent as ${r.upstream_model})` : r.model;
      const took = `${r.latency_ms} ms`;
      if (r.ok) msg.ok(`Works: ${asked} answered in ${took}${r.reply ? `: "${r.reply}"` : ''}.`);
      else msg.error(`Failed (${r.status ?? 'no answer'}, ${r.verdict.replaceAll('_', ' ')}) for ${asked} after ${took}: ${r.error || 'no message'}`);
      return false;
    },
  });
}

export function accountForm(a, accounts, done) {
  const editing = !!a;
  const provider = h('select', { name: 'provider', disabled: editing },
    PROVIDERS.map(([v, label]) => h('option', { value: v, selected: editing ? a.provider === v : v === 'anthropic' }, label)));
  const name = h('input', { name: 'name', required: true, maxLength: 200, value: editing ? a.name : '', autocomplete: 'off' });
  const apiKey = h('input', {
    name: 'api_key', type: 'password', autocomplete: 'new-password', spellcheck: false,
    placeholder: editing ? 'unchanged' : '', required: !editing,
  });
  const baseUrl = h('input', { name: 'base_url', type: 'url', value: editing ? a.base_url : '', spellcheck: false });
  const models = h('textarea', { name: 'models', rows: 2, spellcheck: false, placeholder: 'claude-*, claude-sonnet-4-5 (empty: every model)' });
  models.value = editing ? a.models.join('\n') : '';
  // Text inputs checked by intField, not type=number: a number input reports text it cannot
  // parse as "", which would read as "no limit" or "unchanged".
  const priority = h('input', { name: 'priority', value: editing ? String(a.priority) : '', placeholder: '50', autocomplete: 'off' });
  const weight = h('input', { name: 'weight', inputMode: 'numeric', value: editing ? String(a.weight) : '', placeholder: '1', autocomplete: 'off' });
  const maxConc = h('input', { name: 'max_concurrency', inputMode: 'numeric', value: editing && a.max_concurrency ? String(a.max_concurrency) : '', placeholder: 'no limit', autocomplete: 'off' });
  const groupsId = nextId('groups');
  const group = h('input', { name: 'group', value: editing && a.group ? a.group : '', list: groupsId, autocomplete: 'off', placeholder: 'none' });
  const groups = [...new Set(accounts.map((x) => x.group).filter(Boolean))];
  const groupList = h('datalist', { id: groupsId }, groups.map((g) => h('option', { value: g })));
  const proxy = h('input', { name: 'proxy', value: editing && a.proxy ? a.proxy : '', spellcheck: false, placeholder: 'socks5h://user:pass@host:1080 (none)' });
  const daily = h('input', { name: 'daily', inputMode: 'decimal', value: editing ? nanoToDecimal(a.daily_cost_nanousd) : '', placeholder: 'no budget', autocomplete: 'off' });
  const monthly = h('input', { name: 'monthly', inputMode: 'decimal', value: editing ? nanoToDecimal(a.monthly_cost_nanousd) : '', placeholder: 'no budget', autocomplete: 'off' });
  const sched = checkbox('Schedulable (picked for requests)', editing ? a.schedulable : true);
  const enabled = checkbox('Enabled', editing ? a.enabled : true);
  const apiVersion = h('input', { name: 'api_version', value: editing && a.api_version ? a.api_version : '', placeholder: AZURE_API_VERSION });
  const deployments = h('textarea', { name: 'deployments', rows: 3, spellcheck: false, placeholder: 'gpt-4o=prod-4o\nclaude-sonnet-4-5=us.anthropic.claude-sonnet-4-5-20250929-v1:0' });
  deployments.value = editing ? pairsText(a.deployments) : '';
  const modelMap = h('textarea', { name: 'model_map', rows: 3, spellcheck: false, placeholder: 'claude-sonnet-4-5=glm-4.6\nclaude-haiku-*=glm-4.5-air' });
  modelMap.value = editing ? pairsText(a.model_map) : '';
  const region = h('input', { name: 'region', value: editing && a.region ? a.region : '', placeholder: 'us-east-1' });
  const awsId = h('input', { name: 'aws_access_key_id', value: editing && a.aws_access_key_id ? a.aws_access_key_id : '', placeholder: 'AKIA... (empty: a Bedrock API key)', spellcheck: false, autocomplete: 'off' });
  const project = h('input', { name: 'project', value: editing && a.project ? a.project : '', placeholder: 'learned from the Code Assist API', spellcheck: false });

  const keyHelp = h('p', { class: 'help' });
  const apiKeyField = h('div', { class: 'field' }, h('label', { for: (apiKey.id = nextId('in')) }, 'API key'), apiKey, keyHelp);
  apiKey.setAttribute('aria-describedby', (keyHelp.id = nextId('help')));
  const urlField = field('Base URL (optional)', baseUrl, 'Empty: the provider\'s default (shown). An http(s) URL without credentials or query.');
  const azureF = field('API version', apiVersion, `Azure only; empty: ${AZURE_API_VERSION}.`);
  const regionF = field('Region', region, 'Bedrock: required.');
  const awsF = field('AWS access key id', awsId, 'Sign requests with this id and the API key as its secret access key.');
  const deplF = field('Deployments', deployments, 'One model=deployment (Azure) or model=model id / inference profile (Bedrock) per line.');
  const mapF = field('Model map (optional)', modelMap, 'One model=name per line: a model clients ask for (or a glob) and the name this account\'s vendor knows it by. Usage stays under the asked name.');
  const projectF = field('Google Cloud project (optional)', project, 'Code Assist only.');
  const vendorGrid = h('div', { class: 'grid2' }, azureF, regionF, awsF, projectF);

  function sync() {
    const p = provider.value;
    const e = PROVIDERS.find((x) => x[0] === p);
    baseUrl.placeholder = p === 'bedrock' && region.value.trim()
      ? `https://bedrock-runtime.${region.value.trim()}.amazonaws.com` : e[2];
    keyHelp.textContent = `${API_KEY_HELP[p]}${editing ? ' Empty: the key is left unchanged.' : ''} It is sealed and never shown again.`;
    azureF.hidden = p !== 'azure-openai';
    regionF.hidden = p !== 'bedrock';
    awsF.hidden = p !== 'bedrock';
    deplF.hidden = p !== 'azure-openai' && p !== 'bedrock';
    mapF.hidden = !MAPS_MODELS.includes(p);
    projectF.hidden = p !== 'code-assist';
    vendorGrid.hidden = [azureF, regionF, awsF, projectF].every((f) => f.hidden);
    urlField.querySelector('label').textContent = p === 'azure-openai' ? 'Base URL (the resource endpoint)' : 'Base URL (optional)';
  }
  provider.addEventListener('change', sync);
  region.addEventListener('input', sync);
  sync();

  const fields = [
    editing ? null : h('p', { class: 'help box' },
      'Subscription logins whose tokens the relay renews are added with the command line: ',
      h('code', null, 'switchyard accounts add --name pro --codex-auth ~/.codex/auth.json'), ' (ChatGPT) or ',
      h('code', null, 'switchyard accounts add --name google --gemini-auth ~/.gemini/oauth_creds.json --client-secret ...'),
      ' (Google). A Claude subscription\'s ', h('code', null, 'claude setup-token'),
      ' (sk-ant-oat01-...) can be pasted here as the API key of an Anthropic account.'),
    h('div', { class: 'grid2' },
      field('Provider', provider, editing ? 'The provider of an account cannot be changed.' : null),
      field('Name', name)),
    apiKeyField,
    urlField,
    vendorGrid,
    deplF,
    mapF,
    field('Models', models, 'Globs the account serves, separated by commas or new lines. Empty: every model.'),
    h('div', { class: 'grid4' },
      field('Priority', priority, 'Lower is picked first.'),
      field('Weight', weight, 'Share of load.'),
      field('Max concurrency', maxConc, 'Empty: no limit.'),
      h('div', null, field('Group', group, 'For keys bound to a group.'), groupList)),
    field('Proxy URL (optional)', proxy, 'http, https, socks5 or socks5h; this account\'s calls go through it only. Shown with its credentials as ***; leave as is to keep it.'),
    h('div', { class: 'grid2' },
      field('Daily budget (USD)', daily, 'Empty: none. The account rests once it is spent, until the day ends.'),
      field('Monthly budget (USD)', monthly, 'Empty: none.')),
    h('div', { class: 'checks' }, sched.wrap, enabled.wrap),
  ];

  formDialog({
    title: editing ? `Edit account ${a.name}` : 'Add an account',
    submitLabel: editing ? 'Save changes' : 'Add account',
    wide: true,
    fields,
    onSubmit: async () => {
      const p = provider.value;
      const nameV = name.value.trim();
      if (!nameV) throw new Error('Name: required.');
      const keyV = apiKey.value.trim();
      if (!editing && !keyV) throw new Error('API key: required.');
      const modelsV = splitList(models.value);
      const prioV = intField(priority, 'Priority', -2147483648, 2147483647);
      const weightV = intField(weight, 'Weight', 1, 4294967295);
      const concV = intField(maxConc, 'Max concurrency', 1, 4294967295);
      const dailyV = usdField(daily, 'Daily budget');
      const monthlyV = usdField(monthly, 'Monthly budget');
      const urlV = baseUrl.value.trim();
      const groupV = group.value.trim();
      const proxyV = proxy.value.trim();
      const azure = p === 'azure-openai';
      const bedrock = p === 'bedrock';
      let deplV = {};
      if (azure || bedrock) {
        const r = parsePairs(deployments.value);
        if (r.error) throw new Error(`Deployments: ${r.error}.`);
        deplV = r.value;
      }
      const maps = MAPS_MODELS.includes(p);
      let mapV = {};
      if (maps) {
        const r = parsePairs(modelMap.value);
        if (r.error) throw new Error(`Model map: ${r.error}.`);
        mapV = r.value;
      }
      if (azure && !urlV) throw new Error('Base URL: required for Azure OpenAI (https://<resource>.openai.azure.com).');
      if (bedrock && !region.value.trim()) throw new Error('Region: required for Bedrock (such as us-east-1).');

      let body;
      if (!editing) {
        body = { name: nameV, provider: p, api_key: keyV, models: modelsV, schedulable: sched.input.checked, enabled: enabled.input.checked };
        if (urlV) body.base_url = urlV;
        if (prioV !== null) body.priority = prioV;
        if (weightV !== null) body.weight = weightV;
        if (concV !== null) body.max_concurrency = concV;
        if (groupV) body.group = groupV;
        if (proxyV) body.proxy = proxyV;
        if (dailyV !== null) body.daily_cost_nanousd = dailyV;
        if (monthlyV !== null) body.monthly_cost_nanousd = monthlyV;
        if (azure && apiVersion.value.trim()) body.api_version = apiVersion.value.trim();
        if ((azure || bedrock) && Object.keys(deplV).length) body.deployments = deplV;
        if (maps && Object.keys(mapV).length) body.model_map = mapV;
        if (bedrock) {
          body.region = region.value.trim();
          if (awsId.value.trim()) body.aws_access_key_id = awsId.value.trim();
        }
        if (p === 'code-assist' && project.value.trim()) body.project = project.value.trim();
        const created = await post('accounts', body);
        apiKey.value = '';
        await done(created);
        return true;
      }
      // Only what changed.
      body = {};
      if (nameV !== a.name) body.name = nameV;
      if (keyV) body.api_key = keyV;
      // Emptied: back to the provider's own endpoint (the API refuses it for Azure, which has none).
      if (!urlV) body.base_url = null;
      else if (urlV !== a.base_url) body.base_url = urlV;
      if (!same(modelsV, a.models)) body.models = modelsV;
      if (prioV === null) throw new Error('Priority: enter a number.');
      if (prioV !== a.priority) body.priority = prioV;
      if (weightV === null) throw new Error('Weight: enter a number.');
      if (weightV !== a.weight) body.weight = weightV;
      if (concV !== (a.max_concurrency ?? null)) body.max_concurrency = concV;
      if ((groupV || null) !== (a.group ?? null)) body.group = groupV || null;
      if ((proxyV || null) !== (a.proxy ?? null)) body.proxy = proxyV || null;
      if (dailyV !== (a.daily_cost_nanousd ?? null)) body.daily_cost_nanousd = dailyV;
      if (monthlyV !== (a.monthly_cost_nanousd ?? null)) body.monthly_cost_nanousd = monthlyV;
      if (sched.input.checked !== a.schedulable) body.schedulable = sched.input.checked;
      if (enabled.input.checked !== a.enabled) body.enabled = enabled.input.checked;
      if (azure && apiVersion.value.trim() && apiVersion.value.trim() !== a.api_version) body.api_version = apiVersion.value.trim();
      if ((azure || bedrock) && !same(deplV, a.deployments || {})) body.deployments = deplV;
      if (maps && !same(mapV, a.model_map || {})) body.model_map = mapV;
      if (bedrock) {
        if (region.value.trim() !== a.region) body.region = region.value.trim();
        if ((awsId.value.trim() || null) !== (a.aws_access_key_id ?? null)) body.aws_access_key_id = awsId.value.trim() || null;
      }
      if (p === 'code-assist' && (project.value.trim() || null) !== (a.project ?? null)) body.project = project.value.trim() || null;
      if (!Object.keys(body).length) return true;
      const updated = await patch(`accounts/${enc(a.id)}`, body);
      apiKey.value = '';
      await done(updated);
      return true;
    },
  });
}

