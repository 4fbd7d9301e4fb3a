// Helpers of the page (README, "The web page"): sizes as the CLI shows
// them (1024 units), elements built with text only, and the one function
// that talks to the API.  Text from a server, a hub or a file name is set
// with textContent, never as HTML.
export const $ = (id) => document.getElementById(id);
const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
export function size(n) {
  if (n === null || n === undefined) return '?';
  let v = n;
  for (const u of UNITS) {
    if (v < 1024 || u === 'TiB') return u === 'B' ? `${Math.floor(v)} B` : `${tenths(v)} ${u}`;
    v /= 1024;
  }
  return '?';
}
// One decimal as Python's format rounds it (cli/ui/fmt.py): a tie goes to
// the even digit (1280 B is "1.2 KiB" there; toFixed would say 1.3).
function tenths(v) {
  const t = v * 10, low = Math.floor(t);
  const n = t - low === 0.5 ? (low % 2 === 0 ? low : low + 1) : Math.round(t);
  return (n / 10).toFixed(1);
}
export const rate = (bps) => (bps ? `${size(bps)}/s` : '');
export function duration(s) {
  if (!isFinite(s) || s < 0) return '';
  s = Math.round(s);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor(s % 3600 / 60)).padStart(2, '0')} min`;
}
// "40M", "512K", "1.5G", "123" -> bytes/s (1024-based, as segdl limit); "" -> 0
export function parseRate(text) {
  const t = text.trim();
  if (!t || t === '0') return 0;
  const m = /^(\d+(?:\.\d+)?)\s*([KMG]?)(?:i?B)?(?:\/s)?$/i.exec(t);
  if (!m) throw new Error(`not a rate: ${t} (use e.g. 512K, 40M)`);
  return Math.floor(parseFloat(m[1]) * { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[m[2].toUpperCase()]);
}
// bytes/s -> what parseRate reads back: "20M", "256K", "" for none
export function rateText(n) {
  if (!n) return '';
  if (n % 1024 ** 2 === 0) return `${n / 1024 ** 2}M`;
  return n % 1024 === 0 ? `${n / 1024}K` : String(n);  // (as it is: rounded, a small limit would read back as none)
}
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'text') e.textContent = v;
    else if (k === 'on') for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}
export const name = (f) => (f.path ? f.path.split('/').pop() : f.url);
export function say(text, bad = false) {
  const m = $('message');
  m.textContent = text;
  m.className = bad ? 'bad' : '';
  m.hidden = !text;
}

// The page's session cookie goes with every request (same origin only);
// a change also carries X-Segdl-Request, which no form can send.
export async function api(method, path, body) {
  const opts = { method, credentials: 'same-origin', headers: {} };
  if (method !== 'GET') opts.headers['X-Segdl-Request'] = '1';
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  const text = await r.text();
  let data = {};
  try { data = text ? JSON.parse(text) : {}; } catch (e) { data = { error: text.slice(0, 300) }; }
  if (!r.ok) {
    const err = new Error(data.error || `HTTP ${r.status}`);
    err.status = r.status;
    throw err;
  }
  return data;
}
export async function act(fn) {
  try { return await fn(); } catch (e) { say(e.message, true); return null; }
}
export function set(node, text) { if (node.textContent !== text) node.textContent = text; }

// A question in the page's own dialog: resolves to {value, keep} or null.
export function ask(text, { input = null, keep = false } = {}) {
  const d = $('ask');
  $('ask-text').textContent = text;
  $('ask-input').hidden = input === null;
  $('ask-input').value = input ?? '';
  $('ask-keep-label').hidden = !keep;
  $('ask-keep').checked = false;
  d.returnValue = '';
  d.showModal();
  if (input !== null) $('ask-input').focus();
  return new Promise((resolve) => d.addEventListener('close', () => resolve(
    d.returnValue === 'ok' ? { value: $('ask-input').value, keep: $('ask-keep').checked } : null), { once: true }));
}
