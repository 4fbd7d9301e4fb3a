"""The page of ``segdl serve`` (``/``, its files under ``/web/``), its
login, and the endpoints it needs beyond the API's first ones: many files
at once (``POST /files/bulk``), a review before a job starts (``POST
/review``), re-verifying finished files (``POST /verify``), and a
finished file as a download (``GET /files/{id}/content``).

The page is static files shipped in the package (cli/web/: the HTML, a
style sheet, and JavaScript modules with no library), read
when asked for: nothing is built, nothing comes from another origin, and
nothing here is imported by any command but ``segdl serve``.  Everything
but ``GET /login`` needs a session or the token (guard.py).
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request as HttpRequest
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .webauth import CODE_TTL, LOGIN_PATH, LOGOUT_PATH

WEB = Path(__file__).with_name("web")
JS = "text/javascript; charset=utf-8"
STATIC = {"index.html": "text/html; charset=utf-8", "app.css": "text/css; charset=utf-8",
          **{f"{m}.js": JS for m in ("app", "util", "store", "downloads", "add", "library", "formats")}}


# What GET /login answers once the code is good: no script (the CSP
# allows none), a refresh to / and a link for a browser that ignores it.
LANDING = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="0; url=/">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>segdl: logged in</title></head>
<body><p>Logged in. <a href="/" id="continue">Open segdl</a></p></body></html>
"""


def _static(name: str) -> Response:
    return Response(WEB.joinpath(name).read_bytes(), media_type=STATIC[name],
                    headers={"cache-control": "no-cache"})


def routes(service, sessions, *, guarded, call, body, query, error, announce, where: str = "") -> list[Route]:
    """``announce()`` prints a fresh login URL (after one is used);
    ``where`` is the page's URL (the service's, or its ``--public-url``)."""

    async def page(request: HttpRequest):
        return _static("index.html")

    async def asset(request: HttpRequest):
        name = request.path_params["name"]
        if name not in STATIC or name == "index.html":
            return error(404, f"no such file: /web/{name}")
        return _static(name)

    async def favicon(request: HttpRequest):
        return Response(status_code=204)  # (no icon; not a 404 in the console)

    async def login(request: HttpRequest):
        code = request.query_params.get("code", "")
        session = sessions.redeem(code) if sessions is not None else None
        if session is None:
            return error(403, "this login code is used up, expired or wrong: open the newest login URL "
                              "segdl serve printed")
        announce()
        # Not a redirect: a navigation that began on another page (a link
        # in a notebook at 127.0.0.1:8888) stays cross-origin through a
        # redirect, so the browser would send the new cookie with neither
        # SameSite=Strict nor Sec-Fetch-Site: same-origin, and the user
        # would land logged out, the code spent.  This page's own
        # navigation (a refresh, or its link) begins here, on this origin.
        return HTMLResponse(LANDING, headers={"set-cookie": sessions.set_cookie(session, request.state.https),
                                              "cache-control": "no-store"})

    async def logout(request: HttpRequest):
        if sessions is None:
            return JSONResponse({"ok": True})
        sessions.end(sessions.session_of(request.headers.get("cookie", "").encode("latin-1")))
        return JSONResponse({"ok": True}, headers={"set-cookie": sessions.clear_cookie(request.state.https)})

    @guarded
    async def login_code(request: HttpRequest):
        """A fresh login URL, for ``segdl login`` (with the token: a page's
        session cannot make codes for other browsers)."""
        query(request, {})
        if sessions is None:
            return error(409, "this service listens on a Unix socket: a browser cannot open it")
        if request.state.auth != "token":
            return error(403, "a login code needs the token (segdl login), not a page's session")
        return JSONResponse({"url": f"{where}{LOGIN_PATH}?code={sessions.new_code()}", "expires_in": CODE_TTL},
                            headers={"cache-control": "no-store"})

    @guarded
    async def content(request: HttpRequest):
        """A finished file, as a download (never shown as a page)."""
        from starlette.responses import FileResponse

        query(request, {})
        path = await call(service.finished_path, request.path_params["id"])
        return FileResponse(path, media_type="application/octet-stream", filename=path.name,
                            content_disposition_type="attachment")

    @guarded
    async def bulk(request: HttpRequest):
        query(request, {})
        return JSONResponse(await call(service.bulk, await body(request)))

    @guarded
    async def review(request: HttpRequest):
        query(request, {})
        return JSONResponse(await call(service.review, await body(request)))

    @guarded
    async def verify(request: HttpRequest):
        query(request, {})
        return JSONResponse(await call(service.reverify, await body(request)))

    return [Route("/files/bulk", bulk, methods=["POST"]), Route("/review", review, methods=["POST"]),
            Route("/verify", verify, methods=["POST"]), Route("/files/{id:int}/content", content, methods=["GET"]),
            Route("/", page, methods=["GET"]), Route("/web/{name}", asset, methods=["GET"]),
            Route("/favicon.ico", favicon, methods=["GET"]),
            Route(LOGIN_PATH, login, methods=["GET"]), Route(LOGOUT_PATH, logout, methods=["POST"]),
            Route("/login-codes", login_code, methods=["POST"])]
