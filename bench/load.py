"""The load generator of the service benchmarks: keep-alive HTTP/1.1 connections on asyncio and uvloop,
each sending the README's request one at a time, for a bounded time and request count.

Run `python bench/load.py --port P [--path /predict/clv] [--concurrency 8] [--seconds 10]`; it prints one
JSON line: requests answered 200, errors and their kinds, seconds, requests a second, p50 and p99 in ms.
It runs as a process of its own so that it never shares a server's GIL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from common import HOST

from clv.service.schemas.requests import EXAMPLE  # the README request, from the one schema

CONNECT_EVERY = 0.01  # seconds between the connections' opening


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """Send one request on a kept-alive connection; return the status after reading the whole body."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length is None:
        raise ValueError("response without Content-Length")
    await reader.readexactly(length)
    return status


async def _worker(
    port: int, request: bytes, stop: float, budget: list[int], latencies: list[float], errors: list[str], delay: float
) -> None:
    # connections open one after another, as clients arrive: with several server processes on one socket, the
    # first to wake would otherwise accept all of them at once and leave the others idle
    await asyncio.sleep(delay)
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        while time.perf_counter() < stop and budget[0] > 0:
            budget[0] -= 1
            started = time.perf_counter()
            try:
                status = await asyncio.wait_for(_one(reader, writer, request), timeout=10)
            except (OSError, ValueError, asyncio.IncompleteReadError, TimeoutError) as exc:
                errors.append(type(exc).__name__)
                writer.close()
                reader, writer = await asyncio.open_connection(HOST, port)
                continue
            if status == 200:
                latencies.append(time.perf_counter() - started)
            else:
                errors.append(str(status))
    finally:
        writer.close()


async def _load(port: int, path: str, concurrency: int, seconds: float, max_requests: int, headers: list[str]) -> dict:
    body = json.dumps(EXAMPLE).encode()
    more = "".join(f"{header}\r\n" for header in headers)
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n{more}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    errors: list[str] = []
    budget = [max_requests]
    started = time.perf_counter()
    stop = started + seconds
    await asyncio.gather(
        *(_worker(port, request, stop, budget, latencies, errors, i * CONNECT_EVERY) for i in range(concurrency))
    )
    elapsed = time.perf_counter() - started
    latencies.sort()
    n = len(latencies)

    def quantile(q: float) -> float:
        return latencies[min(n - 1, int(q * n))] * 1000 if n else float("nan")

    return {
        "ok": n,
        "errors": len(errors),
        "error_kinds": sorted(set(errors))[:5],
        "seconds": elapsed,
        "rps": n / elapsed,
        "p50_ms": quantile(0.50),
        "p99_ms": quantile(0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/predict/clv")
    parser.add_argument("--concurrency", type=int, default=8, help="connections, each one request at a time")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--header", action="append", default=[], help="'Name: value' sent with every request")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # plain asyncio still works, only slower on the client side
        pass
    result = asyncio.run(_load(args.port, args.path, args.concurrency, args.seconds, args.max_requests, args.header))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
