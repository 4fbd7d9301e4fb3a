"""Restarts: a file that changed remotely or ignores Range starts over once
its transfers have stopped; an expired signed URL is resolved again while
the file's segments wait.
"""

from __future__ import annotations

from . import lifecycle
from .errors import (
    DownloadError,
    RangeIgnoredError,
    RemoteChangedError,
    SegdlError,
)
from .filerun import FileRun
from .naming import redact_url


class Restarts:
    def __init__(self, c) -> None:
        self.c = c  # the Coordinator: the run's shared state

    def restart(self, run: FileRun, error: SegdlError) -> None:
        """Start a file over (it changed remotely, or ignores Range), once
        every transfer of its old plan has stopped."""
        if run.state == lifecycle.RESTARTING:
            return  # already starting over; its draining set stands
        run.restarts += 1
        if run.restarts > self.c.s.restart_limit:
            self.c.dispatch.dispatch(self.c.sched.fail_file(run.id, error))
            return
        if isinstance(error, RangeIgnoredError):
            run.plain = True
        run.restart_reason = error
        cancels = self.c.sched.remove_file(run.id)
        self.c.dispatch.dispatch(cancels)
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
        self.c.dispatch.dispatch(self.c.sched.pause_file(run.id))
        src = run.sources[i]
        self.c.on_message(f"{run.final.name}: {redact_url(src.remote.final_url)} expired; resolving it again")
        fut = self.c.wake_on(self.c.prober_aux.submit(self.c.resolve_client.probe, [src.url], self.c.options,
                                                   per_url={src.url: self.c.dispatch.options_for(run, src.url)}))
        self.c.resolving[run.id] = (i, fut)

    def collect_resolutions(self) -> None:
        for fid, (i, fut) in list(self.c.resolving.items()):
            if not fut.done():
                continue
            del self.c.resolving[fid]
            run = self.c.runs.get(fid)
            if run is None or run.state not in (lifecycle.DOWNLOADING, lifecycle.PAUSED):
                continue  # it ended or is starting over meanwhile
            run.resolving = False
            src = run.sources[i]
            try:
                got = fut.result()[src.url]
            except Exception as e:  # pragma: no cover - a bug in probing
                got = DownloadError(f"cannot resolve {redact_url(src.url)} again: {e}")
            if isinstance(got, SegdlError):
                self.c.dispatch.dispatch(self.c.sched.fail_file(fid, got))
                continue
            old = src.remote
            if got.size != old.size or (old.etag and got.etag and got.etag != old.etag):
                why = RemoteChangedError(f"the remote file changed when its URL was resolved again "
                                         f"(size {old.size} -> {got.size}, ETag {old.etag} -> {got.etag})")
                self.restart(run, why)
                continue
            src.remote = got
            if not run.paused:
                self.c.sched.resume_file(fid)

    def restart_drained(self) -> None:
        for fid, run in list(self.c.runs.items()):
            if run.state == lifecycle.RESTARTING and not run.draining:
                del self.c.runs[fid]
                self.c.dispatch.release(fid)
                self.c.targets.pop(run.final, None)
                self.c.queue.appendleft(
                    FileRun(run.index, run.request, run.job, priority=run.priority, speed_cap=run.speed_cap,
                            paused=run.paused, restarts=run.restarts, plain=run.plain, fresh=True,
                            restart_reason=run.restart_reason, probe_retry=self.c.s.retry, lock=run.lock,
                            updating=run.updating)
                )
                run.lock = None  # the new run holds it now

