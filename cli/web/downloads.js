// Downloads: the job's totals, a speed chart, and a row per file patched in
// place, a page of PAGE rows at a time; per file and bulk actions; the
// global limit and slow mode; keys.
import { $, act, api, ask, duration, el, name, parseRate, rate, rateText, say, set, size } from './util.js';
import { files, foldVerify, schedule, store } from './store.js';

export const PAGE = 200;   // rows on a page: 10,000 files stay smooth
const RUNNING = ['queued', 'downloading', 'paused', 'verifying'];  // what pause and cancel apply to
const rows = new Map();    // id -> <tr> on the current page
const selected = new Set(); // ids ticked
const speeds = [];         // the job's speed, one sample a second (the chart)
let page = 0, pageCount = 1;  // (pageCount: as last drawn)
let dragged = null;        // the id of the row being dragged

function shown() {
  const q = $('filter').value.trim().toLowerCase();
  const st = $('state-filter').value;
  const out = [];
  for (const f of files.values()) {
    if (st && f.state !== st) continue;
    if (q && !(f.path || f.url || '').toLowerCase().includes(q)) continue;
    out.push(f);
  }
  // Running first, then by priority (higher first), then as added.
  const rank = { downloading: 0, verifying: 0, paused: 1, queued: 2 };
  out.sort((a, b) => (rank[a.state] ?? 3) - (rank[b.state] ?? 3) || b.priority - a.priority || a.id - b.id);
  return out;
}
export function renderTotals() {
  const counts = {};
  let got = 0, total = 0, speed = 0;
  for (const f of files.values()) {
    counts[f.state] = (counts[f.state] || 0) + 1;
    if (f.state === 'removed') continue;
    got += (f.state === 'done' || f.state === 'skipped') ? (f.size || f.received || 0) : (f.received || 0);
    total += f.size || 0;
    speed += f.speed || 0;
  }
  const parts = Object.entries(counts).map(([k, v]) => `${v} ${k}`);
  const eta = speed ? duration((total - got) / speed) : '';
  $('totals').textContent = `${files.size} files: ${parts.join(', ') || 'none yet'} · ${size(got)} of ${size(total)}`
    + (speed ? ` · ${rate(speed)}` : '') + (eta ? ` · ETA ${eta}` : '');
}
// The chart: the job's speed (the sum of the files' speeds, as their
// progress events give them) once a second, the last SAMPLES seconds,
// drawn at the screen's own pixel density in the page's accent colour.
// Its time axis spans from the first sample (MIN_SPAN seconds at least)
// up to SAMPLES seconds: the first minute fills the chart, not a sliver.
const SAMPLES = 300, MIN_SPAN = 30;
export function sampleSpeed() {
  let s = 0;
  for (const f of files.values()) s += f.speed || 0;
  speeds.push(s);
  if (speeds.length > SAMPLES) speeds.shift();
  if (store.view === 'downloads') drawChart();
}
function drawChart() {
  const c = $('chart'), ratio = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(c.clientWidth * ratio)), h = Math.max(1, Math.round(c.clientHeight * ratio));
  if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
  const g = c.getContext('2d');
  const span = Math.min(SAMPLES, Math.max(MIN_SPAN, speeds.length));
  const peak = Math.max(0, ...speeds), top = Math.max(1, peak), step = w / (span - 1);
  const x = (i) => w - (speeds.length - 1 - i) * step, y = (v) => h - ratio - (v / top) * (h - 2 * ratio);
  g.clearRect(0, 0, w, h);
  g.strokeStyle = g.fillStyle = getComputedStyle(document.documentElement).getPropertyValue('--accent').trim() || '#1f6feb';
  g.lineWidth = 1.5 * ratio;
  g.beginPath();
  speeds.forEach((v, i) => (i ? g.lineTo(x(i), y(v)) : g.moveTo(x(i), y(v))));
  g.stroke();
  g.lineTo(x(speeds.length - 1), h);
  g.lineTo(x(0), h);
  g.globalAlpha = 0.15;
  g.fill();
  g.globalAlpha = 1;
  const now = speeds[speeds.length - 1] || 0;
  set($('chart-label'), peak ? `${rate(now) || '0 B/s'} now · peak ${rate(peak)} in the last ${Math.ceil(speeds.length / 60)} min` : 'idle');
}

