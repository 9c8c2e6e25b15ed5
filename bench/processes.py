"""One command of the project run as a fresh process tree, sampled while it runs: each process's role (client,
scheduler, nanny, worker, helper), its peak resident memory (the larger of the sampled RSS and the kernel's
high-water mark, VmHWM) and its CPU time, with the command's wall time and log. bench_scale.py measures every
command of a partitioned bank with it."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from common import ROOT

SAMPLE_S = 0.2
ROLES = {
    "client": "the CLI process; with a LocalCluster also the scheduler and the nannies",
    "scheduler": "a separate scheduler process",
    "nanny": "a separate nanny process (a parent of workers)",
    "worker": "a worker process (a child of the client, started by its nanny)",
    "helper": "multiprocessing's resource tracker",
}


@dataclass
class Seen:
    """One process of a command's tree: what it was, and the most memory and CPU it was seen to use."""

    pid: int
    ppid: int
    role: str
    cmdline: str
    peak_bytes: int = 0
    cpu_s: float = 0.0


def high_water(pid: int) -> int:
    """The kernel's peak RSS of a process (Linux VmHWM), 0 where unknown."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def role_of(pid: int, root: int, cmdline: str) -> str:
    if pid == root:
        return "client"
    if "resource_tracker" in cmdline or "forkserver" in cmdline:
        return "helper"
    if re.search(r"dask[-_ ]scheduler|dask scheduler", cmdline):
        return "scheduler"
    return "worker"  # a nanny's child; a worker that has workers below it is renamed nanny afterwards


class TreeSampler:
    """Walks the process tree under `root` every SAMPLE_S seconds in a thread, keeping each process's peak."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.seen: dict[int, Seen] = {}
        self.handles: dict[int, psutil.Process] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def __enter__(self) -> TreeSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()

    def loop(self) -> None:
        while True:
            self.sample()
            if self.done.wait(SAMPLE_S):
                return

    def tree(self) -> list[psutil.Process]:
        try:
            root = self.handles.get(self.root) or psutil.Process(self.root)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def sample(self) -> None:
        for found in self.tree():
            process = self.handles.setdefault(found.pid, found)  # the first handle keeps its identity
            try:
                with process.oneshot():
                    if process.pid not in self.seen:
                        role = role_of(process.pid, self.root, "")
                        self.seen[process.pid] = Seen(process.pid, process.ppid(), role, "")
                    seen = self.seen[process.pid]
                    if not seen.cmdline:  # empty for a moment while a process starts
                        seen.cmdline = " ".join(process.cmdline())
                        seen.role = role_of(process.pid, self.root, seen.cmdline)
                    rss, cpu = process.memory_info().rss, process.cpu_times()
            except psutil.Error:
                continue
            seen.peak_bytes = max(seen.peak_bytes, rss, high_water(process.pid))
            seen.cpu_s = max(seen.cpu_s, cpu.user + cpu.system)

    def processes(self) -> list[Seen]:
        parents = {seen.ppid for seen in self.seen.values() if seen.role == "worker"}
        for seen in self.seen.values():
            if seen.role == "worker" and seen.pid in parents:
                seen.role = "nanny"
        return sorted(self.seen.values(), key=lambda seen: (list(ROLES).index(seen.role), seen.pid))


def stop_tree(process: subprocess.Popen, sampler: TreeSampler) -> None:
    """End a command we started and every process below it (each by its handle, so by its identity). SIGINT
    first: the command then removes its staging folder and closes its cluster as on Ctrl-C."""
    below = sampler.tree()[1:]
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for child in below:
        with contextlib.suppress(psutil.Error):
            child.kill()


def mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MB"


@dataclass
class Run:
    label: str
    command: str
    seconds: float
    returncode: int
    load_before: float  # the machine's 1-minute load average as the command started: others' work shows here
    processes: list[Seen] = field(default_factory=list)
    timeline: list[tuple[float, str]] = field(default_factory=list)  # the command's log lines, seconds from start
    log: str = ""
    figure: str = ""  # the headline figure, for the report

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def cpu_s(self) -> float:
        return sum(p.cpu_s for p in self.processes)

    def peak(self, role: str) -> int:
        return max((p.peak_bytes for p in self.processes if p.role == role), default=0)

    def count(self, role: str) -> int:
        return sum(p.role == role for p in self.processes)

    def roles(self) -> list[str]:
        return [role for role in ROLES if self.count(role)]


def timeline(log: str, started: float) -> list[tuple[float, str]]:
    """The log lines of the commands (`%(asctime)s %(message)s`), as seconds after the command started."""
    lines = []
    for line in log.splitlines():
        found = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (.*)", line)
        if found:
            at = dt.datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            lines.append((round(at - started, 2), found.group(2)))
    return lines


def run(label: str, args: list[object], logs: Path) -> Run:
    """One command line of the project, in its own session, from the repository's folder, on a LocalCluster
    (CLV_DASK_SCHEDULER is left out: a cluster elsewhere would leave its processes out of the figures)."""
    command = [sys.executable, *map(str, args)]
    env = {name: value for name, value in os.environ.items() if name != "CLV_DASK_SCHEDULER"}
    log = logs / (re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") + ".log")
    load = os.getloadavg()[0]
    print(f"  {label} ...", end="", flush=True)
    with log.open("wb") as out:
        started, wall = time.perf_counter(), time.time()
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        with TreeSampler(process.pid) as sampler:
            try:
                code = process.wait()
            except BaseException:
                stop_tree(process, sampler)
                raise
        seconds = time.perf_counter() - started
    text = log.read_text()
    done = Run(label, " ".join(map(str, args)), seconds, code, load, sampler.processes(), timeline(text, wall), text)
    workers = done.count("worker")
    print(
        f" {seconds:.1f} s (CPU {done.cpu_s:.1f} s, load {load:.1f} before); peak client {mb(done.peak('client'))}"
        + (f", worker {mb(done.peak('worker'))} (max of {workers})" if workers else "")
        + ("" if done.ok else f"; FAILED (exit {code})"),
        flush=True,
    )
    if not done.ok:
        print("    " + "\n    ".join(text.strip().splitlines()[-15:]), flush=True)
    return done
