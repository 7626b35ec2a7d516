// Formatting and parsing: money (integer nano-dollars), numbers, times.

export const NANO_PER_USD = 1_000_000_000n;

const intFmt = new Intl.NumberFormat('en-US');

/** An integer with thousands separators; '' for null. */
export function fmtInt(n) {
  if (n === null || n === undefined || n === '') return '';
  return intFmt.format(n);
}

/** A token count, compact: 950, 12.3k, 4.56M. */
export function fmtCompact(n) {
  if (n === null || n === undefined) return '';
  const a = Math.abs(n);
  if (a < 10_000) return intFmt.format(n);
  if (a < 1_000_000) return `${trimZeros((n / 1_000).toFixed(1))}k`;
  if (a < 1_000_000_000) return `${trimZeros((n / 1_000_000).toFixed(2))}M`;
  return `${trimZeros((n / 1_000_000_000).toFixed(2))}B`;
}

function trimZeros(s) {
  return s.includes('.') ? s.replace(/\.?0+$/, '') : s;
}

/**
 * Nano-dollars shown as dollars: $12.34, $1,234.50, small amounts with more digits ($0.0031).
 */
export function fmtUsd(nano) {
  if (nano === null || nano === undefined || nano === '') return '';
  const n = Number(nano);
  if (!Number.isFinite(n)) return '';
  const sign = n < 0 ? '-' : '';
  const d = Math.abs(n) / 1e9;
  if (d === 0) return '$0.00';
  if (d >= 1) {
    return `${sign}$${d.toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`;
  }
  // Two significant digits past the leading zeros, at least two decimals, at most nine.
  const decimals = Math.min(9, Math.max(2, Math.ceil(-Math.log10(d)) + 2));
  let s = d.toFixed(decimals);
  s = s.replace(/(\.\d\d\d*?)0+$/, '$1');
  return `${sign}$${s}`;
}

/** Nano-dollars as an exact decimal string of dollars, for an input's value: 12500000000 -> "12.5". */
export function nanoToDecimal(nano) {
  if (nano === null || nano === undefined) return '';
  const n = BigInt(nano);
  const whole = n / NANO_PER_USD;
  const frac = (n % NANO_PER_USD).toString().padStart(9, '0').replace(/0+$/, '');
  return frac ? `${whole}.${frac}` : `${whole}`;
}

/**
 * A dollar amount typed by an admin, as integer nano-dollars, exactly (no float arithmetic):
 * "0.1" -> 100000000. Accepts "12", "12.5", ".5", "$1,234.56". A comma only separates groups of
 * three digits ("1,234.50"); "12,50" is refused rather than read as 1250. Returns {value} or
 * {error}.
 */
export function parseUsd(text) {
  let s = String(text ?? '').trim().replace(/^\$/, '').trim();
  if (s === '') return { error: 'enter an amount in dollars' };
  if (s.includes(',')) {
    if (!/^\d{1,3}(,\d{3})+(\.\d*)?$/.test(s)) {
      return { error: `"${String(text).trim()}": use a dot for decimals (12.50); a comma only separates thousands (1,234.50)` };
    }
    s = s.replace(/,/g, '');
  }
  const m = /^(\d*)(?:\.(\d*))?$/.exec(s);
  if (!m || (m[1] === '' && (m[2] === undefined || m[2] === ''))) {
    return { error: `"${String(text).trim()}" is not an amount in dollars (such as 12.50)` };
  }
  const frac = m[2] || '';
  if (frac.length > 9) return { error: 'at most 9 decimals (a nano-dollar)' };
  const nano = BigInt(m[1] || '0') * NANO_PER_USD + BigInt(frac.padEnd(9, '0'));
  if (nano > BigInt(Number.MAX_SAFE_INTEGER)) {
    return { error: 'too large (at most $9,007,199)' };
  }
  return { value: Number(nano) };
}

