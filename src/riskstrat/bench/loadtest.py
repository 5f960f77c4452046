"""An open-loop load generator for the API, on loopback only and bounded in time.

Requests start at a fixed rate whatever the server's speed (open loop), so queueing shows up
in the latencies instead of silently lowering the rate, the mistake closed-loop tools make.
Each request's latency runs from its scheduled start.
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import numpy as np

from riskstrat.errors import UsageError


@dataclass
class LoadResult:
    name: str
    rate_per_second: float
    seconds: float
    sent: int = 0
    ok: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.asarray([np.nan])
        return {
            "name": self.name,
            "target_rate_per_second": self.rate_per_second,
            "achieved_rate_per_second": round(self.sent / self.seconds, 1) if self.seconds else 0,
            "seconds": round(self.seconds, 1),
            "requests": self.sent,
            "ok": self.ok,
            "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "p50_ms": round(float(np.nanpercentile(lat, 50)), 2),
            "p95_ms": round(float(np.nanpercentile(lat, 95)), 2),
            "p99_ms": round(float(np.nanpercentile(lat, 99)), 2),
            "max_ms": round(float(np.nanmax(lat)), 2),
        }


def check_loopback(base_url: str) -> None:
    host = urlparse(base_url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise UsageError(
            f"load tests run against loopback only, not {host!r}",
            hint="serve the API on 127.0.0.1 and load that",
        )


class _Connection:
    """One keep-alive HTTP/1.1 connection: a request at a time, responses read by length.

    Hand-written because the generator shares the machine with the server: a full client
    library costs more CPU per request than the server does, and would be measured instead.
    """

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> int:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        request = f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n{self.extra}\r\n"
        self.writer.write(request.encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value.strip())
        if length:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _run(
    base_url: str,
    paths: Callable[[random.Random], str],
    headers: dict[str, str],
    rate: float,
    seconds: float,
    name: str,
    connections: int,
    seed: int,
) -> LoadResult:
    url = urlparse(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    result = LoadResult(name=name, rate_per_second=rate, seconds=seconds)
    rng = random.Random(seed)  # noqa: S311 - picks test paths, not secrets
    idle: asyncio.Queue[_Connection] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(_Connection(host, port, headers))
    start = time.perf_counter()
    total = int(rate * seconds)
    running: set[asyncio.Task[None]] = set()  # in flight only: finished ones are let go

    async def one(scheduled: float, path: str) -> None:
        conn = await idle.get()  # waiting for a connection counts: latency is from schedule
        try:
            status = await asyncio.wait_for(conn.get(path), timeout=10.0)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError):
            status = 0
            conn.close()
        idle.put_nowait(conn)
        result.latencies_ms.append((time.perf_counter() - scheduled) * 1000)
        result.statuses[status] = result.statuses.get(status, 0) + 1
        if status == 200:
            result.ok += 1
        else:
            result.errors += 1

    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(scheduled, paths(rng)))
        running.add(task)
        task.add_done_callback(running.discard)
        result.sent += 1
    await asyncio.gather(*running)
    result.seconds = time.perf_counter() - start
    while not idle.empty():
        idle.get_nowait().close()
    return result


def run_load(
    base_url: str,
    *,
    paths: Callable[[random.Random], str],
    headers: dict[str, str],
    rate: float = 200.0,
    seconds: float = 60.0,
    name: str = "load",
    connections: int = 64,
    seed: int = 1,
) -> LoadResult:
    """Send ``rate`` requests a second for ``seconds`` (at most 10 minutes) to loopback."""
    check_loopback(base_url)
    if not 0 < seconds <= 600 or not 0 < rate <= 5000:
        raise UsageError("load is bounded: 0 < seconds <= 600 and 0 < rate <= 5000")
    # The generator's own pauses would be measured as the server's latency. A full garbage
    # collection of the caller's heap (a benchmark holds a whole population) took up to 300
    # ms, and delayed every request in flight and every one due meanwhile. So, as timeit
    # does, no collection runs while requests are timed; what exists already is frozen.
    gc.collect()
    gc.freeze()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return asyncio.run(_run(base_url, paths, headers, rate, seconds, name, connections, seed))
    finally:
        if was_enabled:
            gc.enable()
        gc.unfreeze()


def choose(items: Sequence[str], template: str) -> Callable[[random.Random], str]:
    """A path generator that fills ``template`` with a random item each time."""
    return lambda rng: template.format(rng.choice(items))
