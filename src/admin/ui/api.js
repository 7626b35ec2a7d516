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
  const t = tokenOverride ?? token.get();
  if (t) headers.Authorization = `Bearer ${t}`;
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
    if (res.status === 401 && tokenOverride === undefined) {
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

/** Every key and account, for names and pickers. */
export async function directory() {
  const [keys, accounts] = await Promise.all([get('keys'), get('accounts')]);
  return {
    keys: keys.data || [],
    accounts: accounts.data || [],
    keyName(id) {
      const k = this.keys.find((x) => x.id === id);
      return k ? k.name : null;
    },
    accountName(id) {
      const a = this.accounts.find((x) => x.id === id);
      return a ? a.name : null;
    },
  };
}