/**
 * A time from the API: RFC 3339, possibly with a time zone annotation the budget and limit views
 * add ("2026-12-09T00:00:00+00:00[UTC]"), or unix ms. A Date, or null.
 */
export function parseTime(t) {
  if (t === null || t === undefined || t === '') return null;
  if (typeof t === 'number') return new Date(t);
  const d = new Date(String(t).replace(/\[[^\]]*\]$/, ''));
  return Number.isNaN(d.getTime()) ? null : d;
}

const dateTimeFmt = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
});
const timeFmt = new Intl.DateTimeFormat(undefined, {
  hour: '2-digit', minute: '2-digit', second: '2-digit',
});
const shortDateFmt = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' });

/** Local date and time. */
export function fmtTime(t) {
  const d = parseTime(t);
  return d ? dateTimeFmt.format(d) : '';
}

/** Local time of day if today, else date and time. */
export function fmtWhen(t) {
  const d = parseTime(t);
  if (!d) return '';
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return timeFmt.format(d);
  return dateTimeFmt.format(d);
}

export function fmtShortDate(d) {
  return shortDateFmt.format(d);
}

/** "in 3 h", "5 min ago", "just now". */
export function fmtRel(t, now = Date.now()) {
  const d = parseTime(t);
  if (!d) return '';
  const diff = d.getTime() - now;
  const a = Math.abs(diff);
  let text;
  if (a < 45_000) return diff >= 0 ? 'in a moment' : 'just now';
  if (a < 90 * 60_000) text = `${Math.round(a / 60_000)} min`;
  else if (a < 36 * 3_600_000) text = `${Math.round(a / 3_600_000)} h`;
  else text = `${Math.round(a / 86_400_000)} d`;
  return diff >= 0 ? `in ${text}` : `${text} ago`;
}

/** Milliseconds as "850 ms", "3.2 s", "4 min 10 s". */
export function fmtMs(ms) {
  if (ms === null || ms === undefined) return '';
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${trimZeros((ms / 1000).toFixed(1))} s`;
  const m = Math.floor(ms / 60_000);
  return `${m} min ${Math.round((ms % 60_000) / 1000)} s`;
}

/** Seconds as "1 h", "5 h", "30 min", "7 d". */
export function fmtSeconds(s) {
  if (s % 86_400 === 0) return `${s / 86_400} d`;
  if (s % 3_600 === 0) return `${s / 3_600} h`;
  if (s % 60 === 0) return `${s / 60} min`;
  return `${s} s`;
}

/** A time as UTC, to the minute: "2026-11-22 08:00 UTC". */
export function fmtUtc(t) {
  const d = parseTime(t);
  if (!d) return '';
  return `${d.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}

/** The start of the UTC day of `d` (default: now). */
export function utcMidnight(d = new Date()) {
  return new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()));
}

/** The start of the UTC month of `d` (default: now). */
export function utcMonthStart(d = new Date()) {
  return new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1));
}

/** A local date as YYYY-MM-DD (for date inputs). */
export function isoDate(d) {
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
}

/** A UTC date as YYYY-MM-DD. */
export function isoDateUtc(d) {
  return d.toISOString().slice(0, 10);
}

/** Splits a list typed with commas or newlines: trimmed, empty items dropped. */
export function splitList(text) {
  return String(text || '').split(/[\n,]/).map((s) => s.trim()).filter(Boolean);
}

/** Lines "model=deployment" as an object; {error} on a bad line. */
export function parsePairs(text) {
  const out = {};
  for (const raw of String(text || '').split('\n')) {
    const line = raw.trim();
    if (!line) continue;
    const i = line.indexOf('=');
    if (i <= 0 || i === line.length - 1) {
      return { error: `"${line}" is not model=name` };
    }
    out[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  return { value: out };
}

export function pairsText(obj) {
  return Object.entries(obj || {}).map(([k, v]) => `${k}=${v}`).join('\n');
}
