#!/usr/bin/env bash
# Install everything the tests need, then run them:  ./test.sh [pytest args]
#
# - Debian packages (nginx with its echo module, aria2, curl, openssl,
#   strace, fuse3, chromium for the web page's tests) are installed when missing and this runs as root or with sudo;
#   otherwise it says exactly what to install.
# - A virtual environment (.venv, or $SEGDL_VENV) is created or reused, and
#   segdl is installed into it with its test extras.
# - The arguments go to pytest as they are (default: the whole suite, -q), in
#   two processes (pytest-xdist, whole files each; SEGDL_TEST_JOBS=0: one).
set -euo pipefail
cd "$(dirname "$0")"

need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
[ -e /usr/lib/nginx/modules/ngx_http_echo_module.so ] || need+=(libnginx-mod-http-echo)
command -v aria2c >/dev/null || need+=(aria2)
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
command -v strace >/dev/null || need+=(strace)
command -v fusermount3 >/dev/null || need+=(fuse3)  # the power-cut trials' FUSE filesystem
command -v chromium >/dev/null || need+=(chromium)  # the web page's tests (tests/test_web.py)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then sudo=(); elif sudo -n true 2>/dev/null; then sudo=(sudo); else
        echo "test.sh: missing Debian packages; install them and run again:" >&2
        echo "    sudo apt-get install -y ${need[*]}" >&2
        exit 1
    fi
    echo "test.sh: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    # Debian's nginx package starts a system instance; the tests run their own.
    "${sudo[@]}" systemctl stop nginx 2>/dev/null || "${sudo[@]}" service nginx stop 2>/dev/null || true
fi

venv=${SEGDL_VENV:-.venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -e '.[test,ray]'
. "$venv/bin/activate"
if [ $# -eq 0 ]; then set -- -q; fi
# Two pytest processes, each taking whole test files (most tests wait on
# paced servers, timeouts and child processes, not on the CPU): 8.5 min
# against 15.5 in one on a 2-core machine.  SEGDL_TEST_JOBS=0: one process.
exec python -m pytest -n "${SEGDL_TEST_JOBS:-2}" --dist loadfile "$@"
