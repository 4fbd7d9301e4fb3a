// What the page shows, as the API's answers and events say it: the files
// and jobs of the journal, the service's limits.  Nothing here is the
// page's own: a reload rebuilds all of it from the API.
export const files = new Map();  // id -> file (GET /files, then events)
export const jobs = new Map();   // id -> job (GET /jobs)
export const store = { limits: { max_speed: 0, max_file_speed: 0, slow: false, slow_before: null }, view: 'downloads', dirty: false };

// Something changed: draw at the next tick (app.js draws at most every
// RENDER_EVERY ms, however fast events come).
export function schedule() { store.dirty = true; }

// A re-verify's answer (POST /verify) into its files' `checked`, as the
// journal now keeps it (GET /files gives the same after a reload).
export function foldVerify(r) {
  for (const o of r.files) {
    const f = files.get(o.id);
    if (f && o.result !== 'unchecked') f.checked = o.checked ?? { result: o.result, at: Date.now() / 1000 };
  }
  schedule();
}
