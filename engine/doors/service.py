"""The engine as a long-running service: one :class:`Coordinator` loop on a
thread of its own that keeps running between jobs, and takes jobs and
changes from any thread at any moment.  ``segdl serve`` (HTTP) and
``segdl ui`` (Textual) are thin doors onto it.

* Commands (add a job, change or cancel a file, limits, retry) run on the
  loop's thread (``Coordinator.submit``) and answer when done.
* Reads (jobs, files, events) come from the journal, over a read-only
  connection per calling thread: the journal is the service's memory, so
  jobs and their history outlive it, and a restarted service continues the
  jobs that had not ended.
* Destinations must lie under the configured roots.
* Requests are checked whole (:mod:`.validation`) before anything is
  applied; lists are read in one read transaction with the number of the
  last event they include, so a client subscribes from exactly there.
* One service per journal: a second is refused while the first runs.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from pathlib import Path

from . import validation
from .jobinput import requests_of, select
from .servicelock import hold
from .status import pid_exists
from .views import file_view, job_view
from ..run.coordinator import Coordinator
from ..values.errors import UsageError
from ..journal.writer import Journal, default_path
from ..inputs.naming import hide_userinfo
from ..values.request import Settings, request_from_spec

COMMAND_TIMEOUT = 30.0  # seconds a command may wait for the loop


class EngineGone(Exception):
    """The engine's loop cannot take commands (it stopped, or is stuck)."""
PROGRESS_EVERY = 0.33  # seconds


