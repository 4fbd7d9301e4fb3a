"""``segdl serve``: the engine's control API over HTTP (REST + server-sent
events), a thin door onto :class:`segdl.engine.doors.service.Service`, as ``get``
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
import math
import re
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from segdl.engine.doors import validation
from segdl.engine.values.errors import ConflictError, JournalError, SegdlError, StorageError, UsageError
from segdl.engine.journal.writer import EVENT_KINDS
from segdl.engine.rules.lifecycle import RECORDED
from segdl.engine.doors.service import EngineGone
from segdl.engine.doors.validation import FieldError

from .guard import NONCE, PROOF_PATH, Guard, proof
from .webauth import SECURITY_HEADERS
from .webroutes import routes as web_routes

OPENAPI = Path(__file__).with_name("openapi.json")
EVENT_POLL = 0.2  # seconds between looks at the journal for new events
MAX_DEPTH = 32  # levels of nesting in a body (a manifest needs 5)


def _error(status: int, message: str, field: str | None = None, headers: dict | None = None) -> JSONResponse:
    body = {"error": message, "status": status}
    if field is not None:
        body["field"] = field
    return JSONResponse(body, status_code=status, headers=headers)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def _constant(name: str):
    raise ValueError(f"{name} is not JSON")


async def _body(request: HttpRequest) -> dict:
    """The body as a JSON object: well-formed, finite numbers, at most
    MAX_DEPTH levels deep, every string valid Unicode."""
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = json.loads(raw, parse_float=_finite, parse_constant=_constant)
    except RecursionError:
        raise UsageError(f"the body nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as e:
        raise UsageError(f"the body is not JSON: {e}") from None
    stack = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise UsageError(f"the body nests deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            stack.extend((x, depth + 1) for kv in value.items() for x in kv)
        elif isinstance(value, list):
            stack.extend((x, depth + 1) for x in value)
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise UsageError("the body has a string with an unpaired surrogate (\\ud800-\\udfff)") from None
    if not isinstance(body, dict):
        raise UsageError("the body must be a JSON object")
    for key in sorted(body.keys() & _NOT_FIELDS):
        raise FieldError(key, "unknown field")
    return body


# Names a body's fields must not take: the handlers pass a body on as
# keyword arguments, after these.
_NOT_FIELDS = frozenset({"self", "fid"})


# ---------------------------------------------------------------- queries


def _number(lo: int, hi: int):
    def parse(name: str, value: str) -> int:
        if not re.fullmatch(r"[0-9]{1,19}", value) or not lo <= int(value) <= hi:
            raise FieldError(name, f"must be an integer from {lo} to {hi}")
        return int(value)
    return parse


def _choices(known: tuple[str, ...]):
    def parse(name: str, value: str) -> tuple[str, ...]:
        got = tuple(dict.fromkeys(v for v in value.split(",") if v))
        wrong = [v for v in got if v not in known]
        if wrong or not got:
            raise FieldError(name, f"{(wrong or [value])[0]!r} is not one of {', '.join(known)} "
                                   "(comma-separated)")
        return got
    return parse


def _flag(name: str, value: str) -> bool:
    if value not in ("true", "false"):
        raise FieldError(name, "must be true or false")
    return value == "true"


_ID = _number(1, validation.MAX_ID)
_SEQ = _number(0, validation.MAX_ID)


def _query(request: HttpRequest, allowed: dict) -> dict:
    """The query string checked against ``allowed`` (name -> parser)."""
    out: dict = {}
    for key, value in request.query_params.multi_items():
        if key not in allowed:
            known = ", ".join(allowed) or "none"
            raise FieldError(key, f"unknown query parameter (known: {known})")
        if key in out:
            raise FieldError(key, "given more than once")
        out[key] = allowed[key](key, value)
    return out


# ---------------------------------------------------------------- the app


def build_app(service, *, token: str, hosts: list[str], origins: set[str], where: str = "", sessions=None,
              announce=lambda: None, page_url: str | None = None,
              https_hosts: list[tuple[str, int]] = ()) -> Starlette:
    """The app for ``service`` (a started :class:`Service`), listening at
    ``where`` (its URL or socket path, for the proof: see guard.py);
    ``sessions`` (webauth.Sessions) serves the page and its logins, at
    ``page_url`` (default ``where``); ``hosts``, ``origins`` and
    ``https_hosts`` are guard.py's."""

    async def call(fn, *args, **kwargs):
        """A Service command (it waits for the engine's loop), off the event loop."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    def guarded(handler):
        async def run(request: HttpRequest):
            try:
                return await handler(request)
            except FieldError as e:
                return _error(400, e.message, field=e.field)
            except UsageError as e:
                return _error(400, e.message)
            except LookupError as e:
                return _error(404, str(e.args[0]) if e.args else "not found")
            except ConflictError as e:
                return _error(409, e.message)
            except (JournalError, StorageError) as e:
                return _error(503, e.message)
            except EngineGone as e:
                return _error(503, str(e))
            except SegdlError as e:
                if type(e) is SegdlError:  # segdl's own bug
                    return _error(500, e.message)
                return _error(409, e.message)
        return run

    @guarded
    async def add_job(request: HttpRequest):
        _query(request, {})
        body = await _body(request)
        return JSONResponse(await call(service.add_job, body), status_code=201)

    @guarded
    async def describe(request: HttpRequest):
        _query(request, {})
        return JSONResponse(service.describe())

    @guarded
    async def list_jobs(request: HttpRequest):
        _query(request, {})
        return JSONResponse(service.list_jobs())

    @guarded
    async def get_job(request: HttpRequest):
        _query(request, {})
        return JSONResponse(service.job(request.path_params["id"]))

    @guarded
    async def list_files(request: HttpRequest):
        q = _query(request, {"state": _choices(RECORDED), "job": _ID, "after": _SEQ,
                             "limit": _number(1, validation.MAX_PAGE)})
        return JSONResponse(service.list_files(q.get("state", ()), q.get("job"), q.get("after", 0),
                                               q.get("limit", validation.DEFAULT_PAGE)))

    @guarded
    async def get_file(request: HttpRequest):
        _query(request, {})
        return JSONResponse(service.file(request.path_params["id"]))

    @guarded
    async def patch_file(request: HttpRequest):
        _query(request, {})
        body = await _body(request)
        return JSONResponse(await call(service.set_file, request.path_params["id"], **body))

    @guarded
    async def delete_file(request: HttpRequest):
        q = _query(request, {"keep_partial": _flag, "erase": _flag})
        if q.get("erase"):
            if "keep_partial" in q:
                raise FieldError("keep_partial", "goes with a cancel; erase deletes the file and its data")
            return JSONResponse(await call(service.erase, request.path_params["id"]))
        return JSONResponse(await call(service.cancel, request.path_params["id"],
                                       keep_partial=q.get("keep_partial", False)))

    @guarded
    async def patch_limits(request: HttpRequest):
        _query(request, {})
        body = await _body(request)
        return JSONResponse(await call(service.set_limits, **body))

    @guarded
    async def retry(request: HttpRequest):
        _query(request, {})
        body = await _body(request)
        return JSONResponse(await call(service.retry, **body))

    @guarded
    async def events(request: HttpRequest):
        from sse_starlette.sse import EventSourceResponse

        q = _query(request, {"since": _SEQ, "kinds": _choices(EVENT_KINDS)})
        last = request.headers.get("last-event-id")
        since = _SEQ("Last-Event-ID", last) if last is not None else q.get("since")
        if since is None:
            since = service.last_event()
        kinds = q.get("kinds", ())
        # A page's stream ends with its session (logged out, expired); a
        # script's token holds as long as the service runs.
        session = (sessions.session_of(request.headers.get("cookie", "").encode("latin-1"))
                   if request.state.auth == "session" else None)

        async def stream():
            nonlocal since
            while session is None or sessions.valid(session):
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

    async def http_error(request: HttpRequest, exc: HTTPException):
        """The router's own refusals (no such route, method not allowed), as JSON."""
        message = {404: f"no such endpoint: {request.url.path} (see GET /openapi.json)",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, exc.detail)
        return _error(exc.status_code, message, headers=exc.headers)

    async def server_error(request: HttpRequest, exc: Exception):
        # Starlette answers this outside Guard: the page's headers go on here.
        return _error(500, f"internal error ({type(exc).__name__}); this is a bug in segdl, please report it",
                      headers={k.decode(): v.decode() for k, v in SECURITY_HEADERS})

    routes = [
        Route("/service", describe, methods=["GET"]),
        Route("/jobs", add_job, methods=["POST"]),
        Route("/jobs", list_jobs, methods=["GET"]),
        Route("/jobs/{id:int}", get_job, methods=["GET"]),
        Route("/files", list_files, methods=["GET"]),
        Route("/files/{id:int}", get_file, methods=["GET"]),
        Route("/files/{id:int}", patch_file, methods=["PATCH"]),
        Route("/files/{id:int}", delete_file, methods=["DELETE"]),
        Route("/limits", patch_limits, methods=["PATCH"]),
        Route("/retry", retry, methods=["POST"]),
        Route("/events", events, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route(PROOF_PATH, prove, methods=["GET"]),
        *web_routes(service, sessions, guarded=guarded, call=call, body=_body, query=_query, error=_error,
                    announce=announce, where=page_url or where),
    ]
    middleware = [Middleware(Guard, token=token, hosts=hosts, origins=origins, sessions=sessions,
                             https_hosts=https_hosts)]
    return Starlette(routes=routes, middleware=middleware,
                     exception_handlers={HTTPException: http_error, Exception: server_error})
