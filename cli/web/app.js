// segdl serve's page: a thin door onto the API (README, "The web page").
// Everything shown comes from the API's answers and its event stream (no
// polling); the page keeps no state of its own beyond what is on screen.
import { $, act, api, say } from './util.js';
import { files, jobs, schedule, store } from './store.js';
import { renderRows, renderTotals, sampleSpeed, showLimits, wireDownloads } from './downloads.js';
import { wireAdd } from './add.js';
import { renderLibrary, wireLibrary } from './library.js';

const RENDER_EVERY = 250;  // ms between draws, however fast events come
let stream = null;

async function load() {
  const svc = await api('GET', '/service');
  store.limits = svc.limits;
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

const KINDS = ['added', 'state', 'progress', 'finished', 'failed', 'removed', 'changed', 'checked', 'job_added', 'job_ended', 'limits'];
function connect(since) {
  stream = new EventSource(`/events?since=${since}`);
  stream.onopen = () => { $('conn').textContent = 'live'; $('conn').className = 'conn live'; };
  stream.onerror = () => { $('conn').textContent = 'reconnecting…'; $('conn').className = 'conn'; };
  for (const kind of KINDS) stream.addEventListener(kind, (m) => fold(JSON.parse(m.data)));
}
// One event into the files and jobs it changes (the README's vocabulary).
function fold(ev) {
  if (ev.kind === 'limits') {
    store.limits = { max_speed: ev.max_speed, max_file_speed: ev.max_file_speed, slow: !!ev.slow, slow_before: ev.slow_before ?? null };
    showLimits();
    return;
  }
  if (ev.kind === 'job_added' || ev.kind === 'job_ended') {
    if (ev.kind === 'job_ended') notify(ev);
    reloadJobs();
    return;
  }
  if (!ev.file) return;
  if (ev.kind === 'removed' && ev.deleted) { files.delete(ev.file); schedule(); return; }  // its row is gone (erased)
  const f = files.get(ev.file) || { id: ev.file, received: 0, bytes_done: 0, speed: 0, priority: 0, max_speed: 0, paused: false };
  // (on_disk: whether a done file is still on disk as the journal says;
  // checked: its last re-verify, which a fetch again clears.  A new state
  // without on_disk: unknown.)
  if ('state' in ev && !('on_disk' in ev)) f.on_disk = null;
  if (ev.kind === 'added' && !('checked' in ev)) f.checked = null;
  for (const k of ['path', 'url', 'state', 'size', 'received', 'speed', 'paused', 'priority', 'max_speed', 'error', 'blake3',
    'on_disk', 'checked']) {
    if (k in ev) f[k] = ev[k];
  }
  if (ev.job) f.job = ev.job;
  if (f.state !== 'downloading') f.speed = 0;
  if (ev.kind === 'finished') f.error = null;
  files.set(f.id, f);
  schedule();
}
// A desktop notification when a job ends, if the user allowed them (the
// Notify me button asks, on its click).  Its counts are the event's.
function notify(ev) {
  if (!('Notification' in window) || Notification.permission !== 'granted') return;
  const what = ev.collection || `job ${ev.job}`;
  const c = ev.counts || {};
  const done = (c.done || 0) + (c.skipped || 0), failed = (c.failed || 0) + (c.hash_mismatch || 0);
  new Notification(`segdl: ${what} ended`, {
    tag: `segdl-job-${ev.job}`,
    body: `${done} of ${ev.files} file(s) here` + (failed ? `, ${failed} failed` : '') + (c.removed ? `, ${c.removed} cancelled` : ''),
  });
}

function render() {
  renderTotals();
  if (store.view === 'downloads') renderRows();
  if (store.view === 'library') renderLibrary();
}

function show(v) {
  store.view = v;
  for (const s of document.querySelectorAll('.view')) s.hidden = s.id !== v;
  for (const b of document.querySelectorAll('.tab')) {
    if (b.dataset.view === v) b.setAttribute('aria-current', 'page'); else b.removeAttribute('aria-current');
  }
  schedule();
}

function wire() {
  for (const b of document.querySelectorAll('.tab')) b.addEventListener('click', () => show(b.dataset.view));
  wireDownloads();
  wireAdd(show);
  wireLibrary();
  $('logout').addEventListener('click', async () => {
    await act(() => api('POST', '/logout'));
    if (stream) stream.close();
    say('logged out: open a new login URL from segdl serve to come back');
  });
  if ('Notification' in window && Notification.permission === 'default') {
    $('notify').hidden = false;
    $('notify').addEventListener('click', async () => {
      const answer = await Notification.requestPermission();
      $('notify').hidden = answer !== 'default';
      say(answer === 'granted' ? 'a notification will come when a job ends' : 'notifications are not allowed', answer !== 'granted');
    });
  }
}

setInterval(() => { if (store.dirty) { store.dirty = false; render(); } }, RENDER_EVERY);
setInterval(sampleSpeed, 1000);
wire();
load().catch((e) => say(e.status === 401 ? 'not logged in: open the login URL that segdl serve printed' : e.message, true));
