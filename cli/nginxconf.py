"""What a test nginx is told and what it says: its configuration, rendered
from an :class:`~segdl.cli.nginx.Nginx`'s options (pure), and its access
log's format and parser.  nginx.py runs the process."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"
LOCALHOST = "127.0.0.1"

# Tab-separated; the parser below depends on this order.
_LOG_FIELDS = (
    ("msec", "$msec"),
    ("method", "$request_method"),
    ("uri", "$request_uri"),
    ("status", "$status"),
    ("bytes_sent", "$bytes_sent"),
    ("body_bytes_sent", "$body_bytes_sent"),
    ("range", "$http_range"),
    ("connection", "$connection"),
    ("connection_requests", "$connection_requests"),
    ("request_time", "$request_time"),
    ("completion", "$request_completion"),
    ("if_range", "$http_if_range"),
    ("protocol", "$server_protocol"),
    ("ssl_reused", "$ssl_session_reused"),
)
_LOG_INTS = {"status", "bytes_sent", "body_bytes_sent", "connection", "connection_requests"}
_LOG_FLOATS = {"msec", "request_time"}


def render_config(n, port: int, wd: Path, user_lines: list[str]) -> str:
    """nginx.conf for the options of ``n`` (an Nginx) on ``port``, its
    private files under ``wd``."""
    listen = f"{LOCALHOST}:{port}"
    if n.tls is not None:
        listen += " ssl"
        if n.http2:
            listen += " http2"
    if n.sndbuf:
        listen += f" sndbuf={n.sndbuf}"
    log_format = "\\t".join(var for _, var in _LOG_FIELDS)
    lines = []
    if n.echo_sleep_ms is not None:
        lines.append(f"load_module {ECHO_MODULE};")
    lines += [
        "daemon off;",
        # nginx 1.22 without a master process segfaults on an inherited
        # listening socket (ngx_single_process_cycle); with one worker
        # the master only forks it and waits.
        f"master_process {'on' if n.pace else 'off'};",
        *user_lines,
        "worker_processes 1;",
        f"pid {wd}/nginx.pid;",
        "error_log stderr notice;",
        "events { worker_connections 4096; }",
        "http {",
        f"    client_body_temp_path {wd}/tmp/body;",
        f"    proxy_temp_path {wd}/tmp/proxy;",
        f"    fastcgi_temp_path {wd}/tmp/fastcgi;",
        f"    uwsgi_temp_path {wd}/tmp/uwsgi;",
        f"    scgi_temp_path {wd}/tmp/scgi;",
        "    types { }",
        "    default_type application/octet-stream;",
        f"    log_format segdl \"{log_format}\";",
        f"    access_log {wd}/access.log segdl;",
        "    sendfile on;",
        "    tcp_nopush on;",
        "    keepalive_requests 100000;",
        "    keepalive_timeout 65;",
        "    etag on;",
        "    open_file_cache off;",
        "    server_tokens off;",
    ]
    if n.limit_rate:
        lines.append(f"    limit_rate {n.limit_rate};")
    if n.extra_http:
        lines.append(n.extra_http)
    lines += [
        "    server {",
        f"        listen {listen};",
        "        server_name localhost;",
        f"        root {n.root};",
    ]
    if n.tls is not None:
        cert, key = n.tls
        lines += [
            f"        ssl_certificate {cert};",
            f"        ssl_certificate_key {key};",
            # Resumable sessions, as CDNs offer (nginx's default keeps
            # none, so no client could resume).
            "        ssl_session_cache shared:SEGDL_TLS:4m;",
        ]
    if n.proxy is not None:
        lines += [
            "        location / {",
            f"            proxy_pass {n.proxy};",
            "            proxy_http_version 1.1;",
            "            proxy_set_header Host $http_host;",
            "            proxy_redirect off;",
            "        }",
        ]
    elif n.echo_sleep_ms is not None:
        secs = f"{n.echo_sleep_ms / 1000:.3f}"
        lines += [
            f"        location / {{ echo_sleep {secs}; echo_exec @file; }}",
            "        location @file { }",
        ]
    else:
        lines.append("        location / { }")
    if n.extra_server:
        lines.append(n.extra_server)
    lines += ["    }", "}", ""]
    return "\n".join(lines)


def parse_log_line(line: str) -> dict:
    parts = line.split("\t")
    entry: dict = {}
    for (key, _), raw in zip(_LOG_FIELDS, parts):
        value: object = raw
        if key in _LOG_INTS:
            value = int(raw) if raw.isdigit() else None
        elif key in _LOG_FLOATS:
            try:
                value = float(raw)
            except ValueError:
                value = None
        elif key == "completion":
            value = raw == "OK"
        elif raw == "-" or raw == "":
            value = None
        entry[key] = value
    entry["path"] = urllib.parse.unquote(str(entry.get("uri") or "").split("?", 1)[0])
    return entry
