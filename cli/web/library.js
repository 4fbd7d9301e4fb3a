// Library: every file the journal knows, by tab (here, not here, failed,
// changed upstream), with counts, and every job; re-verify (POST /verify,
// as segdl verify), fetch the failed ones again, download a finished file.
// Rows are patched in place (a click is never lost to a redraw), a page
// of PAGE rows at a time, as in Downloads.
import { $, act, api, ask, el, name, say, set, size } from './util.js';
import { files, foldVerify, jobs, schedule } from './store.js';
import { PAGE, retryFailed } from './downloads.js';

const libSelected = new Set();  // ids ticked here
const libRows = new Map();      // id -> <tr> on the current page
const jobRows = new Map();      // job id -> <tr>
let libPage = 0, libPages = 1;  // (as last drawn)
// The last "check upstream" (POST /review {job}): id -> the file's blake3 then
// (fetched again since, with other content, it is no longer what changed).
const upstream = { checked: false, changed: new Map() };
let libTab = 'here';

const HERE = ['done', 'skipped'];
// Done and still at its path (on_disk: false when the file is gone; null
// when not known).  Whether its bytes are still the ones verified is for
// re-verify to say (POST /verify).
const here = (f) => HERE.includes(f.state) && f.on_disk !== false;
const gone = (f) => HERE.includes(f.state) && f.on_disk === false;
const TABS = {
  here,
  missing: (f) => gone(f) || ['removed', 'queued', 'paused', 'downloading', 'verifying', 'verified'].includes(f.state),
  failed: (f) => f.state === 'failed' || f.state === 'hash_mismatch',
  changed: (f) => here(f) && upstream.changed.has(f.id) && upstream.changed.get(f.id) === f.blake3,
};

function renderTabs() {
  const counts = { here: 0, missing: 0, failed: 0, changed: 0 };
  for (const f of files.values()) for (const [tab, test] of Object.entries(TABS)) if (test(f)) counts[tab]++;
  for (const b of document.querySelectorAll('.lib-tab')) {
    const t = b.dataset.tab;
    const text = t === 'changed' && !upstream.checked ? '?' : String(counts[t]);
    const c = b.querySelector('.count');
    if (c.textContent !== text) c.textContent = text;
  }
}

export function renderLibrary() {
  renderTabs();
  const want = TABS[libTab], list = [];
  for (const f of files.values()) if (want(f)) list.push(f);
  const pages = Math.max(1, Math.ceil(list.length / PAGE));
  libPages = pages;
  libPage = Math.min(libPage, pages - 1);
  const slice = list.slice(libPage * PAGE, libPage * PAGE + PAGE);
  set($('lib-page'), `page ${libPage + 1} of ${pages} (${list.length} files)`);
  const body = $('lib-rows');
  const keep = new Set(slice.map((f) => f.id));
  for (const [id, tr] of libRows) if (!keep.has(id)) { tr.remove(); libRows.delete(id); }
  let prev = null;
  for (const f of slice) {
    let tr = libRows.get(f.id);
    if (!tr) { tr = makeRow(f.id); libRows.set(f.id, tr); }
    patchRow(tr, f);
    const at = prev ? prev.nextSibling : body.firstChild;
    if (at !== tr) body.insertBefore(tr, at);
    prev = tr;
  }
  renderJobs();
}
function makeRow(id) {
  const box = el('input', { type: 'checkbox', 'aria-label': 'select' });
  box.addEventListener('change', () => { if (box.checked) libSelected.add(id); else libSelected.delete(id); });
  return el('tr', { 'data-id': String(id) }, el('td', {}, box), el('td', { class: 'name' }), el('td'), el('td'),
    el('td', { class: 'wrap' }, el('span', { class: 'st' }), el('span', { class: 'err' })), el('td'),
    el('td', { class: 'actions' },
      el('a', { href: `/files/${id}/content`, download: '', text: 'download' }), ' ',
      el('button', { type: 'button', 'data-act': 'erase', text: 'delete', title: 'delete it from disk and from the journal' })));
}
function patchRow(tr, f) {
  const [box, nameCell, coll, sz, st, ver, actions] = tr.children;
  box.firstChild.checked = libSelected.has(f.id);
  const job = jobs.get(f.job);
  const full = f.path || f.url || '';
  set(nameCell, job && full.startsWith(job.dest + '/') ? full.slice(job.dest.length + 1) : full);
  nameCell.title = full;
  set(coll, (job && job.collection) || '');
  set(sz, size(f.size));
  set(st.querySelector('.st'), f.state);
  set(st.querySelector('.err'), f.error || (gone(f) ? 'no longer at its path (deleted or moved since)' : ''));
  const c = f.checked;
  set(ver, c ? c.result : '');
  ver.title = c && c.at ? `re-verified ${new Date(c.at * 1000).toLocaleString()}` : '';
  actions.querySelector('a').hidden = !here(f);
}
function renderJobs() {
  const jb = $('job-rows');
  const list = [...jobs.values()].sort((a, b) => b.id - a.id);
  const keep = new Set(list.map((j) => j.id));
  for (const [id, tr] of jobRows) if (!keep.has(id)) { tr.remove(); jobRows.delete(id); }
  let prev = null;
  for (const j of list) {
    let tr = jobRows.get(j.id);
    if (!tr) {
      tr = el('tr', { 'data-job': String(j.id) }, el('td', { text: String(j.id) }), el('td'), el('td'), el('td'), el('td'),
        el('td', {}, el('button', { type: 'button', 'data-act': 'fetch-missing', text: 'Fetch what is missing',
          title: 'its files that are not here (failed, cancelled, gone from disk) again' })));
      jobRows.set(j.id, tr);
    }
    const [, coll, dest, state, counts] = tr.children;
    set(coll, j.collection || '');
    set(dest, j.dest);
    set(state, j.state);
    set(counts, Object.entries(j.counts || {}).map(([k, v]) => `${v} ${k}`).join(', '));
    const at = prev ? prev.nextSibling : jb.firstChild;
    if (at !== tr) jb.insertBefore(tr, at);
    prev = tr;
  }
}
// Delete a file from disk and its entry from the journal, once the dialog
// says so (a running one is cancelled first).
async function erase(id) {
  const f = files.get(id);
  if (!f) return;
  const a = await ask(`Delete ${name(f)} from disk and forget it in the journal? This cannot be undone.`);
  if (!a) return;
  const r = await act(() => api('DELETE', `/files/${id}?erase=true`));
  if (!r) return;
  files.delete(id);
  libSelected.delete(id);
  say(`${name(f)}: deleted` + (r.deleted.length ? '' : ' (nothing was on disk)'));
  schedule();
}
// One click: the job's files that are not here, again (POST /retry {job}).
async function fetchMissing(id) {
  const r = await act(() => api('POST', '/retry', { job: id }));
  if (!r) return;
  const n = r.jobs.reduce((a, j) => a + j.files.length, 0);
  if (n) say(`job ${id}: fetching ${n} file(s) that were not here`);
  else say(`job ${id}: every file is here (or still running)`);
}
async function reverify() {
  const ids = [...libSelected].filter((id) => ['done', 'skipped'].includes((files.get(id) || {}).state));
  if (!ids.length) return say('select finished files to re-verify', true);
  const r = await act(() => api('POST', '/verify', { ids }));
  if (!r) return;
  foldVerify(r);
  const s = r.summary;
  say(`verified: ${s.ok} ok, ${s.corrupt} corrupt, ${s.missing} missing` + (s.corrupt + s.missing ? ' (see Failed; fetch them again there)' : ''), s.corrupt + s.missing > 0);
  schedule();
}

