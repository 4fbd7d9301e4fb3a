"""Dispatch: the scheduler's actions become orders to the workers (fetch,
split, cancel), each fetch with the source, the options and the
credentials that belong to it.
"""

from __future__ import annotations

from dataclasses import replace

from ..disk import storage
from ..values.errors import (
    StorageError,
)
from .filerun import FileRun
from .files import Files
from .limits import Limits
from ..values.messages import (
    Cancel,
    Fetch,
    Shrink,
    Track,
)
from ..inputs.naming import same_origin
from ..values.request import Settings
from ..rules.scheduler import Assign, CancelSegment, FileComplete, FileFailed, RequestSplit, Scheduler
from .workers import Workers


class Dispatch:
    """Sends the scheduler's actions; owns the credentials read for them."""

    control: "Control"  # the peers, set by the coordinator once every part exists
    finishing: "Finishing"

    def __init__(self, files: Files, sched: Scheduler, workers: Workers, limits: Limits, settings: Settings,
                 options) -> None:
        self.files, self.sched, self.workers, self.limits = files, sched, workers, limits
        self.s, self.options = settings, options
        self._tokens: dict[str, str | None] = {}  # credential -> "Authorization: ..." (memory only)

    def dispatch(self, actions) -> None:
        if any(isinstance(a, Assign) for a in actions):
            # New connections start with their share already applied: a
            # connection that starts uncapped bursts (socket buffers).
            self.limits.changed()
            self.control.apply_limits(skip={a.segment for a in actions if isinstance(a, Assign)})
        for a in actions:
            if isinstance(a, Assign):
                seg = self.sched.segments[a.segment]
                run = self.files.runs[seg.file]
                if not self._carried(run):
                    self._track(run, a.worker)
                i = self._pick_source(run)
                src = run.sources[i]
                src.running += 1
                run.source_of[a.segment] = i
                remote = src.remote
                self.workers.send(a.worker,
                    Fetch(a.segment, run.id, remote.final_url, str(run.part), a.position, a.end,
                          remote.expect(), self.options_for(run, remote.final_url),
                          redirected=remote.redirected, max_speed=run.limit, written=self._write_probed(run, a),
                          ident=run.lock.ident if run.lock else None)
                )
            elif isinstance(a, RequestSplit):
                self.workers.send(a.worker, Shrink(a.segment, a.at, self.s.min_split))
            elif isinstance(a, CancelSegment):
                self.workers.send(a.worker, Cancel(a.segment))
            elif isinstance(a, FileComplete):
                self.finishing.complete(a.file)
            elif isinstance(a, FileFailed):
                self.finishing.fail(a.file, a.error)

    def _write_probed(self, run: FileRun, a: Assign) -> int:
        """Write the file's first bytes that its probe fetched, for the
        segment that starts with them (once: a retry asks the server
        again); the worker syncs them with the rest.  Returns how many."""
        first = run.take_first_bytes()
        if not first:
            return 0
        if a.end is None or a.position >= len(first) or run.lock is None:
            return 0
        try:
            storage.write_at(run.lock, first[a.position:min(len(first), a.end)], a.position)
        except StorageError:
            return 0  # the worker fetches them, and meets the trouble itself
        if a.position == 0 and len(first) == a.end == run.remote.size:
            # The whole file, written: its digests come from these bytes (a
            # small file needs no worker to hash it, nor a turn to ask).
            run.carried = run.digests_of(first)
        return min(len(first), a.end) - a.position

    @staticmethod
    def _carried(run: FileRun) -> bool:
        """Does the file's probe carry all of it (one segment, written here)?"""
        first = run.sources[0].remote.first_bytes if run.sources else b""
        return bool(first) and len(first) == run.remote.size

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
        headers = self.options.headers + tuple(req.headers)
        trusted = self.options.location_trusted
        if req.credential and (url is None or same_origin(url, req.url)):
            token = self._token(req.credential)
            if token:
                headers += (token,)
                trusted = False  # a hub's token goes to the hub only, whatever --location-trusted says
        if url is not None and not trusted and not same_origin(url, req.url, *req.mirrors):
            headers = ()  # not one header: a custom one may carry a key as Authorization does
        if (headers == self.options.headers and trusted == self.options.location_trusted
                and not req.hub):
            return self.options
        return replace(self.options, headers=headers, hub=req.hub, location_trusted=trusted)

    def _token(self, credential: str) -> str | None:
        """The Authorization header a credential name stands for, read from
        the environment once per job (a re-run reads it again); never
        journaled, never printed."""
        if credential not in self._tokens:
            from ..inputs.hubs.tokens import auth_header

            self._tokens[credential] = auth_header(credential)
        return self._tokens[credential]

    def _track(self, run: FileRun, worker: int) -> None:
        """Have the worker that gets the file's first connection hash it as
        it writes it (a file's segments all go to that worker)."""
        if not self.workers.track(run.id, worker):
            return
        on_disk = tuple((st.start, st.position) for key in self.sched.files[run.id].segments
                        if (st := self.sched.segments[key]).position > st.start)
        self.workers.send(worker, Track(run.id, str(run.part), run.remote.size, run.wants_sha256(), on_disk))

    def drop_file(self, fid: int) -> None:
        """A file leaves the scheduler: what still runs of it is cancelled."""
        if fid in self.sched.files:
            self.dispatch(self.sched.remove_file(fid))

    def release(self, fid: int) -> None:
        self.workers.release(fid)

