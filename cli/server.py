"""``segdl serve``: the engine's control API over HTTP (REST + server-sent
events), a thin door onto :class:`segdl.engine.service.Service`, as ``get``
and ``ui`` are.

Starlette and uvicorn, imported only here: 0.05 s each to import on this
machine, against 0.17 s for FastAPI (pydantic), and the API needs JSON in
and out, nothing a schema library adds.  sse-starlette writes the event
stream (keep-alive pings, client disconnects).  The OpenAPI description is
``cli/openapi.json``, kept in the repository and served at /openapi.json; a
test checks that it and the routes agree.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from segdl.engine.errors import SegdlError, UsageError
from segdl.engine.service import EngineGone

from .guard import NONCE, PROOF_PATH, Guard, proof

OPENAPI = Path(__file__).with_name("openapi.json")
EVENT_POLL = 0.2  # seconds between looks at the journal for new events


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status)


async def _body(request: HttpRequest) -> dict:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError as e:
        raise UsageError(f"the body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise UsageError("the body must be a JSON object")
    return body


def build_app(service, *, token: str, hosts: list[str], origins: set[str], where: str = "") -> Starlette:
    """The app for ``service`` (a started :class:`Service`), listening at
    ``where`` (its URL or socket path, for the proof: see guard.py)."""

    async def call(fn, *args, **kwargs):
        """A Service command (it waits for the engine's loop), off the event loop."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    def guarded(handler):
        async def run(request: HttpRequest):
            try:
                return await handler(request)
            except UsageError as e:
                return _error(400, e.message)
            except LookupError as e:
                return _error(404, str(e.args[0]) if e.args else "not found")
            except SegdlError as e:
                return _error(409, e.message)
            except EngineGone as e:
                return _error(503, str(e))
        return run

    @guarded
    async def add_job(request: HttpRequest):
        body = await _body(request)
        return JSONResponse(await call(service.add_job, body), status_code=201)

    @guarded
    async def describe(request: HttpRequest):
        return JSONResponse(service.describe())

    @guarded
    async def list_jobs(request: HttpRequest):
        return JSONResponse({"jobs": service.jobs()})

    @guarded
    async def list_files(request: HttpRequest):
        job = request.query_params.get("job")
        if job is not None and not job.isdigit():
            raise UsageError("job must be a job id")
        return JSONResponse({"files": service.files(state=request.query_params.get("state"),
                                                    job=int(job) if job else None)})

    def file_id(request: HttpRequest) -> int:
        return int(request.path_params["id"])

    @guarded
    async def get_file(request: HttpRequest):
        return JSONResponse(service.file(file_id(request)))

    @guarded
    async def patch_file(request: HttpRequest):
        body = await _body(request)
        unknown = set(body) - {"paused", "priority", "max_speed"}
        if unknown:
            raise UsageError(f"unknown field(s): {', '.join(sorted(unknown))}")
        return JSONResponse(await call(service.set_file, file_id(request), **body))

    @guarded
    async def delete_file(request: HttpRequest):
        keep = request.query_params.get("keep_partial", "false").lower() in ("1", "true", "yes")
        return JSONResponse(await call(service.cancel, file_id(request), keep_partial=keep))

    @guarded
    async def patch_limits(request: HttpRequest):
        body = await _body(request)
        unknown = set(body) - {"max_speed", "max_file_speed"}
        if unknown:
            raise UsageError(f"unknown field(s): {', '.join(sorted(unknown))}")
        return JSONResponse(await call(service.set_limits, **body))

    @guarded
    async def retry(request: HttpRequest):
        return JSONResponse(await call(service.retry))

    async def events(request: HttpRequest):
        from sse_starlette.sse import EventSourceResponse

        last = request.headers.get("last-event-id") or request.query_params.get("since")
        if last is not None and not str(last).isdigit():
            return _error(400, "Last-Event-ID must be an event id")
        since = int(last) if last is not None else service.last_event()
        kinds = tuple(k for k in request.query_params.get("kinds", "").split(",") if k)

        async def stream():
            nonlocal since
            while True:
                batch = service.events_since(since, kinds=kinds)
                for ev in batch:
                    since = ev["seq"]
                    yield {"id": str(ev["seq"]), "event": ev["kind"],
                           "data": json.dumps({"seq": ev["seq"], "time": ev["time"], "kind": ev["kind"],
                                               "job": ev["job_id"], "file": ev["file_id"], **ev["data"]})}
                if not batch:
                    await asyncio.sleep(EVENT_POLL)

        return EventSourceResponse(stream(), ping=10)

    async def prove(request: HttpRequest):
        nonce = request.query_params.get("nonce", "")
        if not NONCE.fullmatch(nonce):
            return _error(400, "nonce is 32 to 128 lowercase hex digits")
        return JSONResponse({"proof": proof(token, where, nonce)})

    async def openapi(request: HttpRequest):
        return Response(OPENAPI.read_bytes(), media_type="application/json")

    routes = [
        Route("/service", describe, methods=["GET"]),
        Route("/jobs", add_job, methods=["POST"]),
        Route("/jobs", list_jobs, methods=["GET"]),
        Route("/files", list_files, methods=["GET"]),
        Route("/files/{id:int}", get_file, methods=["GET"]),
        Route("/files/{id:int}", patch_file, methods=["PATCH"]),
        Route("/files/{id:int}", delete_file, methods=["DELETE"]),
        Route("/limits", patch_limits, methods=["PATCH"]),
        Route("/retry", retry, methods=["POST"]),
        Route("/events", events, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route(PROOF_PATH, prove, methods=["GET"]),
    ]
    middleware = [
        # Outermost first: a foreign Host is refused before anything else.
        Middleware(TrustedHostMiddleware, allowed_hosts=hosts),
        Middleware(Guard, token=token, origins=origins),
    ]
    return Starlette(routes=routes, middleware=middleware)
