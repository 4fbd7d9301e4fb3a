"""Restarts: a file that changed remotely or ignores Range starts over once
its transfers have stopped; an expired signed URL is resolved again while
the file's segments wait.
"""

from __future__ import annotations

from ..rules import lifecycle
from ..values.errors import (
    DownloadError,
    RangeIgnoredError,
    RemoteChangedError,
    SegdlError,
)
from concurrent.futures import Future, ThreadPoolExecutor

from .filerun import FileRun
from .files import Files
from ..inputs.naming import redact_url
from ..values.request import Settings
from ..rules.scheduler import Scheduler
from .workers import Workers


class Restarts:
    """Owns the re-resolutions in flight (one thread, its own connections)."""

    dispatch: "Dispatch"  # the peer, set by the coordinator once every part exists

    def __init__(self, files: Files, sched: Scheduler, workers: Workers, settings: Settings, options,
                 on_message) -> None:
        self.files, self.sched, self.workers, self.s, self.options = files, sched, workers, settings, options
        self.on_message = on_message
        self._resolving: dict[int, tuple[int, Future]] = {}  # file id -> (source index, its probe)
        from ..net import Prober

        self._pool = ThreadPoolExecutor(1, thread_name_prefix="segdl-resolve")
        self._client = Prober()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()  # now, or when its running probe ends

    def restart(self, run: FileRun, error: SegdlError) -> None:
        """Start a file over (it changed remotely, or ignores Range), once
        every transfer of its old plan has stopped."""
        if run.state == lifecycle.RESTARTING:
            return  # already starting over; its draining set stands
        run.restarts += 1
        if run.restarts > self.s.restart_limit:
            self.dispatch.dispatch(self.sched.fail_file(run.id, error))
            return
        if isinstance(error, RangeIgnoredError):
            run.plain = True
        run.restart_reason = error
        cancels = self.sched.remove_file(run.id)
        self.dispatch.dispatch(cancels)
        run.draining = {c.segment for c in cancels}
        run.move(lifecycle.RESTARTING)
        self.restart_drained()

    def reresolve(self, run: FileRun, i: int) -> None:
        """A signed URL expired: ask the original URL again for a fresh one.

        The file's segments wait (paused) meanwhile; if size and ETag are
        unchanged they continue where they were, else the file restarts."""
        if run.resolving:
            return
        run.resolving = True
        self.dispatch.dispatch(self.sched.pause_file(run.id))
        src = run.sources[i]
        self.on_message(f"{run.final.name}: {redact_url(src.remote.final_url)} expired; resolving it again")
        fut = self.workers.wake_on(self._pool.submit(self._client.probe, [src.url], self.options,
                                                     per_url={src.url: self.dispatch.options_for(run, src.url)}))
        self._resolving[run.id] = (i, fut)

    def collect_resolutions(self) -> None:
        for fid, (i, fut) in list(self._resolving.items()):
            if not fut.done():
                continue
            del self._resolving[fid]
            run = self.files.runs.get(fid)
            if run is None or run.state not in (lifecycle.DOWNLOADING, lifecycle.PAUSED):
                continue  # it ended or is starting over meanwhile
            run.resolving = False
            src = run.sources[i]
            try:
                got = fut.result()[src.url]
            except Exception as e:  # pragma: no cover - a bug in probing
                got = DownloadError(f"cannot resolve {redact_url(src.url)} again: {e}")
            if isinstance(got, SegdlError):
                self.dispatch.dispatch(self.sched.fail_file(fid, got))
                continue
            old = src.remote
            if got.size != old.size or (old.etag and got.etag and got.etag != old.etag):
                why = RemoteChangedError(f"the remote file changed when its URL was resolved again "
                                         f"(size {old.size} -> {got.size}, ETag {old.etag} -> {got.etag})")
                self.restart(run, why)
                continue
            src.remote = got
            if not run.paused:
                self.sched.resume_file(fid)

    def restart_drained(self) -> None:
        for fid, run in list(self.files.runs.items()):
            if run.state == lifecycle.RESTARTING and not run.draining:
                self.files.drop(fid)
                self.dispatch.release(fid)
                self.files.free_target(run.final)
                self.files.requeue(
                    FileRun(run.index, run.request, run.job, priority=run.priority, speed_cap=run.speed_cap,
                            paused=run.paused, restarts=run.restarts, plain=run.plain, fresh=True,
                            restart_reason=run.restart_reason, probe_retry=self.s.retry, lock=run.lock,
                            updating=run.updating)
                )
                run.lock = None  # the new run holds it now

