// Pricing: import a LiteLLM price file.

import { post } from './api.js';
import { h, field, messageLine, busy } from './dom.js';
import { fmtInt } from './format.js';

const MAX_BYTES = 64 * 1024 * 1024;

export async function render(main) {
  const msg = messageLine();
  const file = h('input', { type: 'file', name: 'file', accept: '.json,application/json' });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Import prices');
  const form = h('form', { class: 'form narrow', novalidate: true },
    field('LiteLLM price file', file, 'model_prices_and_context_window.json from the LiteLLM repository. Its prices (with their _above_200k_tokens prices) apply at once, on every instance sharing the store, and are kept across restarts.'),
    h('div', { class: 'form-buttons' }, submit), msg.el);
  main.append(h('div', { class: 'page-head' }, h('h1', null, 'Pricing')),
    h('section', { class: 'panel' },
      h('p', null, 'Switchyard ships prices for current Anthropic, OpenAI, Gemini, DeepSeek, embedding and image models (assets/prices.toml). Prices set in the configuration ([pricing.models]) win over imported ones; a model nothing prices is charged the configured default price. A file that prices no model is refused (it would take the imported prices away).'),
      form));

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const f = file.files && file.files[0];
    if (!f) {
      msg.error('Choose a file first.');
      return;
    }
    if (f.size > MAX_BYTES) {
      msg.error(`The file is ${fmtInt(f.size)} bytes; that is not a price file.`);
      return;
    }
    busy(submit, msg, async () => {
      const text = await f.text();
      try {
        JSON.parse(text);
      } catch (err) {
        throw new Error(`${f.name} is not JSON: ${err.message}`);
      }
      const res = await post('pricing/import', text);
      const n = res.imported_models;
      msg.ok(`Imported prices for ${fmtInt(n)} model${n === 1 ? '' : 's'} from ${f.name}.`);
    });
  });
}
