"""The guard against slow creep: the short benchmarks, run against this checkout and another git ref in one run,
in turns, with their ratios.

Run `make bench-quick BASE=<ref>` (or `python bench/quick.py --base <ref>`; default: HEAD, the last commit against
the working tree). The ref is checked out as a git worktree in a temporary folder and every stage runs the real
command lines of each checkout, with this venv's Python:

- train: `model.py train` on the default bank (10,000 customers), wall seconds;
- score: `model.py score` of a partitioned bank of 100,000 customers on 2 workers, customers a second, end to end;
- api: `python api.py` answering POST /predict/clv at concurrency 8 (bench/load.py), requests a second.

The two sides take turns (A B, then B A, ...), so that a machine that slows down during the run slows both; each
figure is the best of its rounds. The last line is the one an issue's closing note carries.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from common import HOST, ROOT, free_port

SCORED = 100_000  # customers of the partitioned bank scored
PARTITIONS = 8
LOAD_SECONDS = 5.0


@dataclass
class Side:
    """One checkout under measure: its folder, the model it trained, and its figures by stage."""

    name: str
    checkout: Path
    work: Path
    figures: dict[str, list[float]] = field(default_factory=dict)

    @property
    def models(self) -> Path:
        return self.work / "models"

    def record(self, stage: str, value: float) -> None:
        self.figures.setdefault(stage, []).append(value)


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    """Run a command line of a checkout to its end; its wall seconds (its output goes to a log on failure)."""
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench/quick.py: {' '.join(command)} in {cwd} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def train(side: Side, bank: Path) -> None:
    seconds = run(
        [sys.executable, "model.py", "train", "--data-dir", str(bank), "--model-dir", str(side.models)], side.checkout
    )
    side.record("train", seconds)


def score(side: Side, bank: Path) -> None:
    output = side.work / "scores.parquet"
    command = [sys.executable, "model.py", "score", "--data-dir", str(bank), "--model-dir", str(side.models)]
    seconds = run([*command, "--output", str(output), "--workers", "2", "--quiet"], side.checkout)
    side.record("score", SCORED / seconds)


@contextlib.contextmanager
def serving(side: Side, bank: Path) -> Iterator[int]:
    """`python api.py` of a checkout on a free loopback port, serving the model it trained, until the block ends."""
    port = free_port()
    env = {
        **os.environ,
        "CLV_PORT": str(port),
        "CLV_HOST": HOST,
        "CLV_MODEL_DIR": str(side.models),
        "CLV_DATA_DIR": str(bank),
        "CLV_LOG_FILE": str(side.work / "api.log"),
        "CLV_RATE_LIMIT": "100000000/minute",
    }
    process = subprocess.Popen(
        [sys.executable, "api.py"], cwd=side.checkout, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(OSError), urllib.request.urlopen(f"http://{HOST}:{port}/readyz", timeout=2) as up:
                if up.status == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"bench/quick.py: api.py of {side.name} did not become ready")
            time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        process.wait(30)


def api(side: Side, bank: Path) -> None:
    with serving(side, bank) as port:
        load = [sys.executable, str(ROOT / "bench" / "load.py"), "--port", str(port), "--concurrency", "8"]
        for seconds in (1.0, LOAD_SECONDS):  # a warm-up, then the measure
            done = subprocess.run([*load, "--seconds", str(seconds)], capture_output=True, text=True, check=True)
        figures = json.loads(done.stdout.strip().splitlines()[-1])
    if figures.get("errors"):
        raise SystemExit(f"bench/quick.py: api.py of {side.name} answered errors: {figures['errors']}")
    side.record("api", figures["rps"])


STAGES = (
    ("train", "train the default bank", "s", train),
    ("score", f"score {SCORED:,} partitioned, 2 workers", "customers/s", score),
    ("api", "POST /predict/clv at concurrency 8", "req/s", api),
)


def worktree(ref: str, folder: Path) -> tuple[Path, str]:
    """The ref checked out (detached) in `folder`, and its commit."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=ROOT, capture_output=True, text=True
    )
    if commit.returncode != 0:
        raise SystemExit(f"bench/quick.py: --base {ref}: not a commit of this repository")
    subprocess.run(
        ["git", "worktree", "add", "--detach", "--quiet", str(folder), commit.stdout.strip()], cwd=ROOT, check=True
    )
    return folder, commit.stdout.strip()[:10]


def best(side: Side, stage: str) -> float:
    values = side.figures[stage]
    return min(values) if stage == "train" else max(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="HEAD", help="the git ref to compare with (default HEAD)")
    parser.add_argument("--rounds", type=int, default=2, help="turns each side takes at every stage (default 2)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="clv-quick-") as tmp:
        tmp = Path(tmp)
        base_checkout, commit = worktree(args.base, tmp / "base-checkout")
        try:
            sides = [Side("this", ROOT, tmp / "this"), Side("base", base_checkout, tmp / "base")]
            print(f"bench-quick: this checkout against {args.base} ({commit}), {args.rounds} rounds in turns")
            default, scored = tmp / "default", tmp / "scored"
            run([sys.executable, "data_gen.py", "--out", str(default), "--quiet"], ROOT)
            run(
                [
                    sys.executable,
                    "data_gen.py",
                    "--customers",
                    str(SCORED),
                    "--partitions",
                    str(PARTITIONS),
                    "--out",
                    str(scored),
                    "--quiet",
                ],
                ROOT,
            )
            for key, label, unit, stage in STAGES:
                bank = default if key != "score" else scored
                for turn in range(args.rounds):
                    for side in sides if turn % 2 == 0 else sides[::-1]:
                        stage(side, bank if key != "api" else default)
                this, base = best(sides[0], key), best(sides[1], key)
                ratio = base / this if key == "train" else this / base  # above 1: this checkout is faster
                print(f"  {label:<40} {this:>10,.1f} {base:>10,.1f} {unit:<12} {ratio:.2f}x", flush=True)
                sides[0].record(f"{key}_ratio", ratio)
            line = ", ".join(f"{key} {sides[0].figures[f'{key}_ratio'][0]:.2f}x" for key, *_ in STAGES)
            print(f"bench-quick against {args.base} ({commit}): {line} (above 1: faster than the base)")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_checkout)], cwd=ROOT, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
