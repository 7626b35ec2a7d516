// A bar chart of a series, in HTML and CSS: bar heights set through the CSSOM (allowed by the CSP).

import { h } from './dom.js';

/**
 * points: [{label, value, tip}]; format(value) -> string. Returns a figure; the data itself is
 * also in a table near each chart, this is its picture.
 */
export function barChart(points, { format = String, title = 'Chart', labelEvery } = {}) {
  const max = Math.max(0, ...points.map((p) => p.value));
  const total = points.reduce((s, p) => s + p.value, 0);
  const every = labelEvery || Math.max(1, Math.ceil(points.length / 8));
  const bars = h('div', { class: 'bars' });
  const labels = h('div', { class: 'bar-labels', 'aria-hidden': 'true' });
  points.forEach((p, i) => {
    const fill = h('span', { class: 'bar-fill' });
    const pct = max > 0 ? (p.value / max) * 100 : 0;
    fill.style.height = `${p.value > 0 ? Math.max(pct, 1.5) : 0}%`;
    const tip = `${p.tip || p.label}: ${format(p.value)}`;
    bars.append(h('span', { class: 'bar', title: tip }, fill));
    labels.append(h('span', { class: 'bar-label' }, i % every === 0 ? p.label : ''));
  });
  return h('figure', {
    class: 'chart',
    role: 'img',
    'aria-label': `${title}: ${points.length} points, highest ${format(max)}, total ${format(total)}`,
  },
  h('div', { class: 'chart-axis', 'aria-hidden': 'true' },
    h('span', null, format(max)), h('span', null, format(0))),
  h('div', { class: 'chart-plot' }, bars, labels));
}