class Service:
    """The engine on a thread behind the commands a client may give
    (``segdl serve``'s routes, the terminal UI): one method per command,
    each checking its input and running on the engine's loop.  About 310
    lines: it is the API's surface, one short method per endpoint, with
    the checks in validation.py, what a job's body names in jobinput.py,
    the answers' fields in views.py, the one-service lock in
    servicelock.py, and the larger answers in bulk.py, review.py,
    reverify.py and erase.py."""

    def __init__(self, settings: Settings, roots: list[Path], on_message=None) -> None:
        self.lock = hold(Path(settings.journal) if settings.journal else default_path())
        try:
            self._open(settings, roots, on_message)
        except BaseException:
            os.close(self.lock)
            raise

    def _open(self, settings: Settings, roots: list[Path], on_message) -> None:
        self.journal = Journal(settings.journal, handed_over=True)  # the loop's (the only writer)
        self.journal_path = self.journal.path
        # The limits set over the API hold across a restart, unless the
        # command line gives others.  Progress events a few times a second
        # per file (the heartbeat's).
        kept = self.journal.service_limits()
        self.s = replace(settings, dest=Path(os.path.abspath(settings.dest)),
                         progress_interval=min(settings.progress_interval, PROGRESS_EVERY),
                         max_speed=settings.max_speed or kept["max_speed"],
                         max_file_speed=settings.max_file_speed or kept["max_file_speed"])
        self.roots = [Path(os.path.realpath(r)) for r in roots] or [Path(os.path.realpath(self.s.dest))]
        self.engine = Coordinator(self.s, self.journal, on_message=on_message)
        self.local = threading.local()
        self.thread: threading.Thread | None = None
        self.failure: BaseException | None = None

    # ------------------------------------------------------------ lifetime

    def start(self) -> None:
        self.engine.start()
        self.journal.set_service_limits(self.s.max_speed or 0, self.s.max_file_speed or 0)
        resumed = self._unfinished_jobs()
        self.thread = threading.Thread(target=self._serve, name="segdl-engine", daemon=True)
        self.thread.start()
        for job in resumed:
            self._command(lambda c, job=job: c.commands.add(job["requests"], dest=job["dest"],
                                                            collection=job["collection"], reuse=job["id"]))

    def _serve(self) -> None:
        try:
            self.engine.serve()
        except BaseException as e:  # reported by every later command
            self.failure = e

    def stop(self) -> None:
        self.engine.stop()
        if self.thread is not None:
            self.thread.join(timeout=30)
        self.journal.close()
        if self.lock >= 0:
            os.close(self.lock)  # (the lock file stays: removing it would race the next service's)
            self.lock = -1

    def _unfinished_jobs(self) -> list[dict]:
        """Jobs the journal says were running when the service (or a
        ``segdl get``) stopped: they continue, under their own ids."""
        from ..rules.lifecycle import FINAL

        out = []
        for job in self.journal.all_jobs():
            if job["state"] == "finished" or job["spec"].get("origin") != "serve":
                continue  # (a `segdl get` stopped with Ctrl-C is for `segdl resume`)
            if job["pid"] and job["pid"] != os.getpid() and pid_exists(job["pid"]):
                continue  # another process runs it right now
            if not self._under_roots(Path(job["dest"])):
                continue
            ended = {r["url"] for r in self.journal.files(job["id"]) if r["state"] in FINAL}
            reqs = [request_from_spec(e) for e in job["spec"].get("requests", []) if e["url"] not in ended]
            if not reqs:
                self.journal.finish_job(job["id"])
                continue
            out.append({"id": job["id"], "requests": reqs, "dest": Path(job["dest"]),
                        "collection": job["collection"]})
        return out

    def _under_roots(self, path: Path) -> bool:
        path = Path(os.path.realpath(path))
        return any(path == r or path.is_relative_to(r) for r in self.roots)

    def _command(self, fn):
        if self.failure is not None or (self.thread is not None and not self.thread.is_alive()):
            raise EngineGone(f"the engine stopped: {self.failure or 'its thread ended'}")
        fut = self.engine.submit(fn)
        try:
            return fut.result(timeout=COMMAND_TIMEOUT)
        except TimeoutError:
            fut.cancel()  # not run later, if it has not started
            raise EngineGone(f"the engine did not answer within {COMMAND_TIMEOUT:.0f} s") from None

    # ------------------------------------------------------------ commands

    def add_job(self, body: dict) -> dict:
        """A job from ``{"urls": [...]}``, ``{"manifest": {...}}``,
        ``{"aria2": "input file text"}`` or ``{"ref": "hf://..."}``, with
        optional ``dest`` (under a root), ``collection``, ``connections``,
        ``priority`` and ``select`` (the paths or indexes of the files to
        take, for a collection).  Everything is checked before the job is
        added; a null field is an absent one."""
        if isinstance(body, dict):
            body = {k: v for k, v in body.items() if v is not None}
        body = validation.fields(body, validation.JOB)
        dest = self.destination(body.get("dest"))
        requests, collection, source = requests_of(body, dest, self.s.transfer)
        requests = select(requests, body.get("select"))
        if not requests:
            raise UsageError("the job has no files")
        connections = body.get("connections")
        priority = body.get("priority", 0)
        if body.get("collection"):
            collection = body["collection"]
        elif source is None:  # a manifest's or an aria2 file's own name: the client's input too
            collection = validation.name("collection", collection)
        else:  # a hub listing's name
            collection = validation.clean_name(collection)
        return self._command(lambda c: c.commands.add(requests, dest=dest, collection=collection, source=source,
                                                      connections=connections, priority=priority))

    def destination(self, dest) -> Path:
        """``dest`` (default: the first root) if it lies under a root."""
        if dest is None:
            own = Path(os.path.realpath(self.s.dest))
            return own if self._under_roots(own) else self.roots[0]
        if not isinstance(dest, str) or not dest or "\0" in dest:
            raise validation.FieldError("dest", "must be a folder path")
        path = Path(os.path.realpath(os.path.join(self.roots[0], dest)))
        if not self._under_roots(path):
            raise validation.FieldError("dest", f"{dest} is outside the folders this service may write "
                                                f"({', '.join(str(r) for r in self.roots)})")
        return path

    def set_file(self, fid: int, **fields) -> dict:
        """Pause or resume a file, change its priority or its speed limit
        (``validation.FILE_CHANGE``); answers the file as GET does."""
        fields = validation.fields(fields, validation.FILE_CHANGE, at_least_one=True)
        self._known(fid)
        self._command(lambda c: c.commands.set_file(fid, **fields))
        return self.file(fid)

    def cancel(self, fid: int, keep_partial: bool = False) -> dict:
        self._known(fid)
        answer = self._command(lambda c: c.commands.cancel(fid, keep_partial=keep_partial))
        return {**self.file(fid), "kept_partial": answer["kept_partial"]}

    def erase(self, fid: int) -> dict:
        """Delete a file from disk (under a root, reached safely) and from
        the journal, cancelling it first if it runs (engine/erase.py)."""
        from .erase import erase

        self._known(fid)
        return self._command(lambda c: erase(c.commands, c.journal, fid, self.roots))

    def set_limits(self, **limits) -> dict:
        limits = validation.fields(limits, validation.LIMITS, at_least_one=True)
        if limits.get("slow") and "max_speed" not in limits:
            raise validation.FieldError("max_speed", "slow mode needs max_speed, the slow limit")
        return self._command(lambda c: c.commands.set_limits(**limits))

    def retry(self, **body) -> dict:
        """The failed files again (only those of ``ids``, if given); with
        ``job``, every file of that job that is not here (failed, cancelled,
        gone from disk)."""
        body = validation.fields(body, validation.RETRY)
        ids = body.get("ids")
        return self._command(lambda c: c.commands.retry(self._under_roots, None if ids is None else set(ids),
                                                        body.get("job")))

    def bulk(self, body) -> dict:
        """Many files at once (engine/bulk.py): checked whole, applied in one command."""
        from . import bulk

        ids, change, cancel, keep = bulk.plan(body)
        return self._command(lambda c: bulk.apply(c.commands, ids, change, cancel, keep))

    def review(self, body) -> dict:
        """What a job of ``body`` (as :meth:`add_job` takes) would fetch, and
        what of it is here; ``{"job": ID}``: a job of the journal again (a
        hub job: against its listing now)."""
        from .review import REVIEW, job_input, review

        body = validation.fields({k: v for k, v in body.items() if v is not None}
                                 if isinstance(body, dict) else body, REVIEW)
        if "job" in body:
            job = self._reader().job(body["job"])
            ref, requests = job_input(body, job)
            dest, collection = Path(job["dest"]), job["collection"]
            if not self._under_roots(dest):
                raise LookupError(f"job {body['job']} is not under this service's folders")
            if ref:
                requests = requests_of({"ref": ref}, dest, self.s.transfer)[0]
        else:
            dest = self.destination(body.get("dest"))
            requests, collection, _ = requests_of(body, dest, self.s.transfer)
            collection = body.get("collection") or collection
        probed = self._probe_for_review(requests)
        j = self._reader()
        with j.reading():
            return review(j, dest, requests, collection, probed)

    def _probe_for_review(self, requests) -> dict:
        """Sizes and names of the URLs a list does not give them for, as a
        link grabber shows them before anything downloads: one small
        ranged request each (engine/review.py)."""
        from ..net.probe import probe_many
        from .review import PROBE_SECONDS, unknown_sizes

        urls = unknown_sizes(requests)
        headers = {r.url: tuple(r.headers) for r in requests if r.headers}
        per_url = {u: replace(self.s.transfer, headers=self.s.transfer.headers + h) for u, h in headers.items()}
        out: dict = {}
        until = time.monotonic() + PROBE_SECONDS  # for the whole list: the rest keep their size unknown
        for i in range(0, len(urls), 64):
            left = until - time.monotonic()
            if left < 1:
                break
            batch = urls[i:i + 64]  # (all at once: each probe's deadline counts from its own start)
            out.update(probe_many(batch, self.s.transfer, concurrency=len(batch), deadline=left, per_url=per_url))
        return out

    def reverify(self, body) -> dict:
        """Hash the finished files ``ids`` again (engine/reverify.py), here;
        record what is corrupt or missing on the loop."""
        from . import reverify

        ids = set(validation.fields(body, reverify.REQUEST, at_least_one=True)["ids"])
        rows = [r for r in reverify.finished(self._reader()) if r["id"] in ids and self._under_roots(Path(r["path"]))]
        outcomes = [reverify.check(r) for r in rows]
        self._command(lambda c: reverify.record(c.journal, outcomes))
        return {"files": [o.as_dict() for o in outcomes], "summary": reverify.summary(outcomes)}

    def finished_path(self, fid: int) -> Path:
        """Where a finished file is, for a client to read it: only a done
        file, only under a root (its real path: not through a link out)."""
        f = self.file(fid)
        path = Path(os.path.realpath(f["path"]))
        from ..rules.lifecycle import COMPLETE

        if f["state"] not in COMPLETE or not path.is_file() or not self._under_roots(path):
            raise LookupError(f"file {fid} is not a finished file under this service's folders")
        return path

    @staticmethod
    def _known(fid) -> None:
        if not isinstance(fid, int) or isinstance(fid, bool) or not 1 <= fid <= validation.MAX_ID:
            raise LookupError(f"no file {fid}")

    # ------------------------------------------------------------ reads

    def _reader(self) -> Journal:
        j = getattr(self.local, "journal", None)
        if j is None:
            j = self.local.journal = Journal(self.journal_path, readonly=True)
        return j

    def list_jobs(self) -> dict:
        """Every job with its files counted by state, and ``seq``: the
        last event this answer includes."""
        j = self._reader()
        with j.reading():
            seq = j.last_event()
            jobs, counts = j.all_jobs(), j.job_counts()
        return {"jobs": [job_view(r, counts.get(r["id"], {})) for r in jobs], "seq": seq}

    def jobs(self) -> list[dict]:
        return self.list_jobs()["jobs"]

    def job(self, jid: int) -> dict:
        if not 1 <= jid <= validation.MAX_ID:
            raise LookupError(f"no job {jid}")
        j = self._reader()
        with j.reading():
            row, counts = j.job(jid), j.job_counts(jid)
        if row is None:
            raise LookupError(f"no job {jid}")
        return job_view(row, counts.get(jid, {}))

    def list_files(self, states: tuple[str, ...] = (), job: int | None = None, after: int = 0,
                   limit: int = validation.DEFAULT_PAGE) -> dict:
        """A page of files in id order (after the id ``after``), with
        ``seq`` (the last event it includes) and ``next`` (the ``after`` of
        the next page, or null)."""
        j = self._reader()
        with j.reading():
            seq = j.last_event()
            rows = j.find_files(states, job, after, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return {"files": [file_view(r) for r in rows], "seq": seq, "next": rows[-1]["id"] if more else None}

    def files(self, state: str | None = None, job: int | None = None) -> list[dict]:
        """Every file (page after page), for the terminal UI."""
        out, after = [], 0
        while True:
            page = self.list_files((state,) if state else (), job, after, validation.MAX_PAGE)
            out += page["files"]
            if page["next"] is None:
                return out
            after = page["next"]

    def file(self, fid: int) -> dict:
        self._known(fid)
        row = self._reader().file(fid)
        if row is None:
            raise LookupError(f"no file {fid}")
        return file_view(row)

    def events_since(self, seq: int, kinds: tuple[str, ...] = ()) -> list[dict]:
        events = self._reader().events_since(seq, kinds=kinds)
        for ev in events:
            if isinstance(ev["data"].get("url"), str):
                ev["data"]["url"] = hide_userinfo(ev["data"]["url"])  # (the journal's triggers wrote it whole)
        return events

    def last_event(self) -> int:
        return self._reader().last_event()

    def describe(self) -> dict:
        """What a client needs to know of this service: where jobs may go
        (roots, the default folder), the limits now (as the journal keeps
        them, with ``seq``, the last event this answer includes)."""
        from importlib.metadata import version

        j = self._reader()
        with j.reading():
            seq, limits = j.last_event(), j.service_limits()
        return {"version": version("segdl"), "roots": [str(r) for r in self.roots], "dest": str(self.roots[0]),
                "limits": limits, "pid": os.getpid(), "seq": seq}