// Changed upstream: each hub collection's newest job reviewed again
// against the hub's listing now, and the newest jobs of plain URLs against
// what their servers say now (size, ETag, Last-Modified); their files done
// here that upstream now has with other content.
const URL_JOBS_CHECKED = 20;
async function checkUpstream() {
  const newest = new Map();  // source key -> the newest job from it
  const plain = [];
  for (const j of jobs.values()) {
    const key = j.source && j.source.ref ? j.source.key : null;
    if (key && (!newest.has(key) || newest.get(key).id < j.id)) newest.set(key, j);
    else if (!key) plain.push(j);
  }
  plain.sort((a, b) => b.id - a.id);
  plain.slice(0, URL_JOBS_CHECKED).forEach((j) => newest.set(`job:${j.id}`, j));
  if (!newest.size) {
    upstream.checked = true;
    schedule();
    return say('no job here yet: nothing upstream to compare with');
  }
  say(`checking ${newest.size} collection(s) upstream…`);
  const changed = new Map();
  for (const j of newest.values()) {
    const r = await act(() => api('POST', '/review', { job: j.id }));
    if (!r) return;
    for (const f of r.files) if (f.state === 'changed' && f.id !== null && files.has(f.id)) changed.set(f.id, files.get(f.id).blake3);
  }
  upstream.changed = changed;
  upstream.checked = true;
  say(`checked ${newest.size} collection(s) upstream: ${changed.size} file(s) changed`, false);
  schedule();
}

export function wireLibrary() {
  for (const b of document.querySelectorAll('.lib-tab')) {
    b.addEventListener('click', () => {
      libTab = b.dataset.tab;
      libPage = 0;
      for (const o of document.querySelectorAll('.lib-tab')) {
        if (o === b) o.setAttribute('aria-current', 'page'); else o.removeAttribute('aria-current');
      }
      if (libTab === 'changed' && !upstream.checked) checkUpstream();
      schedule();
    });
  }
  $('check-upstream').addEventListener('click', checkUpstream);
  $('lib-rows').addEventListener('click', (e) => {
    const b = e.target.closest('button[data-act=erase]');
    if (b) erase(Number(b.closest('tr').dataset.id));
  });
  $('job-rows').addEventListener('click', (e) => {
    const b = e.target.closest('button[data-act=fetch-missing]');
    if (b) fetchMissing(Number(b.closest('tr').dataset.job));
  });
  $('lib-prev').addEventListener('click', () => { libPage = Math.max(0, libPage - 1); schedule(); });
  $('lib-next').addEventListener('click', () => { libPage = Math.min(libPage + 1, libPages - 1); schedule(); });
  $('reverify').addEventListener('click', reverify);
  $('lib-retry').addEventListener('click', () => retryFailed());
  $('lib-all').addEventListener('change', (e) => {
    for (const tr of $('lib-rows').querySelectorAll('tr')) {
      const id = Number(tr.dataset.id);
      if (e.target.checked) libSelected.add(id); else libSelected.delete(id);
    }
    schedule();
  });
}
