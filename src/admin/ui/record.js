// A record's page (a key's, an account's): its breadcrumbs, then its head and body, built aside
// by the view and shown at once (a refresh does not flicker), the latest load only, with the
// names of every key and account; and its recent requests.

import { directory } from './api.js';
import { h, clear, messageLine, latestOnly, section } from './dom.js';
import { requestsTable } from './requests.js';

/**
 * spec: { section: 'Keys', href: '#/keys', id, what: 'key', fetch: () => Promise<record>,
 *   paint: async (record, dir, { head, body, msg, live, reload }) => void }.
 * `paint` fills `head` and `body`; it may stop early when `live()` turns false. `reload` loads
 * and shows the record again and resolves to null, or what failed. Resolves once shown.
 */
export async function recordPage(main, ctx, spec) {
  const msg = messageLine();
  const headBox = h('div', { class: 'page-head' });
  const bodyBox = h('div', { class: 'detail' });
  main.append(
    h('p', { class: 'crumbs' }, h('a', { href: spec.href }, spec.section), ' / ', h('span', { class: 'mono' }, spec.id)),
    headBox, msg.el, bodyBox);
  const begin = latestOnly(ctx);

  async function load() {
    const live = begin();
    let record;
    let dir;
    try {
      [record, dir] = await Promise.all([spec.fetch(), directory()]);
    } catch (e) {
      const problem = e.status === 404 ? `No ${spec.what} with id ${spec.id}.` : `Could not load the ${spec.what}: ${e.message}`;
      if (live()) msg.error(problem);
      return problem;
    }
    if (!live()) return null;
    const head = h('div', { class: 'page-head' });
    const body = h('div', { class: 'detail' });
    await spec.paint(record, dir, { head, body, msg, live, reload: load });
    if (!live()) return null;
    headBox.replaceChildren(...head.childNodes);
    bodyBox.replaceChildren(...body.childNodes);
    if (dir.error) msg.error(dir.error);
    else msg.clearError();
    return dir.error;
  }
  await load();
}

/**
 * Appends a "Recent requests" section to `body`: the rows `fetchRows` resolves to, shown with
 * `options` (requestsTable's); `tool` goes in the section's head (a link, a note).
 */
export async function recentRequests(body, dir, live, fetchRows, tool, options) {
  const recent = h('div', null, h('p', { class: 'muted' }, 'Loading...'));
  body.append(section('Recent requests', tool, recent));
  try {
    const rows = await fetchRows();
    if (!live()) return;
    clear(recent).append(requestsTable(rows, dir, options));
  } catch (e) {
    if (!live()) return;
    clear(recent).append(h('p', { class: 'message error' }, e.message));
  }
}
