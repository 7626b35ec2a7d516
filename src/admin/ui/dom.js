// DOM building without innerHTML: every string goes in as text.

const PROPS = new Set([
  'id', 'type', 'name', 'value', 'href', 'disabled', 'checked', 'selected', 'placeholder',
  'required', 'hidden', 'title', 'min', 'max', 'step', 'rows', 'readOnly', 'autocomplete',
  'spellcheck', 'multiple', 'accept', 'tabIndex', 'colSpan', 'scope', 'download', 'inputMode',
  'maxLength', 'open', 'pattern', 'dateTime',
]);

/**
 * h('button', {class: 'primary', on: {click}}, 'Save'). Props: class, text, for, on, data (dataset),
 * aria-* / role / other attributes by name; children: nodes, strings (as text), arrays, null.
 */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  apply(el, props);
  append(el, children);
  return el;
}

function apply(el, props) {
  if (!props) return;
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = Array.isArray(v) ? v.filter(Boolean).join(' ') : v;
    else if (k === 'text') el.textContent = String(v);
    else if (k === 'for') el.htmlFor = v;
    else if (k === 'on') for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else if (k === 'data') Object.assign(el.dataset, v);
    else if (PROPS.has(k)) el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const SVG_NS = 'http://www.w3.org/2000/svg';
export function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

let uid = 0;
export function nextId(prefix = 'f') {
  uid += 1;
  return `${prefix}-${uid}`;
}

/** A labelled field: {label, input, help, id}. Returns the wrapper; the input gets an id. */
export function field(label, input, help, cls) {
  if (!input.id) input.id = nextId('in');
  const helpEl = help ? h('p', { class: 'help', id: `${input.id}-help` }, help) : null;
  if (helpEl) input.setAttribute('aria-describedby', helpEl.id);
  return h('div', { class: ['field', cls] }, h('label', { for: input.id }, label), input, helpEl);
}

/** A checkbox with its label after it. */
export function checkbox(label, checked, props = {}) {
  const input = h('input', { type: 'checkbox', checked, ...props });
  input.id = input.id || nextId('cb');
  const wrap = h('div', { class: 'check' }, input, h('label', { for: input.id }, label));
  return { wrap, input };
}

/** An error or success line shown near what the admin did. */
export function messageLine() {
  const el = h('p', { class: 'message', role: 'status', 'aria-live': 'polite', hidden: true });
  return {
    el,
    error(text) {
      el.className = 'message error';
      el.setAttribute('role', 'alert');
      el.textContent = text;
      el.hidden = false;
    },
    ok(text) {
      el.className = 'message ok';
      el.setAttribute('role', 'status');
      el.textContent = text;
      el.hidden = false;
    },
    clear() {
      el.hidden = true;
      el.textContent = '';
    },
    /** Clears an error shown (a success message stays). */
    clearError() {
      if (el.classList.contains('error')) this.clear();
    },
  };
}

/**
 * After a change the API accepted: runs `reload` (which resolves to null, or a message when it
 * failed) and then tells `okText` — with the reload's failure next to it, so that neither hides
 * the other ("Limits saved. Reload failed: ...").
 */
export async function reportAfter(msg, okText, reload) {
  let problem;
  try {
    problem = await reload();
  } catch (e) {
    problem = e.message || String(e);
  }
  if (problem) msg.error(`${okText} Reload failed: ${problem}`);
  else msg.ok(okText);
}

/**
 * Numbers a view's loads so that only the latest one paints. Once per view:
 * `const begin = latestOnly(ctx);`; in each load: `const live = begin();`, then after every
 * await `if (!live()) return;`. `live()` turns false when a later load begins or the view is left.
 */
export function latestOnly(ctx) {
  let seq = 0;
  return () => {
    seq += 1;
    const mine = seq;
    return () => mine === seq && ctx.alive();
  };
}

export function button(label, onClick, cls, props = {}) {
  return h('button', { type: 'button', class: cls, on: { click: onClick }, ...props }, label);
}

/** Runs `fn` with `btn` disabled meanwhile; reports a failure on `msg`. */
export async function busy(btn, msg, fn) {
  if (btn) btn.disabled = true;
  try {
    if (msg) msg.clear();
    return await fn();
  } catch (e) {
    if (msg) msg.error(e.message || String(e));
    else throw e;
    return undefined;
  } finally {
    if (btn) btn.disabled = false;
  }
}

/**
 * A modal dialog. `content`: nodes; `actions`: buttons (the first primary is the default).
 * Returns {dialog, close}. The dialog is removed from the document when it closes.
 */
export function openDialog({ title, content, actions = [], wide = false, onClose }) {
  const titleId = nextId('dlg');
  const closeBtn = h('button', { type: 'button', class: 'icon-btn', 'aria-label': 'Close' }, '\u00d7');
  const dialog = h('dialog', { class: ['dialog', wide && 'wide'], 'aria-labelledby': titleId },
    h('div', { class: 'dialog-head' }, h('h2', { id: titleId }, title), closeBtn),
    h('div', { class: 'dialog-body' }, content),
    actions.length ? h('div', { class: 'dialog-actions' }, actions) : null);
  let finished = false;
  // Runs once, as soon as the dialog closes (its `close` event comes a task later): what it
  // showed leaves the document at once.
  const finish = () => {
    if (finished) return;
    finished = true;
    if (onClose) onClose();
    dialog.remove();
  };
  const close = () => {
    if (dialog.open) dialog.close();
    finish();
  };
  closeBtn.addEventListener('click', close);
  dialog.addEventListener('cancel', () => setTimeout(finish, 0));
  dialog.addEventListener('close', finish);
  document.body.append(dialog);
  dialog.showModal();
  return { dialog, close };
}

/** A dialog around a form: `onSubmit(msg)` resolves true to close. */
export function formDialog({ title, fields, submitLabel, danger = false, wide = false, onSubmit }) {
  const msg = messageLine();
  const submit = h('button', { type: 'submit', class: danger ? 'danger' : 'primary' }, submitLabel);
  const cancel = h('button', { type: 'button' }, 'Cancel');
  const form = h('form', { class: 'form', novalidate: true }, fields, msg.el,
    h('div', { class: 'dialog-actions' }, cancel, submit));
  const d = openDialog({ title, content: form, wide });
  cancel.addEventListener('click', d.close);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const done = await busy(submit, msg, () => onSubmit(msg));
    if (done) d.close();
  });
  const first = form.querySelector('input:not([type=hidden]):not([disabled]), select, textarea');
  if (first) first.focus();
  return { ...d, form, msg };
}

