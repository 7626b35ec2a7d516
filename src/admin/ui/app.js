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
const appError = $('app-error');

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

/** The hash as {parts, query}; null when it cannot be decoded (such as "#/keys/%E0%A4%A"). */
function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, query = ''] = raw.split('?');
  try {
    const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
    return { parts, query: new URLSearchParams(query) };
  } catch {
    return null;
  }
}

/** Shows a failure nothing else reported (in the page, not only in the browser's console). */
function showAppError(text) {
  if (!shell.hidden) {
    appError.textContent = text;
    appError.hidden = false;
  } else {
    const err = $('signin-error');
    err.textContent = text;
    err.hidden = false;
  }
}

function clearAppError() {
  appError.hidden = true;
  appError.textContent = '';
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
  clearAppError();
  const parsed = parseHash();
  const parts = parsed ? parsed.parts : [];
  const query = parsed ? parsed.query : new URLSearchParams();
  const name = parsed ? parts[0] || 'overview' : null;
  const entry = name !== null && Object.hasOwn(ROUTES, name) ? ROUTES[name] : null;
  for (const a of document.querySelectorAll('.nav a')) {
    if (a.dataset.route === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  clear(main);
  if (!entry) {
    document.title = 'Not found - Switchyard admin';
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

/** Routes, reporting in the page whatever the view did not catch. */
function navigate() {
  route().catch((e) => {
    if (e && e.status === 401) return;
    showAppError(`Something went wrong: ${(e && e.message) || e}`);
  });
}

function showSignin(message) {
  runCleanups();
  generation += 1;
  clearAppError();
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
    else navigate();
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
  if (token.get()) navigate();
});

// A failure no view caught is shown in the page (and still reaches the browser's console).
window.addEventListener('unhandledrejection', (e) => {
  const r = e.reason;
  if (r && r.status === 401) return; // already back on sign-in
  showAppError(`Something went wrong: ${(r && r.message) || r}`);
});
window.addEventListener('error', (e) => {
  showAppError(`Something went wrong: ${e.message || e.error || 'an error'}`);
});

if (token.get()) {
  showShell();
  if (!location.hash) location.hash = '#/overview';
  else navigate();
} else {
  showSignin();
}
