// Library: every file the journal knows, by tab (here, not here, failed),
// and every job; re-verify (POST /verify, as segdl verify), fetch the
// failed ones again, download a finished file.
import { $, act, api, el, say, size } from './util.js';
import { files, jobs, schedule } from './store.js';
import { retryFailed } from './downloads.js';

const libSelected = new Set();  // ids ticked here
const verified = new Map();     // id -> the last re-verify's result (also recorded in the journal)
let libTab = 'here';

export function renderLibrary() {
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
    const full = f.path || f.url || '';
    const shown = job && full.startsWith(job.dest + '/') ? full.slice(job.dest.length + 1) : full;
    body.append(el('tr', { 'data-id': String(f.id) }, el('td', {}, box), el('td', { class: 'name', text: shown, title: full }),
      el('td', { text: (job && job.collection) || '' }), el('td', { text: size(f.size) }),
      el('td', { class: 'wrap' }, f.state, el('span', { class: 'err', text: f.error || '' })),
      el('td', { text: verified.get(f.id) || '' }),
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

export function wireLibrary() {
  for (const b of document.querySelectorAll('.lib-tab')) {
    b.addEventListener('click', () => {
      libTab = b.dataset.tab;
      for (const o of document.querySelectorAll('.lib-tab')) {
        if (o === b) o.setAttribute('aria-current', 'page'); else o.removeAttribute('aria-current');
      }
      schedule();
    });
  }
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
