// segdl serve's page: a thin door onto the API (README, "The web page").
// Everything shown comes from the API's answers and its event stream;
// the page keeps no state of its own beyond what is on screen.  Text from
// a server, a hub or a file name is set with textContent, never as HTML.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const files = new Map();   // id -> file, as GET /files and the events say
  const jobs = new Map();    // id -> job
  const rows = new Map();    // id -> <tr> on the current page
  const selected = new Set();     // ids ticked in Downloads
  const libSelected = new Set();  // ids ticked in Library
  const PAGE = 200;          // rows on a page: 10,000 files stay smooth
  const RENDER_EVERY = 250;  // ms between renders, however fast events come
  let limits = { max_speed: 0, max_file_speed: 0 };
  let page = 0, dirty = false, stream = null, view = 'downloads', libTab = 'here';
  const speeds = [];         // the job's speed, one sample a second (chart)
  const verified = new Map(); // id -> result of the last re-verify (this page only, also recorded in the journal)

  // ------------------------------------------------------------ helpers
  const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  function size(n) {
    if (n === null || n === undefined) return '?';
    let v = n;
    for (const u of UNITS) {
      if (v < 1024 || u === 'TiB') return u === 'B' ? `${Math.floor(v)} B` : `${v.toFixed(1)} ${u}`;
      v /= 1024;
    }
    return '?';
  }
  const rate = (bps) => (bps ? `${size(bps)}/s` : '');
  function duration(s) {
    if (!isFinite(s) || s < 0) return '';
    s = Math.round(s);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
    return `${Math.floor(s / 3600)} h ${String(Math.floor(s % 3600 / 60)).padStart(2, '0')} min`;
  }
  // "40M", "512K", "1.5G", "123" -> bytes/s (1024-based, as segdl limit); "" -> 0
  function parseRate(text) {
    const t = text.trim();
    if (!t || t === '0') return 0;
    const m = /^(\d+(?:\.\d+)?)\s*([KMG]?)(?:i?B)?(?:\/s)?$/i.exec(t);
    if (!m) throw new Error(`not a rate: ${t} (use e.g. 512K, 40M)`);
    return Math.floor(parseFloat(m[1]) * { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[m[2].toUpperCase()]);
  }
  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === 'text') e.textContent = v;
      else if (k === 'on') for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
      else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c);
    return e;
  }
  const name = (f) => (f.path ? f.path.split('/').pop() : f.url);
  function say(text, bad = false) {
    const m = $('message');
    m.textContent = text;
    m.className = bad ? 'bad' : '';
    m.hidden = !text;
  }

  // The page's session cookie goes with every request (same origin only);
  // a change also carries X-Segdl-Request, which no form can send.
  async function api(method, path, body) {
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
  async function act(fn) {
    try { return await fn(); } catch (e) { say(e.message, true); return null; }
  }

  // ------------------------------------------------------------ state from the API
  async function load() {
    const svc = await api('GET', '/service');
    limits = svc.limits;
    $('root').textContent = svc.roots.join(', ');
    showLimits();
    const js = await api('GET', '/jobs');
    for (const j of js.jobs) jobs.set(j.id, j);
    let after = 0, since = Math.min(svc.seq, js.seq);
    for (let n = 0; n < 1000 && after !== null; n++) {
      const p = await api('GET', `/files?after=${after}&limit=10000`);
      since = Math.min(since, p.seq);
      for (const f of p.files) files.set(f.id, f);
      after = p.next;
    }
    connect(since);
    schedule();
  }
  async function reloadJobs() {
    const js = await api('GET', '/jobs');
    for (const j of js.jobs) jobs.set(j.id, j);
    schedule();
  }

  const KINDS = ['added', 'state', 'progress', 'finished', 'failed', 'removed', 'changed', 'job_added', 'job_ended', 'limits'];
  function connect(since) {
    stream = new EventSource(`/events?since=${since}`);
    stream.onopen = () => { $('conn').textContent = 'live'; $('conn').className = 'conn live'; };
    stream.onerror = () => { $('conn').textContent = 'reconnecting…'; $('conn').className = 'conn'; };
    for (const kind of KINDS) stream.addEventListener(kind, (m) => fold(JSON.parse(m.data)));
  }
  // One event into the files and jobs it changes (the README's vocabulary).
  function fold(ev) {
    if (ev.kind === 'limits') { limits = { max_speed: ev.max_speed, max_file_speed: ev.max_file_speed }; showLimits(); return; }
    if (ev.kind === 'job_added' || ev.kind === 'job_ended') {
      if (ev.kind === 'job_ended') notify(ev);
      reloadJobs();
      return;
    }
    if (!ev.file) return;
    const f = files.get(ev.file) || { id: ev.file, received: 0, bytes_done: 0, speed: 0, priority: 0, max_speed: 0, paused: false };
    for (const k of ['path', 'url', 'state', 'size', 'received', 'speed', 'paused', 'priority', 'max_speed', 'error', 'blake3']) {
      if (k in ev) f[k] = ev[k];
    }
    if (ev.job) f.job = ev.job;
    if (f.state !== 'downloading') f.speed = 0;
    if (ev.kind === 'finished') f.error = null;
    files.set(f.id, f);
    schedule();
  }
  function notify(ev) {
    if (!('Notification' in window) || Notification.permission !== 'granted') return;
    const what = ev.collection || `job ${ev.job}`;
    new Notification(`segdl: ${what} ended`, { body: `${ev.files} file(s), ${ev.failed} failed` });
  }

  // ------------------------------------------------------------ rendering (throttled)
  function schedule() { dirty = true; }
  setInterval(() => { if (dirty) { dirty = false; render(); } }, RENDER_EVERY);
  setInterval(sampleSpeed, 1000);

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
  function render() {
    renderTotals();
    if (view === 'downloads') renderRows();
    if (view === 'library') renderLibrary();
  }
  function renderTotals() {
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
  function sampleSpeed() {
    let s = 0;
    for (const f of files.values()) s += f.speed || 0;
    speeds.push(s);
    if (speeds.length > 300) speeds.shift();
    const c = $('chart');
    if (!c || view !== 'downloads') return;
    const g = c.getContext('2d');
    const w = c.width, h = c.height, top = Math.max(1, ...speeds);
    g.clearRect(0, 0, w, h);
    g.strokeStyle = getComputedStyle(document.documentElement).getPropertyValue('--accent') || '#1f6feb';
    g.beginPath();
    speeds.forEach((v, i) => {
      const x = w - (speeds.length - 1 - i) * (w / 300), y = h - 2 - (v / top) * (h - 4);
      if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
    });
    g.stroke();
  }

  function renderRows() {
    const list = shown();
    const pages = Math.max(1, Math.ceil(list.length / PAGE));
    page = Math.min(page, pages - 1);
    const slice = list.slice(page * PAGE, page * PAGE + PAGE);
    $('page').textContent = `page ${page + 1} of ${pages} (${list.length} files)`;
    const body = $('rows');
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
        el('button', { type: 'button', 'data-act': 'retry', text: 'retry' })));
    tr.addEventListener('click', (e) => { const b = e.target.closest('button'); if (b) rowAction(id, b.dataset.act); });
    return tr;
  }
  function set(node, text) { if (node.textContent !== text) node.textContent = text; }
  function patchRow(tr, f) {
    const running = ['queued', 'downloading', 'paused', 'verifying'].includes(f.state);
    const failed = f.state === 'failed' || f.state === 'hash_mismatch';
    tr.className = `state-${f.state}` + (selected.has(f.id) ? ' selected' : '');
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
    const [toggle, up, down, limit, cancel, retry] = cell(tr, 8).querySelectorAll('button');
    set(toggle, f.paused ? 'resume' : 'pause');
    for (const b of [toggle, up, down, limit, cancel]) b.hidden = !running;
    retry.hidden = !failed;
  }

  // ------------------------------------------------------------ actions
  function ask(text, { input = null, keep = false } = {}) {
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
  async function retryFailed(ids) {
    const r = await act(() => api('POST', '/retry', ids ? { ids } : {}));
    if (!r) return;
    if (r.jobs.length) say(`${r.jobs.length} job(s) fetching the failed files again`);
    else say('nothing to fetch again now (a file whose job still runs is fetched again once that job ends)', true);
  }
  function showLimits() {
    const input = $('global-limit');
    if (document.activeElement !== input) input.value = limits.max_speed ? `${Math.round(limits.max_speed / 1024)}K` : '';
  }
  // Slow mode: the slow limit now; off, the limit before it (kept in the
  // journal's event history, so no state of the page's own: see README).
  let beforeSlow = null;
  async function slowMode(on) {
    let r = null;
    if (on) {
      let slow;
      try { slow = parseRate($('slow-rate').value); } catch (e) { $('slow-mode').checked = false; return say(e.message, true); }
      beforeSlow = limits.max_speed;
      r = await act(() => api('PATCH', '/limits', { max_speed: slow }));
      if (!r) { $('slow-mode').checked = false; beforeSlow = null; }
    } else {
      r = await act(() => api('PATCH', '/limits', { max_speed: beforeSlow ?? 0 }));
      beforeSlow = null;
    }
    if (r) { limits = r; showLimits(); }
  }

  // ------------------------------------------------------------ add: review, then start
  let reviewBody = null, reviewed = null;
  const picked = new Set();
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
    let body;
    try { body = bodyOf($('add-text').value); } catch (e) { return say(e.message, true); }
    const r = await act(() => api('POST', '/review', body));
    if (!r) return;
    say('');
    reviewBody = body; reviewed = r;
    picked.clear();
    for (const f of r.files) picked.add(f.index);
    renderReview();
    $('review').hidden = false;
  }
  function ext(path) { const m = /\.([A-Za-z0-9]{1,12})$/.exec(path || ''); return m ? m[1].toLowerCase() : ''; }
  function renderReview() {
    const body = $('review-rows');
    body.replaceChildren();
    for (const f of reviewed.files) {
      const box = el('input', { type: 'checkbox', 'aria-label': `take ${f.path}` });
      box.checked = picked.has(f.index);
      box.addEventListener('change', () => { if (box.checked) picked.add(f.index); else picked.delete(f.index); reviewTotals(); });
      const here = { here: 'here', partial: `partly here (${size(f.done)})`, missing: 'not here', changed: 'changed upstream', corrupt: 'corrupt' }[f.state] || f.state;
      body.append(el('tr', { 'data-path': f.path }, el('td', {}, box), el('td', { class: 'name', text: f.path, title: f.url }),
        el('td', { text: ext(f.path) }), el('td', { text: size(f.size) }), el('td', { class: f.state, text: here })));
    }
    reviewTotals();
  }
  function reviewTotals() {
    let n = 0, bytes = 0, unknown = 0, need = 0;
    for (const f of reviewed.files) {
      if (!picked.has(f.index)) continue;
      n++;
      if (f.size === null) unknown++; else { bytes += f.size; if (f.state !== 'here') need += f.size - (f.done || 0); }
    }
    const free = reviewed.free;
    $('review-total').textContent = `${n} of ${reviewed.files.length} files selected · ${size(bytes)}`
      + (unknown ? ` (+${unknown} of unknown size)` : '') + ` · to fetch ${size(need)} · free in ${reviewed.dest}: ${size(free)}`
      + (free !== null && need > free ? ' · NOT ENOUGH SPACE' : '');
  }
  function pick(fn) { picked.clear(); for (const f of reviewed.files) if (fn(f)) picked.add(f.index); renderReview(); }
  function globRe(g) { return new RegExp('^' + g.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.') + '$'); }
  async function start() {
    if (!picked.size) return say('nothing selected', true);
    const body = { ...reviewBody };
    if (picked.size !== reviewed.files.length) body.select = [...picked].sort((a, b) => a - b);
    const r = await act(() => api('POST', '/jobs', body));
    if (!r) return;
    say(`job ${r.job} started: ${r.files.length} file(s)`);
    $('review').hidden = true;
    show('downloads');
  }
  async function readFile(file) {
    if (file.size > 900 * 1024) return say(`${file.name} is larger than the API takes in one request (1 MiB)`, true);
    $('add-text').value = await file.text();
  }

  // ------------------------------------------------------------ library
  function renderLibrary() {
    const want = { here: ['done', 'skipped'], missing: ['removed', 'queued', 'paused', 'downloading'], failed: ['failed', 'hash_mismatch'] }[libTab];
    const body = $('lib-rows');
    body.replaceChildren();
    let n = 0;
    for (const f of files.values()) {
      if (!want.includes(f.state) || n++ >= 2000) continue;
      const box = el('input', { type: 'checkbox', 'aria-label': 'select' });
      box.checked = libSelected.has(f.id);
      box.addEventListener('change', () => { if (box.checked) libSelected.add(f.id); else libSelected.delete(f.id); });
      const job = jobs.get(f.job);
      body.append(el('tr', { 'data-id': String(f.id) }, el('td', {}, box), el('td', { class: 'name', text: f.path || f.url }),
        el('td', { text: (job && job.collection) || '' }), el('td', { text: size(f.size) }),
        el('td', { text: f.state + (f.error ? ` (${f.error})` : '') }), el('td', { text: verified.get(f.id) || '' }),
        el('td', {}, libTab === 'here' ? el('a', { href: `/files/${f.id}/content`, download: '', text: 'download' }) : '')));
    }
    const jb = $('job-rows');
    jb.replaceChildren();
    for (const j of [...jobs.values()].sort((a, b) => b.id - a.id)) {
      jb.append(el('tr', {}, el('td', { text: String(j.id) }), el('td', { text: j.collection || '' }),
        el('td', { text: j.dest }), el('td', { text: j.state }),
        el('td', { text: Object.entries(j.counts || {}).map(([k, v]) => `${v} ${k}`).join(', ') })));
    }
  }
  async function reverify() {
    const ids = [...libSelected].filter((id) => ['done', 'skipped'].includes((files.get(id) || {}).state));
    if (!ids.length) return say('select finished files to re-verify', true);
    const r = await act(() => api('POST', '/verify', { ids }));
    if (!r) return;
    for (const o of r.files) verified.set(o.id, o.result);
    const s = r.summary;
    say(`verified: ${s.ok} ok, ${s.corrupt} corrupt, ${s.missing} missing` + (s.corrupt + s.missing ? ' (see Failed; fetch them again there)' : ''), s.corrupt + s.missing > 0);
    schedule();
  }

  // ------------------------------------------------------------ views, keys, wiring
  function show(v) {
    view = v;
    for (const s of document.querySelectorAll('.view')) s.hidden = s.id !== v;
    for (const b of document.querySelectorAll('.tab')) {
      if (b.dataset.view === v) b.setAttribute('aria-current', 'page'); else b.removeAttribute('aria-current');
    }
    schedule();
  }
  function keys(e) {
    if (view !== 'downloads' || e.target.closest('input, textarea, select, dialog, button')) return;
    const tr = e.target.closest('tr[data-id]');
    if (!tr) return;
    const id = Number(tr.dataset.id);
    if (e.key === 'ArrowDown' && tr.nextElementSibling) { e.preventDefault(); tr.nextElementSibling.focus(); }
    if (e.key === 'ArrowUp' && tr.previousElementSibling) { e.preventDefault(); tr.previousElementSibling.focus(); }
    if (e.key === ' ') { e.preventDefault(); rowAction(id, 'toggle'); }
    if (e.key === 'Delete') { e.preventDefault(); rowAction(id, 'cancel'); }
  }

  function wire() {
    for (const b of document.querySelectorAll('.tab')) b.addEventListener('click', () => show(b.dataset.view));
    for (const b of document.querySelectorAll('[data-bulk]')) b.addEventListener('click', () => bulk(b.dataset.bulk));
    for (const b of document.querySelectorAll('.lib-tab')) {
      b.addEventListener('click', () => {
        libTab = b.dataset.tab;
        for (const o of document.querySelectorAll('.lib-tab')) o.toggleAttribute('aria-current', o === b);
        if (b.hasAttribute('aria-current')) b.setAttribute('aria-current', 'page');
        schedule();
      });
    }
    $('filter').addEventListener('input', () => { page = 0; schedule(); });
    $('state-filter').addEventListener('change', () => { page = 0; schedule(); });
    $('prev').addEventListener('click', () => { page = Math.max(0, page - 1); schedule(); });
    $('next').addEventListener('click', () => { page += 1; schedule(); });
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
      if (r) { limits = r; say(v ? `limit set: ${rate(v)}` : 'no limit'); }
      $('global-limit').blur();
    });
    $('slow-mode').addEventListener('change', (e) => slowMode(e.target.checked));
    $('retry-failed').addEventListener('click', () => retryFailed());
    $('lib-retry').addEventListener('click', () => retryFailed());
    $('reverify').addEventListener('click', reverify);
    $('lib-all').addEventListener('change', (e) => {
      for (const box of $('lib-rows').querySelectorAll('tr')) {
        const id = Number(box.dataset.id);
        if (e.target.checked) libSelected.add(id); else libSelected.delete(id);
      }
      schedule();
    });
    $('add-form').addEventListener('submit', (e) => { e.preventDefault(); review(); });
    $('sel-all').addEventListener('click', () => pick(() => true));
    $('sel-none').addEventListener('click', () => pick(() => false));
    $('sel-missing').addEventListener('click', () => pick((f) => f.state !== 'here'));
    $('glob-apply').addEventListener('click', () => { const re = globRe($('glob').value.trim() || '*'); pick((f) => re.test(f.path)); });
    $('start').addEventListener('click', start);
    $('add-file').addEventListener('change', (e) => { if (e.target.files[0]) readFile(e.target.files[0]); });
    const drop = $('drop');
    drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
    drop.addEventListener('dragleave', () => drop.classList.remove('over'));
    drop.addEventListener('drop', (e) => { e.preventDefault(); drop.classList.remove('over'); if (e.dataTransfer.files[0]) readFile(e.dataTransfer.files[0]); });
    $('rows').addEventListener('keydown', keys);
    $('logout').addEventListener('click', async () => {
      await act(() => api('POST', '/logout'));
      if (stream) stream.close();
      say('logged out: open a new login URL from segdl serve to come back');
    });
    $('conn').addEventListener('click', () => { if ('Notification' in window) Notification.requestPermission(); });
  }

  document.addEventListener('DOMContentLoaded', () => {
    wire();
    load().catch((e) => say(e.status === 401 ? 'not logged in: open the login URL that segdl serve printed' : e.message, true));
  });
})();
