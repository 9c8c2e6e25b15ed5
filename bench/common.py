"""What the benchmarks share. They run as scripts (`python bench/bench_x.py`), which puts this folder on
sys.path; importing this module puts the repository there too, for `clv`, `model` and `api`."""

from __future__ import annotations

import socket
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