export function renderRows() {
  const list = shown();
  const pages = Math.max(1, Math.ceil(list.length / PAGE));
  pageCount = pages;
  page = Math.min(page, pages - 1);
  const slice = list.slice(page * PAGE, page * PAGE + PAGE);
  $('page').textContent = `page ${page + 1} of ${pages} (${list.length} files)`;
  const body = $('rows');
  // A row that moves (re-sorted, or by keys) would lose the focus: it keeps it.
  const focused = document.activeElement && document.activeElement.closest ? document.activeElement.closest('#rows tr[data-id]') : null;
  const keep = new Set(slice.map((f) => f.id));
  for (const [id, tr] of rows) if (!keep.has(id)) { tr.remove(); rows.delete(id); }
  let prev = null;
  for (const f of slice) {
    let tr = rows.get(f.id);
    if (!tr) { tr = makeRow(f.id); rows.set(f.id, tr); }
    patchRow(tr, f);
    const want = prev ? prev.nextSibling : body.firstChild;
    if (want !== tr) body.insertBefore(tr, want);
    prev = tr;
  }
  if (focused && focused.isConnected && document.activeElement !== focused) focused.focus();
  $('selected-count').textContent = `${selected.size} selected`;
}
function cell(tr, i) { return tr.children[i]; }
function makeRow(id) {
  const box = el('input', { type: 'checkbox', 'aria-label': 'select' });
  box.addEventListener('change', () => { if (box.checked) selected.add(id); else selected.delete(id); schedule(); });
  const bar = el('span', { class: 'progress' }, el('span'));
  const tr = el('tr', { tabindex: '0', 'data-id': String(id) },
    el('td', {}, box), el('td', { class: 'name' }, el('span', { class: 'n' }), el('span', { class: 'err' })),
    el('td'), el('td', {}, bar, el('span', { class: 'pct' })), el('td'), el('td'), el('td'), el('td'),
    el('td', { class: 'actions' },
      el('button', { type: 'button', 'data-act': 'toggle' }), ' ',
      el('button', { type: 'button', 'data-act': 'up', title: 'priority up', text: '+' }), ' ',
      el('button', { type: 'button', 'data-act': 'down', title: 'priority down', text: '−' }), ' ',
      el('button', { type: 'button', 'data-act': 'limit', text: 'limit' }), ' ',
      el('button', { type: 'button', 'data-act': 'cancel', text: 'cancel' }), ' ',
      el('button', { type: 'button', 'data-act': 'retry', text: 'retry' }), ' ',
      el('button', { type: 'button', 'data-act': 'verify', text: 'verify', title: 'hash it again against the journal' })));
  tr.addEventListener('click', (e) => { const b = e.target.closest('button'); if (b) rowAction(id, b.dataset.act); });
  tr.addEventListener('dragstart', (e) => { dragged = id; e.dataTransfer.effectAllowed = 'move'; e.dataTransfer.setData('text/plain', String(id)); });
  tr.addEventListener('dragend', () => { dragged = null; for (const r of rows.values()) r.classList.remove('drop-above'); });
  tr.addEventListener('dragover', (e) => { if (dragged !== null && dragged !== id) { e.preventDefault(); tr.classList.add('drop-above'); } });
  tr.addEventListener('dragleave', () => tr.classList.remove('drop-above'));
  tr.addEventListener('drop', (e) => {
    e.preventDefault();
    tr.classList.remove('drop-above');
    if (dragged !== null && dragged !== id) reorder(dragged, id, 'above');
  });
  return tr;
}
function patchRow(tr, f) {
  const running = RUNNING.includes(f.state);
  const failed = f.state === 'failed' || f.state === 'hash_mismatch';
  tr.className = `state-${f.state}` + (selected.has(f.id) ? ' selected' : '');
  tr.draggable = running;  // (dragged above another: started before it)
  cell(tr, 0).firstChild.checked = selected.has(f.id);
  set(cell(tr, 1).querySelector('.n'), name(f));
  cell(tr, 1).title = f.path || f.url || '';
  set(cell(tr, 1).querySelector('.err'), f.error || '');
  set(cell(tr, 2), f.paused && running ? 'paused' : f.state);
  const got = (f.state === 'done' || f.state === 'skipped') ? (f.size || f.received) : (f.received || 0);
  const pct = f.size ? Math.min(100, Math.floor(100 * got / f.size)) : 0;
  cell(tr, 3).querySelector('.progress > span').style.width = `${pct}%`;
  set(cell(tr, 3).querySelector('.pct'), ` ${size(got)} / ${size(f.size)}`);
  set(cell(tr, 4), rate(f.speed));
  set(cell(tr, 5), f.speed && f.size ? duration((f.size - got) / f.speed) : '');
  set(cell(tr, 6), f.max_speed ? rate(f.max_speed) : '');
  set(cell(tr, 7), String(f.priority ?? 0));
  const [toggle, up, down, limit, cancel, retry, verify] = cell(tr, 8).querySelectorAll('button');
  set(toggle, f.paused ? 'resume' : 'pause');
  for (const b of [toggle, up, down, limit, cancel]) b.hidden = !running;
  retry.hidden = !failed;
  verify.hidden = !(f.state === 'done' || f.state === 'skipped');
}
async function rowAction(id, what) {
  const f = files.get(id);
  if (!f) return;
  if (what === 'toggle') return act(() => api('PATCH', `/files/${id}`, { paused: !f.paused }));
  if (what === 'up' || what === 'down') return act(() => api('PATCH', `/files/${id}`, { priority: (f.priority || 0) + (what === 'up' ? 1 : -1) }));
  if (what === 'limit') {
    const a = await ask(`Speed limit for ${name(f)} (e.g. 512K, 2M; empty: none)`, { input: f.max_speed ? `${Math.round(f.max_speed / 1024)}K` : '' });
    if (a) return act(() => api('PATCH', `/files/${id}`, { max_speed: parseRate(a.value) }));
  }
  if (what === 'cancel') {
    const a = await ask(`Cancel ${name(f)}?`, { keep: true });
    if (a) return act(() => api('DELETE', `/files/${id}?keep_partial=${a.keep}`));
  }
  if (what === 'retry') return retryFailed([id]);
  if (what === 'verify') {
    const r = await act(() => api('POST', '/verify', { ids: [id] }));
    if (r) foldVerify(r);
    const o = r && r.files[0];
    if (o) say(`${name(f)}: ${o.result}` + (o.detail ? ` (${o.detail})` : ''), o.result !== 'ok');
  }
}
// Drag (or Alt+Up/Down): a file goes above (or below) another by taking
// a priority one past that file's; higher starts first (PATCH /files/{id}).
const MAX_PRIORITY = 2 ** 31 - 1, MIN_PRIORITY = -(2 ** 31);
export function priorityFor(moving, other, where) {
  const p = other.priority || 0, own = moving.priority || 0;
  if (where === 'above') return own > p ? null : Math.min(MAX_PRIORITY, p + 1);
  return own < p ? null : Math.max(MIN_PRIORITY, p - 1);
}
async function reorder(id, otherId, where) {
  const f = files.get(id), other = files.get(otherId);
  if (!f || !other) return;
  const priority = priorityFor(f, other, where);
  if (priority === null) return;
  const r = await act(() => api('PATCH', `/files/${id}`, { priority }));
  if (!r) return;
  files.set(id, { ...f, priority: r.priority });  // (its 'changed' event says the same)
  schedule();
}
async function bulk(what) {
  const ids = [...selected].filter((id) => files.has(id));
  if (!ids.length) return say('select files first (the boxes on the left)', true);
  let body = null;
  if (what === 'pause' || what === 'resume') body = { ids, paused: what === 'pause' };
  if (what === 'up' || what === 'down') {
    const top = Math.max(...ids.map((i) => files.get(i).priority || 0)), low = Math.min(...ids.map((i) => files.get(i).priority || 0));
    body = { ids, priority: what === 'up' ? top + 1 : low - 1 };
  }
  if (what === 'limit') {
    const a = await ask(`Speed limit for each of ${ids.length} files (e.g. 512K; empty: none)`, { input: '' });
    if (!a) return;
    try { body = { ids, max_speed: parseRate(a.value) }; } catch (e) { return say(e.message, true); }
  }
  if (what === 'cancel') {
    const a = await ask(`Cancel ${ids.length} files?`, { keep: true });
    if (!a) return;
    body = { ids, cancel: true, keep_partial: a.keep };
  }
  const r = await act(() => api('POST', '/files/bulk', body));
  if (r) say(`${r.done.length} changed` + (r.refused.length ? `, ${r.refused.length} not (${r.refused[0].error})` : ''), r.refused.length > 0);
}
export async function retryFailed(ids) {
  const r = await act(() => api('POST', '/retry', ids ? { ids } : {}));
  if (!r) return;
  if (r.jobs.length) say(`${r.jobs.length} job(s) fetching the failed files again`);
  else say('nothing to fetch again now (a file whose job still runs is fetched again once that job ends)', true);
}
// The global limit and slow mode as the service keeps them (its limits:
// GET /service, PATCH /limits's answer, the limits event), so a reload or
// a second page shows the same.
// While a change of slow mode is on its way, its box shows what was asked:
// an earlier answer or limits event arriving meanwhile would untick it.
let slowAsked = false;
export function showLimits() {
  const l = store.limits, input = $('global-limit'), slowRate = $('slow-rate');
  if (document.activeElement !== input) input.value = rateText(l.max_speed);
  if (!slowAsked) $('slow-mode').checked = !!l.slow;
  if (l.slow && l.max_speed && document.activeElement !== slowRate) slowRate.value = rateText(l.max_speed);
}
// Slow mode: on, the slow limit now (the service remembers the one before);
// off, the service puts that one back.
async function slowMode(on) {
  let body = { slow: false };
  if (on) {
    try { body = { slow: true, max_speed: parseRate($('slow-rate').value) }; } catch (e) { showLimits(); return say(e.message, true); }
    if (!body.max_speed) { showLimits(); return say('give slow mode a limit first (e.g. 256K)', true); }
  }
  slowAsked = true;
  let r;
  try { r = await act(() => api('PATCH', '/limits', body)); } finally { slowAsked = false; }
  if (r) store.limits = r;
  showLimits();
}
export function keys(e) {
  if (store.view !== 'downloads' || e.target.closest('input, textarea, select, dialog, button')) return;
  const tr = e.target.closest('tr[data-id]');
  if (!tr) return;
  const id = Number(tr.dataset.id);
  if (e.altKey && (e.key === 'ArrowUp' || e.key === 'ArrowDown')) {
    e.preventDefault();
    const other = e.key === 'ArrowUp' ? tr.previousElementSibling : tr.nextElementSibling;
    if (other && files.has(id)) reorder(id, Number(other.dataset.id), e.key === 'ArrowUp' ? 'above' : 'below');
    return;
  }
  if (e.key === 'ArrowDown' && tr.nextElementSibling) { e.preventDefault(); tr.nextElementSibling.focus(); }
  if (e.key === 'ArrowUp' && tr.previousElementSibling) { e.preventDefault(); tr.previousElementSibling.focus(); }
  if (e.key === ' ' || e.key === 'Delete') {
    e.preventDefault();
    const f = files.get(id), what = e.key === ' ' ? 'pause or resume' : 'cancel';
    if (f && !RUNNING.includes(f.state)) return say(`${name(f)} is ${f.state}: nothing to ${what}`);
    rowAction(id, e.key === ' ' ? 'toggle' : 'cancel');
  }
}


