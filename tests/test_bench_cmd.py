"""``segdl bench``: the recommendation rule (pure), the embedded local
mirror, and a sweep against the session nginx."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import typer
from typer.testing import CliRunner

from segdl.cli.bench import bench
from segdl.cli.localmirror import LocalMirror, write_file
from segdl.engine.values.messages import TransferOptions
from segdl.engine.doors.mirrorbench import (
    Measurement,
    Recommendation,
    knee,
    measure_throughput,
    measure_ttfb,
    median_round,
    recommend,
)

MiB = 1 << 20


def _app() -> typer.Typer:
    """The real CLI once ``bench`` is registered there, else a tiny wrapper."""
    from segdl.cli.main import app

    for c in app.registered_commands:
        if (c.name or getattr(c.callback, "__name__", "")) == "bench":
            return app
    wrapper = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    wrapper.command(name="bench")(bench)

    @wrapper.command(name="noop", hidden=True)
    def _noop() -> None:  # a second command keeps "bench" a subcommand
        pass

    return wrapper


def _invoke(*args: str):
    return CliRunner().invoke(_app(), ["bench", *args], catch_exceptions=False)


def _check_doc_fields(doc: dict, counts: list[int]) -> None:
    assert set(doc) >= {"mirrors", "recommendation"}
    assert set(doc["recommendation"]) >= {"connections", "mirrors"}
    for m in doc["mirrors"]:
        assert set(m) >= {"url", "ttfb_ms", "ranges", "size", "results"}
        if m.get("error"):
            continue
        assert [r["connections"] for r in m["results"]] == counts
        for r in m["results"]:
            assert set(r) >= {"connections", "bytes", "seconds", "mbps", "error"}


# ------------------------------------------------------------- pure rule


def test_knee_is_smallest_count_within_90_percent():
    assert knee({1: 100.0, 4: 380.0, 16: 400.0, 64: 390.0}) == 4  # 380 >= 0.9 * 400
    assert knee({1: 100.0, 4: 300.0, 16: 400.0, 64: 410.0}) == 16  # 400 >= 369
    assert knee({1: 50.0, 4: None, 16: 49.0}) == 1  # failures ignored
    assert knee({1: None, 4: None}) is None
    assert knee({}) is None
    assert knee({1: 80.0, 4: 100.0}, share=0.8) == 1


def test_recommend_picks_knee_of_best_mirror_and_mirrors_within_half():
    curves = {
        "a": {1: 10.0, 4: 35.0, 16: 40.0, 64: 20.0},   # best 40: -x 16 (35 < 36)
        "b": {1: 30.0, 4: 95.0, 16: 100.0, 64: 99.0},  # best mirror: knee 4
        "c": {1: 60.0, 4: None},                       # 60 >= 50: kept
        "d": {1: None, 4: None},                       # failed everywhere
        "e": {},                                       # probe failed
    }
    rec = recommend(curves)
    assert rec == Recommendation(4, ["b", "c"])
    assert recommend(curves, mirror_share=0.3) == Recommendation(4, ["b", "c", "a"])
    assert recommend(curves, scaling_share=1.0).connections == 16


def test_recommend_edge_cases():
    assert recommend({}) == Recommendation(None, [])
    assert recommend({"a": {1: None}}) == Recommendation(None, [])
    # ties keep input order; exactly 50% is "within"
    assert recommend({"x": {1: 10.0}, "y": {1: 10.0}, "z": {1: 5.0}}).mirrors == ["x", "y", "z"]
    # a mirror without Range support is left out when others have it ...
    curves = {"plain": {1: 100.0, 4: None}, "ranged": {1: 20.0, 4: 70.0}}
    rec = recommend(curves, {"plain": False, "ranged": True})
    assert rec == Recommendation(4, ["ranged"])
    # ... but is still recommended when it is all there is
    assert recommend({"plain": {1: 5.0}}, {"plain": False}) == Recommendation(1, ["plain"])


def test_median_round():
    runs = [Measurement(4, 10, 1.0, r) for r in (30.0, 10.0, 20.0)]
    m = median_round(runs)
    assert m.mbps == 20.0 and m.rounds == [30.0, 10.0, 20.0]
    bad = Measurement(4, 0, 0.1, None, "HTTP 503")
    assert median_round([runs[0], bad]) is bad


# --------------------------------------------------------- local mirror


def test_local_mirror_file_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_file(a, 3 * MiB + 7)
    write_file(b, 3 * MiB + 7)
    data = a.read_bytes()
    assert len(data) == 3 * MiB + 7 and data == b.read_bytes()
    assert data[:MiB] != data[MiB:2 * MiB]  # blocks differ


def test_python_mirror_serves_ranges_and_cleans_up():
    opts = TransferOptions()
    with LocalMirror(2 * MiB + 3, "python") as m:
        assert m.kind == "python" and m.url.startswith("http://127.0.0.1:")
        workdir = m.workdir
        info, ttfb = measure_ttfb(m.url, opts, samples=2)
        assert not isinstance(info, Exception), info
        assert info.ranged and info.size == 2 * MiB + 3 and ttfb is not None and ttfb > 0
        r = measure_throughput(info, 3, 0, opts, timeout=10)
        assert r.error is None and r.bytes == 2 * MiB + 3 and r.complete and r.mbps > 0
    assert not workdir.exists()


def test_bench_local_json():
    res = _invoke("--local", "--json", "--local-size", "32M")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    _check_doc_fields(doc, [1, 4, 16, 64])
    (m,) = doc["mirrors"]
    assert m["ranges"] is True and m["size"] == 32 * MiB and m["ttfb_ms"] > 0
    for r in m["results"]:
        assert r["error"] is None and r["bytes"] == 32 * MiB and r["mbps"] > 0
    assert doc["recommendation"]["connections"] in (1, 4, 16, 64)
    assert doc["recommendation"]["mirrors"] == [m["url"]]
    assert doc["local"]["server"] in ("nginx", "python")


# ------------------------------------------------------------ vs. nginx


def test_bench_against_nginx(nginx):
    odd, big, missing = nginx.url("odd.bin"), nginx.url("big.bin"), nginx.url("missing.bin")
    res = _invoke(odd, big, missing, "--bytes", "8M", "--connections", "1,4", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    _check_doc_fields(doc, [1, 4])
    by_url = {m["url"]: m for m in doc["mirrors"]}
    assert [m["url"] for m in doc["mirrors"]] == [odd, big, missing]
    assert by_url[odd]["size"] == 5 * MiB + 12345
    assert [r["bytes"] for r in by_url[odd]["results"]] == [5 * MiB + 12345] * 2  # whole file < 8M
    assert [r["bytes"] for r in by_url[big]["results"]] == [8 * MiB] * 2  # never the whole file
    for url in (odd, big):
        assert by_url[url]["ranges"] is True
        assert all(r["error"] is None and r["mbps"] > 0 for r in by_url[url]["results"])
    assert "404" in by_url[missing]["error"] and by_url[missing]["results"] == []
    rec = doc["recommendation"]
    assert rec["connections"] in (1, 4) and missing not in rec["mirrors"] and rec["mirrors"]


def test_bench_table_and_failures(nginx):
    res = _invoke(nginx.url("odd.bin"), "http://127.0.0.1:1/nothing", "-c", "1,2")
    assert res.exit_code == 0, res.output
    assert "Recommendation: -x" in res.stdout and "Traceback" not in res.output
    assert "failed[1]" in res.stdout and "127.0.0.1:1/nothing" in res.stdout
    # nothing measurable: exit 3, still no traceback
    res = _invoke("http://127.0.0.1:1/nothing", "-q")
    assert res.exit_code == 3 and "No recommendation" in res.stdout


def test_bench_usage_errors():
    assert _invoke().exit_code == 2
    assert _invoke("http://127.0.0.1:1/x", "-c", "0,4").exit_code == 2
    assert _invoke("http://127.0.0.1:1/x", "--bytes", "lots").exit_code == 2


def test_bench_plot(nginx, tmp_path):
    out = tmp_path / "chart.png"
    res = _invoke(nginx.url("odd.bin"), "-c", "1,2", "--plot", str(out), "-q")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert res.exit_code == 2 and "matplotlib" in res.output and not out.exists()
        return
    assert res.exit_code == 0, res.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_interrupt_cleans_up_local_mirror(tmp_path):
    """SIGTERM during a --local run: exit 130, no nginx left, no temp dir."""
    script = (
        "import typer\n"
        "from segdl.cli.bench import bench\n"
        "app = typer.Typer(); app.command(name='bench')(bench)\n"
        "app.command(name='noop')(lambda: None)\n"
        "app()\n"
    )
    env = dict(os.environ, TMPDIR=str(tmp_path))
    proc = subprocess.Popen(
        [sys.executable, "-c", script, "bench", "--local", "--local-size", "256M",
         "--bytes", "0", "-c", "1", "--rounds", "20", "--timeout", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    import time

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not list(tmp_path.glob("segdl-bench-*/root/bench.bin")):
        time.sleep(0.05)
    time.sleep(1.0)
    proc.terminate()
    out, errout = proc.communicate(timeout=20)
    assert proc.returncode == 130, errout
    assert list(tmp_path.glob("segdl-bench-*")) == []
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path) not in ps
