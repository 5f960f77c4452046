"""The load generator: a fixed rate on loopback only, every request counted, and the caller's
garbage collector left as it was found (it is paused while requests are timed)."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from riskstrat.bench.loadtest import choose, run_load


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the generator expects

    def do_GET(self) -> None:  # the standard library names it so
        body = b"missing" if self.path.startswith("/missing") else b'{"ok": true}'
        self.send_response(404 if self.path.startswith("/missing") else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.slow  # a timed load of two seconds
def test_every_request_is_sent_counted_and_timed(server):
    result = run_load(
        server, paths=choose(["a", "b", "missing"], "/{}"), headers={}, rate=40, seconds=1.5
    )
    assert result.sent == 60 == len(result.latencies_ms)
    assert result.ok + result.errors == 60
    assert result.statuses.get(404, 0) == result.errors > 0  # about a third, by chance
    assert result.ok == result.statuses[200] > 0
    assert all(0 < ms < 10_000 for ms in result.latencies_ms)
    summary = result.summary()
    assert summary["requests"] == 60 and summary["p50_ms"] <= summary["p99_ms"]


@pytest.mark.slow  # a timed load of two seconds
def test_the_collector_is_restored_after_the_run(server):
    assert gc.isenabled()
    run_load(server, paths=choose(["a"], "/{}"), headers={}, rate=20, seconds=0.5)
    assert gc.isenabled() and gc.get_freeze_count() == 0
    gc.disable()
    try:
        run_load(server, paths=choose(["a"], "/{}"), headers={}, rate=20, seconds=0.5)
        assert not gc.isenabled()  # a caller that had it off keeps it off
    finally:
        gc.enable()


def test_only_loopback_and_bounded_loads():
    with pytest.raises(ValueError, match="loopback only"):
        run_load("http://10.0.0.1:80", paths=choose(["a"], "/{}"), headers={}, seconds=1)
    with pytest.raises(ValueError, match="bounded"):
        run_load("http://127.0.0.1:1", paths=choose(["a"], "/{}"), headers={}, seconds=601)
