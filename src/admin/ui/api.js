// The admin API client. The admin token lives in sessionStorage only.

const TOKEN_KEY = 'switchyard.admin-token';

export const token = {
  get() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch {
      return null;
    }
  },
  set(value) {
    sessionStorage.setItem(TOKEN_KEY, value);
  },
  clear() {
    try {
      sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      /* storage unavailable: nothing kept */
    }
  },
};

/** The admin API's base path: the page is served at <base>/admin/ui/, the API at <base>/admin/. */
export const ADMIN_BASE = location.pathname.replace(/\/ui(\/[^/]*)?$/, '/');
export const ROOT_BASE = ADMIN_BASE.replace(/admin\/$/, '');

export class ApiError extends Error {
  constructor(status, message, type) {
    super(message);
    this.status = status;
    this.type = type || '';
  }
}

/** Called with the API's message when it answers 401 (set by the app). */
let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

/**
 * Calls `/admin/<path>`. `body`: an object sent as JSON, or a string sent as is. Resolves to the
 * parsed JSON answer; rejects with ApiError (the API's message) otherwise.
 */
export async function api(method, path, body, { tokenOverride } = {}) {
  const headers = { Accept: 'application/json' };
  // The token this request is sent with: a 401 speaks of it, not of one stored since.
  const t = tokenOverride ?? token.get();
  if (!t) throw new ApiError(401, 'Not signed in.', 'not_signed_in');
  headers.Authorization = `Bearer ${t}`;
  const init = { method, headers, cache: 'no-store', credentials: 'omit' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(ADMIN_BASE + path, init);
  } catch (e) {
    throw new ApiError(0, `Cannot reach the relay (${e.message || e}).`, 'network');
  }
  const text = await res.text();
  let json = null;
  if (text) {
    try {
      json = JSON.parse(text);
    } catch {
      json = null;
    }
  }
  if (!res.ok) {
    const err = json && json.error;
    const message = (err && typeof err.message === 'string' && err.message)
      || `${res.status} ${res.statusText || 'error'}`;
    const e = new ApiError(res.status, message, err && err.type);
    // Signed out only when the refused token is still the one stored: an answer to a request
    // sent before a sign-in with another token does not end the new session.
    if (res.status === 401 && tokenOverride === undefined && token.get() === t) {
      token.clear();
      onUnauthorized(message);
    }
    throw e;
  }
  return json;
}

export const get = (path) => api('GET', path);
export const post = (path, body) => api('POST', path, body);
export const patch = (path, body) => api('PATCH', path, body);
export const del = (path) => api('DELETE', path);

/** A query string from an object, skipping empty values. */
export function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') u.set(k, String(v));
  }
  const s = u.toString();
  return s ? `?${s}` : '';
}

export const enc = encodeURIComponent;

/** GET /health (no token): version, for the header. */
export async function health() {
  try {
    const res = await fetch(`${ROOT_BASE}health`, { cache: 'no-store', credentials: 'omit' });
    return await res.json();
  } catch {
    return null;
  }
}

function makeDirectory(keys, accounts) {
  return {
    keys: keys || [],
    accounts: accounts || [],
    keysOk: !!keys,
    accountsOk: !!accounts,
    /** A key's name; null: no such key (deleted); undefined: the keys could not be loaded. */
    keyName(id) {
      if (!keys) return undefined;
      const k = keys.find((x) => x.id === id);
      return k ? k.name : null;
    },
    /** An account's name; null: no such account (deleted); undefined: not loaded. */
    accountName(id) {
      if (!accounts) return undefined;
      const a = accounts.find((x) => x.id === id);
      return a ? a.name : null;
    },
  };
}

/** A directory that knows no key or account (before one is loaded). */
export function emptyDirectory() {
  return makeDirectory(null, null);
}

/**
 * Every key and account, for names and pickers. Never rejects: what could not be loaded is
 * empty (`keysOk` / `accountsOk` false; its names resolve to undefined) and `error` tells why.
 * `keyUsage`: each key with its limits' current use (`GET /admin/keys?with=usage`).
 */
export async function directory({ keyUsage = false } = {}) {
  const [k, a] = await Promise.allSettled([get(keyUsage ? 'keys?with=usage' : 'keys'), get('accounts')]);
  const keys = k.status === 'fulfilled' ? (k.value && k.value.data) || [] : null;
  const accounts = a.status === 'fulfilled' ? (a.value && a.value.data) || [] : null;
  const dir = makeDirectory(keys, accounts);
  const failed = [['keys', k], ['accounts', a]].filter(([, r]) => r.status === 'rejected');
  dir.error = failed.length
    ? `Could not load the ${failed.map(([what]) => what).join(' and ')}: ${failed[0][1].reason.message || failed[0][1].reason}`
    : null;
  return dir;
}
