"""One small interface onto the engine for the terminal UI, whether it
runs in this process (:class:`LocalClient` over a
:class:`~segdl.engine.doors.service.Service`) or in a running ``segdl serve``
(:class:`RemoteClient`, over its HTTP API).  The screens do not know
which.  Both raise :class:`ClientError` with a message a person reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode


class ClientError(Exception):
    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else "failed"


class LocalClient:
    """The engine in this process."""

    attached = False

    def __init__(self, service) -> None:
        self.service = service

    def _call(self, fn, *args, **kwargs):
        from segdl.engine.values.errors import SegdlError

        try:
            return fn(*args, **kwargs)
        except SegdlError as e:
            raise ClientError(e.message) from None
        except LookupError as e:
            raise ClientError(str(e.args[0]) if e.args else "not found") from None
        except TimeoutError:
            raise ClientError("the engine did not answer in time") from None

    def add_job(self, body: dict) -> dict:
        return self._call(self.service.add_job, body)

    def jobs(self) -> list[dict]:
        return self._call(self.service.jobs)

    def files(self, job: int | None = None) -> list[dict]:
        return self._call(self.service.files, job=job)

    def some_files(self, job: int, states: tuple[str, ...], limit: int) -> list[dict]:
        """The first ``limit`` files of ``job`` in one of ``states``."""
        return self._call(self.service.list_files, states, job, 0, limit)["files"]

    def file(self, fid: int) -> dict:
        return self._call(self.service.file, fid)

    def set_file(self, fid: int, **fields) -> dict:
        return self._call(self.service.set_file, fid, **fields)

    def cancel(self, fid: int, keep_partial: bool = False) -> dict:
        return self._call(self.service.cancel, fid, keep_partial=keep_partial)

    def set_limits(self, **limits) -> dict:
        return self._call(self.service.set_limits, **limits)

    def limits(self) -> dict:
        return self._call(self.service.describe)["limits"]

    def retry(self) -> dict:
        return self._call(self.service.retry)


class RemoteClient:
    """A running ``segdl serve`` (:class:`segdl.cli.serve.Remote`)."""

    attached = True

    def __init__(self, remote) -> None:
        self.remote = remote

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        try:
            status, answer = self.remote.call(method, path, body)
        except OSError as e:
            raise ClientError(f"segdl serve does not answer: {e}") from None
        if not 200 <= status < 300:
            raise ClientError(answer.get("error") or f"segdl serve answered {status}")
        return answer

    def add_job(self, body: dict) -> dict:
        return self._call("POST", "/jobs", body)

    def jobs(self) -> list[dict]:
        return self._call("GET", "/jobs")["jobs"]

    def files(self, job: int | None = None) -> list[dict]:
        out: list[dict] = []
        after = 0
        for _ in range(10000):  # pages of up to 10000 files
            query = {"after": after, "limit": 10000, **({"job": job} if job is not None else {})}
            page = self._call("GET", f"/files?{urlencode(query)}")
            out += page["files"]
            if page.get("next") is None:
                break
            after = page["next"]
        return out

    def some_files(self, job: int, states: tuple[str, ...], limit: int) -> list[dict]:
        query = {"job": int(job), "state": ",".join(states), "limit": int(limit)}
        return self._call("GET", f"/files?{urlencode(query)}")["files"]

    def file(self, fid: int) -> dict:
        return self._call("GET", f"/files/{int(fid)}")

    def set_file(self, fid: int, **fields) -> dict:
        return self._call("PATCH", f"/files/{int(fid)}", fields)

    def cancel(self, fid: int, keep_partial: bool = False) -> dict:
        return self._call("DELETE", f"/files/{int(fid)}?keep_partial={'true' if keep_partial else 'false'}")

    def set_limits(self, **limits) -> dict:
        return self._call("PATCH", "/limits", limits)

    def limits(self) -> dict:
        return self._call("GET", "/service")["limits"]

    def retry(self) -> dict:
        return self._call("POST", "/retry", {})


@contextmanager
def local_engine(settings, roots: list[Path]) -> Iterator[LocalClient]:
    """The engine running in this process while the UI does; when the UI
    quits it stops, and its jobs stay unfinished in the journal (``segdl
    resume`` or another ``segdl ui`` continues them)."""
    from segdl.engine.values.errors import SegdlError
    from segdl.engine.doors.service import Service

    try:
        service = Service(settings, roots)
    except SegdlError as e:  # another service on this journal, a journal that cannot be used
        raise ClientError(e.message) from None
    service.start()
    try:
        yield LocalClient(service)
    finally:
        service.stop()


def attach(journal: Path | None) -> RemoteClient:
    from .. import serve

    remote = serve.find_service(journal)
    if remote is None:
        raise ClientError(f"no segdl serve runs on the journal in {serve.state_dir(journal)}; "
                          "start one, or leave out --attach")
    return RemoteClient(remote)