/** Asks to confirm; resolves true when confirmed. */
export function confirmDialog({ title, message, confirmLabel, danger = true }) {
  return new Promise((resolve) => {
    let answer = false;
    const yes = h('button', { type: 'button', class: danger ? 'danger' : 'primary' }, confirmLabel);
    const no = h('button', { type: 'button' }, 'Cancel');
    const d = openDialog({
      title,
      content: h('p', null, message),
      actions: [no, yes],
      onClose: () => resolve(answer),
    });
    yes.addEventListener('click', () => {
      answer = true;
      d.close();
    });
    no.addEventListener('click', d.close);
    no.focus();
  });
}

/**
 * A table: columns [{label, cls, cell(row) -> Node|string}]. Wrapped to scroll sideways on small
 * screens.
 */
export function table(columns, rows, { empty = 'Nothing here yet.', caption, rowClass } = {}) {
  const thead = h('thead', null, h('tr', null,
    columns.map((c) => h('th', { scope: 'col', class: c.cls }, c.label))));
  const tbody = h('tbody');
  if (!rows.length) {
    tbody.append(h('tr', null, h('td', { colSpan: columns.length, class: 'empty' }, empty)));
  }
  for (const row of rows) {
    tbody.append(h('tr', { class: rowClass ? rowClass(row) : null },
      columns.map((c) => h('td', { class: c.cls },
        c.cls === 'actions' ? h('div', { class: 'row-actions' }, c.cell(row)) : c.cell(row)))));
  }
  return h('div', { class: 'table-wrap' },
    h('table', { class: 'data' }, caption ? h('caption', { class: 'sr-only' }, caption) : null,
      thead, tbody));
}

/** A definition list of [term, value] pairs (values null are left out). */
export function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter((p) => p && p[1] !== null && p[1] !== undefined && p[1] !== '')
    .map(([k, v]) => h('div', null, h('dt', null, k), h('dd', null, v))));
}

/** A status badge; `kind` picks its colour. */
export function badge(text, kind = 'neutral', title) {
  return h('span', { class: `badge ${kind}`, title }, text);
}

/** A page section with a heading and toolbar. */
export function section(title, tools, ...content) {
  return h('section', { class: 'panel' },
    h('div', { class: 'panel-head' }, h('h2', null, title), h('div', { class: 'tools' }, tools)),
    content);
}

/** A small progress meter (used / limit). */
export function meter(used, limit, label) {
  const pct = limit > 0 ? Math.min(100, (used / limit) * 100) : 0;
  const fill = h('span', { class: ['meter-fill', pct >= 90 ? 'high' : pct >= 70 ? 'mid' : null] });
  fill.style.width = `${pct.toFixed(1)}%`;
  return h('span', {
    class: 'meter', role: 'meter', 'aria-valuemin': 0, 'aria-valuemax': limit, 'aria-valuenow': Math.min(used, limit), 'aria-label': label,
  }, fill);
}
