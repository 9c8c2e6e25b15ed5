"""A real Dask cluster, started as an operator starts one (`dask scheduler`, two `dask worker`s, from the
project's venv, in a folder of their own and with no PYTHONPATH: the installed package is what they import);
the commands reach it with --scheduler or CLV_DASK_SCHEDULER and give the numbers of an in-process run, even
when a worker dies in the middle of the run. Select these tests with `pytest -m cluster`."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from distributed import Client

from clv.batch.scoring import write_scores
from clv.common.cluster import LocalRunner, runner
from clv.data.layout import open_bank
from clv.model import artifacts
from clv.model.features import build_features
from clv.model.training import train_and_save
from clv.synthetic import generator
from tests.conftest import ROOT
from tests.servers import free_port, run_script

pytestmark = pytest.mark.cluster

DASK = Path(sys.executable).with_name("dask")
SMALL = generator.Config(customers=1_200, start=dt.date(2022, 1, 1), end=dt.date(2024, 12, 31), seed=21)
LARGE = generator.Config(customers=19_200, start=dt.date(2022, 1, 1), end=dt.date(2024, 12, 31), seed=22)


class DaskCluster:
    """`dask scheduler` and `dask worker` processes on a free loopback port, each in its own process group
    (a worker's nanny and the worker it spawns die together), with their output in `log_dir`."""

    def __init__(self, log_dir: Path, workers: int = 2, **env: str) -> None:
        self.log_dir, self.port = log_dir, free_port()
        log_dir.mkdir(parents=True, exist_ok=True)
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CLV_") and k != "PYTHONPATH"} | env
        self.processes: list[subprocess.Popen] = []
        # should this process die without stopping them, they stop themselves: idle 10 min, or orphaned 1 min
        self.scheduler = self._start(
            "scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard", "--idle-timeout", "600"
        )
        self.workers = [self.add_worker() for _ in range(workers)]

    def _start(self, kind: str, *args: str) -> subprocess.Popen:
        with (self.log_dir / f"{kind}-{len(self.processes)}.log").open("wb") as log:
            process = subprocess.Popen(
                [str(DASK), kind, *args],
                cwd=self.log_dir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def add_worker(self) -> subprocess.Popen:
        return self._start(
            "worker",
            self.address,
            "--nworkers",
            "1",
            "--nthreads",
            "1",
            "--memory-limit",
            "1GiB",
            "--no-dashboard",
            "--death-timeout",
            "60",
        )

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.log_dir.glob("*.log")))

    def wait_for_workers(self, n: int, timeout: float = 60) -> None:
        try:
            with Client(self.address, timeout="30s") as client:
                client.wait_for_workers(n, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            pytest.fail(f"the cluster at {self.address} has not {n} workers ({exc}):\n{self.logs()}")

    @staticmethod
    def kill(process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the process's group (the process and the children it spawned)."""
        with contextlib.suppress(ProcessLookupError):  # the whole group has exited
            os.killpg(process.pid, sig)

    def stop(self) -> None:
        """Workers, then the scheduler: asked to stop, then killed with whatever they left behind."""
        for process in reversed(self.processes):
            self.kill(process, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process in reversed(self.processes):
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(deadline - time.monotonic(), 0.1))
            self.kill(process)
            process.wait()


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    cluster = DaskCluster(tmp_path_factory.mktemp("dask"))
    try:
        cluster.wait_for_workers(2)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster(dask_cluster: DaskCluster) -> DaskCluster:
    """The module's cluster with its two workers."""
    dask_cluster.wait_for_workers(2)
    return dask_cluster


def flags(config: generator.Config) -> list[str]:
    """The options of `data_gen.py` that make `config`."""
    options = {"customers": config.customers, "start-date": config.start, "end-date": config.end, "seed": config.seed}
    return [text for name, value in options.items() for text in (f"--{name}", str(value))]


def generated(config: generator.Config, partitions: int, out: Path) -> Path:
    generator.generate(generator.Plan(config, partitions), out, LocalRunner())
    return out


def scores(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path).sort_values("customer_id").reset_index(drop=True)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,200 customers in 8 partitions, generated in this process."""
    return generated(SMALL, 8, tmp_path_factory.mktemp("small") / "bank")


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory, loaded: artifacts.LoadedModel) -> tuple[Path, pd.DataFrame]:
    """19,200 customers in 24 partitions, and their scores from this process."""
    root = tmp_path_factory.mktemp("large")
    bank = generated(LARGE, 24, root / "bank")
    write_scores(open_bank(bank), LocalRunner(), loaded.predictor, None, root / "scores.parquet")
    return bank, scores(root / "scores.parquet")


def test_data_gen_on_the_cluster_writes_the_files_of_an_in_process_run(
    cluster: DaskCluster, small: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bank"
    done = run_script("data_gen.py", *flags(SMALL), "--partitions", 8, "--scheduler", cluster.address, "--out", out)
    assert done.returncode == 0, done.stderr
    made = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert made == {p.relative_to(small): p.read_bytes() for p in sorted(small.rglob("*")) if p.is_file()}


def test_score_on_the_cluster_gives_the_in_process_predictions(
    cluster: DaskCluster, small: Path, model_dir: Path, loaded: artifacts.LoadedModel, tmp_path: Path
) -> None:
    done = run_script(
        "model.py",
        "score",
        "--data-dir",
        small,
        "--model-dir",
        model_dir,
        "--scheduler",
        cluster.address,
        "--output",
        tmp_path / "cluster.parquet",
    )
    assert done.returncode == 0, done.stderr
    assert f"using the Dask cluster at {cluster.address}" in done.stderr
    write_scores(open_bank(small), LocalRunner(), loaded.predictor, None, tmp_path / "here.parquet")
    assert len(list((tmp_path / "cluster.parquet").iterdir())) == 8
    pd.testing.assert_frame_equal(scores(tmp_path / "cluster.parquet"), scores(tmp_path / "here.parquet"))


def test_a_worker_limited_to_little_memory_gives_back_what_a_part_frees(cluster: DaskCluster) -> None:
    """These workers have 1 GiB each: the runner leaves their allocator as Dask has it (keep_freed_memory), so that
    a worker Dask paused at 80% of its limit resumes when its part's memory goes back. 256 MB filled again after it
    was freed, in a task: its pages are mapped and faulted in afresh (128 of 2 MB here, more of 4 kB)."""

    def refaults() -> int:  # tests.servers.refaults, defined here to go by value: these workers do not import tests
        np.ones(1 << 25)
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        np.ones(1 << 25)
        return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before

    with runner(scheduler=cluster.address, quiet=True) as run:
        faults = run.client.gather([run.client.submit(refaults, pure=False) for _ in range(4)])
    assert min(faults) >= 100, faults


def test_training_on_the_cluster_gives_the_in_process_model(cluster: DaskCluster, small: Path, tmp_path: Path) -> None:
    """Training is deterministic given its rows, and the runner hands them over in the order of the parts:
    the model and its held-out figures are the same wherever the parts were read and judged."""
    done = run_script(
        "model.py",
        "train",
        "--data-dir",
        small,
        "--model-dir",
        tmp_path / "cluster",
        CLV_DASK_SCHEDULER=cluster.address,
    )
    assert done.returncode == 0, done.stderr
    assert f"using the Dask cluster at {cluster.address}" in done.stderr
    _, here = train_and_save(small, tmp_path / "here", runner=LocalRunner())
    there = artifacts.load(tmp_path / "cluster")
    assert there.metadata.test_customers == here.test_customers > 100
    assert there.metadata.rows == here.rows
    assert there.metadata.metrics == here.metrics
    assert there.metadata.importance == here.importance
    bank = open_bank(small).load("part-00003")[0]
    X = build_features(bank, bank.last_day())
    np.testing.assert_array_equal(there.model.predict(X), artifacts.load(tmp_path / "here").model.predict(X))


def test_a_worker_running_other_code_is_named_before_any_work(small: Path, model_dir: Path, tmp_path: Path) -> None:
    """A worker whose environment holds another clv (here an edited copy, found first on its PYTHONPATH, as an
    image built before a change would) is named in one line with what to do, before any part is sent."""
    other = tmp_path / "old-image"
    shutil.copytree(ROOT / "clv", other / "clv", ignore=shutil.ignore_patterns("__pycache__"))
    with (other / "clv" / "batch" / "scoring.py").open("a") as source:
        source.write("# a change the client does not have\n")
    stale = DaskCluster(tmp_path / "logs", workers=1, PYTHONPATH=str(other))
    try:
        stale.wait_for_workers(1)
        output = tmp_path / "scores.parquet"
        done = run_script(
            "model.py",
            "score",
            "--data-dir",
            small,
            "--model-dir",
            model_dir,
            "--scheduler",
            stale.address,
            "--output",
            output,
        )
    finally:
        stale.stop()
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()[-1:]
    assert line.startswith("model.py score: error: the Dask worker at tcp://127.0.0.1:"), done.stderr
    assert f"from {other / 'clv'}" in line and "install this project in the workers' environment" in line
    assert "Traceback" not in done.stderr
    assert not output.exists()


def test_score_survives_a_worker_killed_mid_run(
    cluster: DaskCluster, large: tuple[Path, pd.DataFrame], model_dir: Path, tmp_path: Path
) -> None:
    bank, expected = large
    output = tmp_path / "scores.parquet"
    run = subprocess.Popen(
        [
            sys.executable,
            "model.py",
            "score",
            "--data-dir",
            str(bank),
            "--model-dir",
            str(model_dir),
            "--scheduler",
            cluster.address,
            "--output",
            str(output),
        ],
        cwd=ROOT,
        env=cluster.env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    watchdog = threading.Timer(240, run.kill)  # a run that hangs fails the test instead of the suite
    watchdog.start()
    victim, stderr = cluster.workers[0], []
    try:
        for line in run.stderr:  # until the first progress line: the parts are running on both workers
            stderr.append(line)
            if " parts, " in line:
                break
        else:
            pytest.fail(f"no progress line:\n{''.join(stderr)}")
        cluster.kill(victim)
        victim.wait(30)
        assert run.poll() is None, "the run ended before the worker was killed: give it a larger bank"
        stderr.append(run.stderr.read())
        assert run.wait() == 0, "".join(stderr)
    finally:
        watchdog.cancel()
        if run.poll() is None:
            run.kill()
        run.wait()
        cluster.workers[0] = cluster.add_worker()  # two workers again, for any test after this one
    # a worker killed while writing leaves its hidden temporary file; readers of the dataset skip it
    parts = sorted(p.name for p in output.iterdir() if not p.name.startswith("."))
    assert parts == [f"part-{p:05d}.parquet" for p in range(24)]
    pd.testing.assert_frame_equal(scores(output), expected)