export function wireDownloads() {
  for (const b of document.querySelectorAll('[data-bulk]')) b.addEventListener('click', () => bulk(b.dataset.bulk));
  $('filter').addEventListener('input', () => { page = 0; schedule(); });
  $('state-filter').addEventListener('change', () => { page = 0; schedule(); });
  $('prev').addEventListener('click', () => { page = Math.max(0, page - 1); schedule(); });
  $('next').addEventListener('click', () => { page = Math.min(page + 1, pageCount - 1); schedule(); });
  $('select-all').addEventListener('change', (e) => {
    const ids = shown().slice(page * PAGE, page * PAGE + PAGE).map((f) => f.id);
    for (const id of ids) { if (e.target.checked) selected.add(id); else selected.delete(id); }
    schedule();
  });
  $('limits').addEventListener('submit', async (e) => {
    e.preventDefault();
    let v;
    try { v = parseRate($('global-limit').value); } catch (err) { return say(err.message, true); }
    const r = await act(() => api('PATCH', '/limits', { max_speed: v }));
    if (r) { store.limits = r; say(v ? `limit set: ${rate(v)}` : 'no limit'); }
    $('global-limit').blur();
    showLimits();
  });
  $('slow-mode').addEventListener('change', (e) => slowMode(e.target.checked));
  $('retry-failed').addEventListener('click', () => retryFailed());
  $('rows').addEventListener('keydown', keys);
}
