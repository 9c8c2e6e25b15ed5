"""What the benchmarks share. They run as scripts (`python bench/bench_x.py`), which puts this folder on
sys.path; importing this module puts the repository there too, for `clv`, `model` and `api`."""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HOST = "127.0.0.1"  # servers under benchmark listen on loopback only


def verdict(ok: bool | None) -> str:
    """A target's verdict, in capitals when missed; None when the run gave no figure to judge."""
    return "no figure" if ok is None else "met" if ok else "MISSED"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def train_model(tmp: Path, customers: int, checkout: Path = ROOT) -> Path:
    """A small generated bank and a model trained on it, through the real CLIs of a checkout."""
    data, models = tmp / "data", tmp / "models"
    for command in (
        [sys.executable, "data_gen.py", "--customers", str(customers), "--out", str(data)],
        [sys.executable, "model.py", "train", "--data-dir", str(data), "--model-dir", str(models)],
    ):
        result = subprocess.run(command, cwd=checkout, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"{' '.join(command[1:3])} failed (exit {result.returncode}):\n{result.stderr}")
    return models
