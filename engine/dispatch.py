"""Dispatch: the scheduler's actions become orders to the workers (fetch,
split, cancel), each fetch with the source, the options and the
credentials that belong to it.
"""

from __future__ import annotations

from dataclasses import replace

from . import storage
from .errors import (
    StorageError,
)
from .filerun import FileRun
from .messages import (
    Cancel,
    Fetch,
    Release,
    Shrink,
    Track,
)
from .naming import same_origin
from .scheduler import Assign, CancelSegment, FileComplete, FileFailed, RequestSplit


class Dispatch:
    def __init__(self, c) -> None:
        self.c = c  # the Coordinator: the run's shared state

    def dispatch(self, actions) -> None:
        if any(isinstance(a, Assign) for a in actions):
            # New connections start with their share already applied: a
            # connection that starts uncapped bursts (socket buffers).
            self.c._limits_dirty = True
            self.c.control.apply_limits(skip={a.segment for a in actions if isinstance(a, Assign)})
        for a in actions:
            if isinstance(a, Assign):
                seg = self.c.sched.segments[a.segment]
                run = self.c.runs[seg.file]
                self._track(run, a.worker)
                i = self._pick_source(run)
                src = run.sources[i]
                src.running += 1
                run.source_of[a.segment] = i
                remote = src.remote
                self.c.orders[a.worker].put(
                    Fetch(a.segment, run.id, remote.final_url, str(run.part), a.position, a.end,
                          remote.expect(), self.options_for(run, remote.final_url),
                          redirected=remote.redirected, max_speed=run.limit, written=self._write_probed(run, a),
                          ident=run.lock.ident if run.lock else None)
                )
            elif isinstance(a, RequestSplit):
                self.c.orders[a.worker].put(Shrink(a.segment, a.at, self.c.s.min_split))
            elif isinstance(a, CancelSegment):
                self.c.orders[a.worker].put(Cancel(a.segment))
            elif isinstance(a, FileComplete):
                self.c.finishing.complete(a.file)
            elif isinstance(a, FileFailed):
                self.c.finishing.fail(a.file, a.error)

    @staticmethod
    def _write_probed(run: FileRun, a: Assign) -> int:
        """Write the file's first bytes that its probe fetched, for the
        segment that starts with them (once: a retry asks the server
        again); the worker syncs them with the rest.  Returns how many."""
        first = run.sources[0].remote.first_bytes if run.sources else b""
        if not first:
            return 0
        for src in run.sources:
            src.remote = replace(src.remote, first_bytes=b"")  # (its memory goes now)
        run.remote = run.sources[0].remote
        if a.end is None or a.position >= len(first) or run.lock is None:
            return 0
        try:
            storage.write_at(run.lock, first[a.position:min(len(first), a.end)], a.position)
        except StorageError:
            return 0  # the worker fetches them, and meets the trouble itself
        return min(len(first), a.end) - a.position

    @staticmethod
    def _pick_source(run: FileRun) -> int:
        """Least loaded healthy source, weighted by its measured speed; a
        source not measured yet is tried first."""
        best, best_score = 0, None
        for i, src in enumerate(run.sources):
            if src.disabled:
                continue
            score = ((src.rate or float("inf")) / (src.running + 1), -src.running, -i)
            if best_score is None or score > best_score:
                best, best_score = i, score
        return best

    def options_for(self, run: FileRun, url: str | None = None):
        """Transfer options for a request of ``run`` to ``url``.

        Headers given for the URL the user named (Authorization, Cookie, and
        custom ones such as X-Api-Key) are not sent to another origin that a
        redirect led to, unless --location-trusted."""
        req = run.request
        headers = self.c.options.headers + tuple(req.headers)
        trusted = self.c.options.location_trusted
        if req.credential and (url is None or same_origin(url, req.url)):
            token = self._token(req.credential)
            if token:
                headers += (token,)
                trusted = False  # a hub's token goes to the hub only, whatever --location-trusted says
        if url is not None and not trusted and not same_origin(url, req.url, *req.mirrors):
            headers = ()  # not one header: a custom one may carry a key as Authorization does
        if (headers == self.c.options.headers and trusted == self.c.options.location_trusted
                and not req.hub):
            return self.c.options
        return replace(self.c.options, headers=headers, hub=req.hub, location_trusted=trusted)

    def _token(self, credential: str) -> str | None:
        """The Authorization header a credential name stands for, read from
        the environment once per job (a re-run reads it again); never
        journaled, never printed."""
        if credential not in self.c.tokens:
            from .hubs.tokens import auth_header

            self.c.tokens[credential] = auth_header(credential)
        return self.c.tokens[credential]

    def _track(self, run: FileRun, worker: int) -> None:
        """Have the worker that gets the file's first connection hash it as
        it writes it (a file's segments all go to that worker)."""
        if run.id in self.c.tracked:
            return
        self.c.tracked[run.id] = worker
        on_disk = tuple((st.start, st.position) for key in self.c.sched.files[run.id].segments
                        if (st := self.c.sched.segments[key]).position > st.start)
        self.c.orders[worker].put(Track(run.id, str(run.part), run.remote.size, self.wants_sha256(run), on_disk))

    def release(self, fid: int) -> None:
        self.c.tracked.pop(fid, None)
        for q in self.c.orders:
            q.put(Release(fid))

    @staticmethod
    def wants_sha256(run: FileRun) -> bool:
        return bool(run.request.sha256 or run.published_sha256)

