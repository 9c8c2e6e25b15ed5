"""Where a request's time goes: the api served in this process under cProfile, with an API key and the metrics on,
put under bench/load.py's load, and the profile's top entries printed.

Run `python bench/profile_api.py --model-dir DIR` (a trained model: `python model.py train`), `--concurrency 8`
and `--seconds 10` by default; `--sort tottime` (own time) or `cumulative`, `--top 25`. The load generator is
another process, as in bench_api.py; the profiler slows the server several times, so the shares of the entries
mean something, their absolute times do not.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import HOST, ROOT, free_port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="a trained model folder")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--sort", choices=["tottime", "cumulative"], default="tottime")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--no-key", action="store_true", help="serve without keys (authentication off)")
    parser.add_argument("--output", type=Path, help="also save the profile there (pstats), for print_callers")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="profile_api_"))
    port = free_port()
    os.environ.update(
        CLV_HOST=HOST,
        CLV_PORT=str(port),
        CLV_MODEL_DIR=str(args.model_dir),
        CLV_DATA_DIR=str(tmp / "no-data"),
        CLV_TRAIN_ON_START="false",
        CLV_RATE_LIMIT="100000000/minute",
        CLV_LOG_FILE=str(tmp / "api.log"),
        CLV_API_KEYS_FILE=str(tmp / "api_keys.json"),
    )
    headers = []
    if not args.no_key:
        command = [sys.executable, "api.py", "keys", "add", "bench", "--scopes", "clv:predict"]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
        headers = ["--header", f"Authorization: Bearer {done.stdout.splitlines()[-1]}"]

    import uvicorn

    from api import app

    config = uvicorn.Config(app, host=HOST, port=port, access_log=False, log_level="warning")
    server = uvicorn.Server(config)
    profile = cProfile.Profile()
    result: dict = {}

    def load() -> None:
        while not server.started:
            time.sleep(0.1)
        command = [sys.executable, str(ROOT / "bench" / "load.py"), "--port", str(port), *headers]
        warmup = [*command, "--seconds", "1", "--concurrency", str(args.concurrency)]
        subprocess.run(warmup, capture_output=True, check=True)
        loop.call_soon_threadsafe(profile.enable)  # in the server's thread: cProfile profiles the thread it starts in
        measured = [*command, "--seconds", str(args.seconds), "--concurrency", str(args.concurrency)]
        done = subprocess.run(measured, capture_output=True, text=True, check=True)
        loop.call_soon_threadsafe(profile.disable)
        result.update(json.loads(done.stdout.splitlines()[-1]))
        server.should_exit = True

    async def serve() -> None:
        nonlocal loop
        loop = asyncio.get_running_loop()
        threading.Thread(target=load, daemon=True).start()
        await server.serve()

    loop: asyncio.AbstractEventLoop
    try:
        import uvloop  # as uvicorn serves api.py

        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(serve())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ok, errors, rps = result.get("ok", 0), result.get("errors", 0), result.get("rps", 0)
    print(f"{ok:,} requests, {errors} errors, {rps:,.0f}/s under cProfile")
    if args.output:
        profile.dump_stats(args.output)
    stats = pstats.Stats(profile).sort_stats(args.sort)
    stats.print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
