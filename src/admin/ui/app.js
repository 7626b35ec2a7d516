// The Switchyard admin console: sign-in, navigation by hash, and the views.

import { api, token, setUnauthorizedHandler, health } from './api.js';
import { h, clear } from './dom.js';
import * as overview from './overview.js';
import * as keys from './keys.js';
import * as accounts from './accounts.js';
import * as usage from './usage.js';
import * as requests from './requests.js';
import * as pricing from './pricing.js';

const $ = (id) => document.getElementById(id);
const signin = $('signin');
const shell = $('shell');
const main = $('main');

/** Routes: first hash segment -> [view, title]. */
const ROUTES = {
  overview: [overview.render, 'Overview'],
  keys: [keys.render, 'Keys'],
  accounts: [accounts.render, 'Accounts'],
  usage: [usage.render, 'Usage'],
  requests: [requests.render, 'Requests'],
  pricing: [pricing.render, 'Pricing'],
};

let generation = 0;
let cleanups = [];

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, query = ''] = raw.split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  return { parts, query: new URLSearchParams(query) };
}

function runCleanups() {
  for (const fn of cleanups) {
    try {
      fn();
    } catch {
      /* a view's cleanup failing does not stop navigation */
    }
  }
  cleanups = [];
}

async function route() {
  if (!token.get()) {
    showSignin();
    return;
  }
  runCleanups();
  generation += 1;
  const mine = generation;
  const { parts, query } = parseHash();
  const name = parts[0] || 'overview';
  const entry = ROUTES[name];
  for (const a of document.querySelectorAll('.nav a')) {
    if (a.dataset.route === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  clear(main);
  if (!entry) {
    main.append(h('h1', null, 'Not found'), h('p', null, 'No such page. ', h('a', { href: '#/overview' }, 'Go to the overview')));
    return;
  }
  const [render, title] = entry;
  document.title = `${title} - Switchyard admin`;
  const ctx = {
    alive: () => mine === generation && !!token.get(),
    onCleanup: (fn) => cleanups.push(fn),
    setTitle: (t) => {
      if (mine === generation) document.title = `${t} - Switchyard admin`;
    },
  };
  try {
    await render(main, parts.slice(1), query, ctx);
  } catch (e) {
    if (ctx.alive() && e.status !== 401) {
      main.append(h('p', { class: 'message error', role: 'alert' }, e.message || String(e)));
    }
  }
}

function showSignin(message) {
  runCleanups();
  generation += 1;
  // Nothing the API answered stays on the page.
  clear(main);
  for (const d of document.querySelectorAll('dialog')) d.remove();
  shell.hidden = true;
  signin.hidden = false;
  const err = $('signin-error');
  if (message) {
    err.textContent = message;
    err.hidden = false;
  } else {
    err.hidden = true;
    err.textContent = '';
  }
  document.title = 'Sign in - Switchyard admin';
  $('signin-token').focus();
}

function showShell() {
  signin.hidden = true;
  shell.hidden = false;
  health().then((hl) => {
    if (hl && hl.version) $('version').textContent = `v${hl.version}`;
  });
}

$('signin-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const input = $('signin-token');
  const err = $('signin-error');
  const submit = $('signin-submit');
  const value = input.value.trim();
  if (!value) {
    err.textContent = 'Enter the admin token.';
    err.hidden = false;
    return;
  }
  submit.disabled = true;
  err.hidden = true;
  try {
    await api('GET', 'keys', undefined, { tokenOverride: value });
    token.set(value);
    input.value = '';
    showShell();
    if (!location.hash || location.hash === '#' || location.hash === '#/') location.hash = '#/overview';
    else route();
  } catch (ex) {
    err.textContent = ex.message;
    err.hidden = false;
    input.select();
  } finally {
    submit.disabled = false;
  }
});

$('signout').addEventListener('click', () => {
  token.clear();
  showSignin();
});

$('skip-link').addEventListener('click', () => main.focus());

setUnauthorizedHandler((message) => showSignin(`Signed out: ${message}`));

window.addEventListener('hashchange', () => {
  if (token.get()) route();
});

if (token.get()) {
  showShell();
  if (!location.hash) location.hash = '#/overview';
  else route();
} else {
  showSignin();
}
