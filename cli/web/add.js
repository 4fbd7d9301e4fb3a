// Add: a list (URLs, a hub reference, an aria2 list, a manifest; pasted,
// dropped or picked) is reviewed by the service (POST /review: sizes, here
// or not), the user picks, then the job starts with just those (select).
import { $, act, api, ask, el, say, size } from './util.js';
import { precisionOf, tally, typeOf } from './formats.js';

let reviewBody = null, reviewed = null, asked = 0;
const picked = new Set();
// No review: nothing shown, nothing that Start could launch (a refused
// review must not leave the previous one's table and job behind).
function forget() {
  reviewBody = null; reviewed = null;
  picked.clear();
  $('review-rows').replaceChildren();
  $('review-total').textContent = '';
  $('review').hidden = true;
}
function bodyOf(text) {
  const t = text.trim();
  if (!t) throw new Error('paste URLs, a hub reference, an aria2 list or a manifest first');
  const extra = {};
  if ($('add-dest').value.trim()) extra.dest = $('add-dest').value.trim();
  if ($('add-collection').value.trim()) extra.collection = $('add-collection').value.trim();
  if (t.startsWith('{')) {
    let m;
    try { m = JSON.parse(t); } catch (e) { throw new Error(`the manifest is not JSON: ${e.message}`); }
    return { manifest: m, ...extra };
  }
  const lines = t.split(/\r?\n/);
  if (lines.some((l) => /^[ \t]+\S+=/.test(l))) return { aria2: t + '\n', ...extra };
  const words = t.split(/\s+/).filter(Boolean);
  const refs = words.filter((w) => /^(hf|civitai):\/\//.test(w) || /^https?:\/\/(www\.)?civitai\.com\//.test(w));
  if (refs.length > 1) throw new Error('one hub reference at a time');
  if (refs.length === 1 && words.length === 1) return { ref: refs[0], ...extra };
  if (refs.length) throw new Error('a hub reference goes alone, without other URLs');
  return { urls: words, ...extra };
}
async function review() {
  const mine = ++asked;  // (only the newest review's answer counts)
  forget();
  let body;
  try { body = bodyOf($('add-text').value); } catch (e) { return say(e.message, true); }
  let r;
  try { r = await api('POST', '/review', body); } catch (e) { if (mine === asked) say(e.message, true); return; }
  if (mine !== asked) return;
  say('');
  reviewBody = body; reviewed = r;
  picked.clear();
  for (const f of r.files) picked.add(f.index);
  fillFilters();
  renderReview();
  $('review').hidden = false;
}
// The type and precision filters offer what this review's files have, with counts.
function fillFilters() {
  for (const [id, fn, all] of [['type-filter', (f) => typeOf(f.path), 'any type'], ['precision-filter', (f) => precisionOf(f.path), 'any precision']]) {
    const sel = $(id);
    sel.replaceChildren(el('option', { value: '', text: all }),
      ...tally(reviewed.files, fn).map(([v, n]) => el('option', { value: v, text: `${v} (${n})` })));
  }
}
function renderReview() {
  const body = $('review-rows');
  body.replaceChildren();
  for (const f of reviewed.files) {
    const box = el('input', { type: 'checkbox', 'aria-label': `take ${f.path}` });
    box.checked = picked.has(f.index);
    box.addEventListener('change', () => { if (box.checked) picked.add(f.index); else picked.delete(f.index); reviewTotals(); });
    const here = { here: 'here', partial: `partly here (${size(f.done)})`, missing: 'not here', changed: 'changed upstream', corrupt: 'corrupt',
      unavailable: `unavailable: ${f.error || ''}` }[f.state] || f.state;
    body.append(el('tr', { 'data-path': f.path }, el('td', {}, box), el('td', { class: 'name', text: f.path, title: f.url }),
      el('td', { text: typeOf(f.path) }), el('td', { text: size(f.size) }), el('td', { class: f.state, text: here }),
      el('td', { text: precisionOf(f.path) })));
  }
  reviewTotals();
}
// What the picked files add up to: {n, bytes, unknown, need (bytes still to fetch), short (need > free)}.
function totals() {
  let n = 0, bytes = 0, unknown = 0, need = 0;
  for (const f of reviewed.files) {
    if (!picked.has(f.index)) continue;
    n++;
    if (f.size === null) unknown++; else { bytes += f.size; if (f.state !== 'here') need += Math.max(0, f.size - (f.done || 0)); }
  }
  return { n, bytes, unknown, need, short: reviewed.free !== null && need > reviewed.free };
}
function reviewTotals() {
  const { n, bytes, unknown, need, short } = totals();
  const free = reviewed.free;
  $('review-total').textContent = `${n} of ${reviewed.files.length} files selected · ${size(bytes)}`
    + (unknown ? ` (+${unknown} of unknown size)` : '') + ` · to fetch ${size(need)} · free in ${reviewed.dest}: ${size(free)}`
    + (short ? ' · NOT ENOUGH SPACE' : '');
  $('review-total').classList.toggle('bad', short);
}
function pick(fn) { picked.clear(); for (const f of reviewed.files) if (fn(f)) picked.add(f.index); renderReview(); }
function globRe(g) { return new RegExp('^' + g.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.') + '$'); }
async function start(show) {
  if (!reviewed) return say('review a list first', true);
  if (!picked.size) return say('nothing selected', true);
  const { need, short } = totals();
  if (short) {  // (the sizes come from the list: it may be wrong, so the user decides)
    const a = await ask(`Not enough space in ${reviewed.dest}: ${size(need)} to fetch, ${size(reviewed.free)} free. Start anyway?`);
    if (!a) return say(`not started: not enough space in ${reviewed.dest}`, true);
  }
  const body = { ...reviewBody };
  if (picked.size !== reviewed.files.length) body.select = [...picked].sort((a, b) => a - b);
  $('start').disabled = true;  // (a second click while the first is on its way starts no second job)
  let r;
  try { r = await act(() => api('POST', '/jobs', body)); } finally { $('start').disabled = false; }
  if (!r) return;
  say(`job ${r.job} started: ${r.files.length} file(s)`);
  forget();
  show('downloads');
}
async function readFile(file) {
  if (file.size > 900 * 1024) return say(`${file.name} is larger than the API takes in one request (1 MiB)`, true);
  $('add-text').value = await file.text();
  asked++;
  forget();
}

export function wireAdd(show) {
  $('add-form').addEventListener('submit', (e) => { e.preventDefault(); review(); });
  $('sel-all').addEventListener('click', () => pick(() => true));
  $('sel-none').addEventListener('click', () => pick(() => false));
  $('sel-missing').addEventListener('click', () => pick((f) => f.state !== 'here' && f.state !== 'unavailable'));
  $('glob-apply').addEventListener('click', () => {
    const re = globRe($('glob').value.trim() || '*'), type = $('type-filter').value, precision = $('precision-filter').value;
    pick((f) => re.test(f.path) && (!type || typeOf(f.path) === type) && (!precision || precisionOf(f.path) === precision));
  });
  $('start').addEventListener('click', () => start(show));
  // A review is of the list and folder it was asked for: editing them
  // takes it away (Start would launch what is no longer shown).
  for (const id of ['add-text', 'add-dest', 'add-collection']) {
    $(id).addEventListener('input', () => {
      const shown = reviewed !== null;
      asked++;  // (a review still on its way is of the old list: its answer is dropped)
      forget();
      if (shown) say('the list changed: review it again');
    });
  }
  $('add-file').addEventListener('change', (e) => { if (e.target.files[0]) readFile(e.target.files[0]); });
  const drop = $('drop');
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => { e.preventDefault(); drop.classList.remove('over'); if (e.dataTransfer.files[0]) readFile(e.dataTransfer.files[0]); });
}
