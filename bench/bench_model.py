"""Benchmark of the model's targets (issue 3): held-out accuracy on the default bank, training time at
10,000 and 100,000 customers, and one customer from request to number in process; and (issue 27) training on a large
partitioned bank generated before: the training sample's size, the held-out metrics against the naive baselines at
every judged horizon, the training time and every process's peak memory.

Run `python bench/bench_model.py` (a few minutes on 2 cores; `--skip-large` leaves out 100,000 customers).
`python bench/bench_model.py --bank /work/b1m [--workers 2]` runs `model.py train` on that bank alone, as a fresh
process tree (bench/processes.py), and judges it; make the bank with `python data_gen.py --customers 1000000
--partitions 40 --out /work/b1m --workers 2`.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import re
import statistics
import tempfile
import time
from pathlib import Path

from common import peak_gb, verdict
from processes import mb, run

from clv.cli_tables import churn_table, horizons_table, metrics_table
from clv.common import dates
from clv.data.bank import bank_from_request
from clv.model import artifacts
from clv.model.features import build_features
from clv.model.training import train_and_save
from clv.service.schemas.requests import EXAMPLE, CustomerIn
from clv.synthetic import generator

TARGET_ORACLE_RATIO = 0.9
TARGET_DECILE_MAPE = 0.10
TARGET_COVERAGE = (0.77, 0.83)
CLEAR_GINI = 0.01  # "a clear win": Gini at least this much higher than the last-12-months baseline ...
CLEAR_MAPE = 0.8  # ... and decile MAPE at most this share of the baseline's
TARGET_TRAIN_S = 30.0
TARGET_LARGE_S = 60.0
TARGET_ONE_MS = 2.0
TARGET_CHURN_AUC_RATIO = 0.95  # of the oracle's AUC
TARGET_CHURN_ECE = 0.02
TARGET_CHURN_SKILL_RATIO = 0.9  # of the oracle's Brier skill
TARGET_HORIZON_GINI = 0.95  # against the oracle's expected value at every horizon: the truth's own Gini is 1
TARGET_HORIZON_COVERAGE = (0.77, 0.83)  # of the generated bank's realized values, where judged
TARGET_36_COVERAGE = (0.75, 0.85)  # the 36-month value on what really happened, against the naive annuity
TARGET_BANK_TRAIN_S = 120.0  # training on a large bank: a small part of its train-and-score budget (issue 27)
TARGET_PROCESS_BYTES = 2 * 2**30


class Stages(logging.Handler):
    """Keeps the training log's per-stage lines, to print them after the run."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def generate(config: generator.Config, out: Path) -> float:
    started = time.perf_counter()
    generator.write_tables(generator.simulate(config), out)
    return time.perf_counter() - started


def timed_training(data_dir: Path, model_dir: Path) -> tuple[float, dict, list[str]]:
    stages = Stages()
    log = logging.getLogger("clv.model.training")
    log.addHandler(stages)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        started = time.perf_counter()
        _, meta = train_and_save(data_dir, model_dir)
        return time.perf_counter() - started, meta.model_dump(mode="json"), stages.lines
    finally:
        log.removeHandler(stages)
        log.propagate = True


def accuracy(work: Path) -> tuple[Path, list[tuple[str, bool]]]:
    print("== 1. default bank: 10,000 customers, held-out metrics ==", flush=True)
    seconds = generate(generator.Config(oracle=True), work / "default")
    print(f"generated in {seconds:.1f} s", flush=True)
    wall, meta, stages = timed_training(work / "default", work / "models")
    for line in stages:
        print(f"  log: {line}")
    print(f"train_and_save wall time: {wall:.1f} s (train() alone {meta['seconds']} s)")
    target = artifacts.load(work / "models").model.target_
    print(f"rows: {meta['rows']}, cutoff {meta['cutoff']}, fitted target {target}\n")
    m = meta["metrics"]
    print(metrics_table(m))
    model, last12, oracle = m["model"], m["baseline_last12"], m["oracle"]
    ratio = model.get("oracle_ratio", float("nan"))
    print(f"\noracle ratio (model Gini / oracle Gini): {ratio:.3f}")
    low, high = TARGET_COVERAGE
    checks = [
        (
            f"normalized Gini >= {TARGET_ORACLE_RATIO} x oracle ({model['normalized_gini']:.3f} vs "
            f"{TARGET_ORACLE_RATIO * oracle['normalized_gini']:.3f})",
            ratio >= TARGET_ORACLE_RATIO,
        ),
        (
            f"decile MAPE <= {TARGET_DECILE_MAPE} ({model['decile_mape']:.3f})",
            model["decile_mape"] <= TARGET_DECILE_MAPE,
        ),
        (
            f"interval coverage in {low}-{high} ({model['interval_coverage']:.3f})",
            low <= model["interval_coverage"] <= high,
        ),
        (
            f"clear win over last12 on Gini: > +{CLEAR_GINI} ({model['normalized_gini']:.3f} vs "
            f"{last12['normalized_gini']:.3f})",
            model["normalized_gini"] > last12["normalized_gini"] + CLEAR_GINI,
        ),
        (
            f"clear win over last12 on decile MAPE: <= {CLEAR_MAPE} x ({model['decile_mape']:.3f} vs "
            f"{last12['decile_mape']:.3f})",
            model["decile_mape"] <= CLEAR_MAPE * last12["decile_mape"],
        ),
        (f"train on the default bank < {TARGET_TRAIN_S:.0f} s ({wall:.1f} s)", wall < TARGET_TRAIN_S),
    ]
    return work / "models", checks + churn_checks(meta["churn"]) + horizon_checks(meta["horizons"])


def churn_checks(churn: dict) -> list[tuple[str, bool]]:
    """The churn probability's targets, on the same held-out customers, against the generator's oracle."""
    print(churn_table(churn))
    model, oracle = churn["model"], churn["oracle"]
    return [
        (
            f"churn AUC >= {TARGET_CHURN_AUC_RATIO} x oracle ({model['auc']:.4f} vs {oracle['auc']:.4f}: "
            f"{model['auc'] / oracle['auc']:.3f}x)",
            model["auc"] >= TARGET_CHURN_AUC_RATIO * oracle["auc"],
        ),
        (f"churn ECE <= {TARGET_CHURN_ECE} ({model['ece']:.4f})", model["ece"] <= TARGET_CHURN_ECE),
        (
            f"churn Brier skill >= {TARGET_CHURN_SKILL_RATIO} x oracle ({model['brier_skill']:.4f} vs "
            f"{oracle['brier_skill']:.4f}: {model['brier_skill'] / oracle['brier_skill']:.3f}x)",
            model["brier_skill"] >= TARGET_CHURN_SKILL_RATIO * oracle["brier_skill"],
        ),
    ]


def horizon_checks(horizons: list[dict]) -> list[tuple[str, bool]]:
    """Each horizon's targets: ranking against the oracle's expected value at the training cutoff, and, where the
    data reaches, coverage of what happened; the 36-month value against the naive annuity."""
    print(horizons_table(horizons))
    checks = []
    for h in horizons:
        months, oracle = h["months"], h.get("against_oracle")
        if oracle is not None:
            checks.append(
                (
                    f"{months}-month Gini against the oracle's expected value >= {TARGET_HORIZON_GINI} "
                    f"({oracle['normalized_gini']:.3f}; total error {oracle['total_error']:+.3f})",
                    oracle["normalized_gini"] >= TARGET_HORIZON_GINI,
                )
            )
        if not h["judged"]:
            print(f"  {months} months: extrapolated, no realized outcome to judge it on")
            continue
        low, high = TARGET_36_COVERAGE if months == 36 else TARGET_HORIZON_COVERAGE
        model, annuity = h["model"], h["baseline_annuity"]
        checks.append(
            (
                f"{months}-month interval coverage in {low}-{high} ({model['interval_coverage']:.3f}, judged at "
                f"{h['cutoff']})",
                low <= model["interval_coverage"] <= high,
            )
        )
        if months == 36:
            checks += [
                (
                    f"36-month Gini beats the naive annuity ({model['normalized_gini']:.3f} vs "
                    f"{annuity['normalized_gini']:.3f})",
                    model["normalized_gini"] > annuity["normalized_gini"],
                ),
                (
                    f"36-month decile MAPE beats the naive annuity ({model['decile_mape']:.3f} vs "
                    f"{annuity['decile_mape']:.3f})",
                    model["decile_mape"] < annuity["decile_mape"],
                ),
            ]
    return checks


def large(work: Path, customers: int) -> list[tuple[str, bool]]:
    print(f"\n== 3. {customers:,} customers: features and training end to end ==", flush=True)
    seconds = generate(generator.Config(customers=customers, seed=7), work / "large")
    print(f"generated in {seconds:.1f} s", flush=True)
    wall, meta, stages = timed_training(work / "large", work / "large_models")
    for line in stages:
        print(f"  log: {line}")
    print(
        f"read + features + fit + evaluate + save: {wall:.1f} s for {meta['rows']['train']:,} training rows; "
        f"peak memory so far {peak_gb():.2f} GB"
    )
    return [(f"{customers:,} customers end to end < {TARGET_LARGE_S:.0f} s ({wall:.1f} s)", wall < TARGET_LARGE_S)]


def on_bank(bank: Path, workers: int, work: Path) -> list[tuple[str, bool]]:
    """`model.py train` on a partitioned bank generated before, as a fresh process tree: the training sample's size,
    where the time goes, every process's peak memory, and the held-out metrics against the naive baselines."""
    customers = json.loads((bank / "manifest.json").read_text())["tables"]["customers"]
    print(f"\n== 4. training on {bank}: {customers:,} customers, {workers} workers ==", flush=True)
    logs, models = work / "logs", work / "bank_models"
    logs.mkdir(exist_ok=True)
    done = run(
        f"train on {customers:,}",
        ["model.py", "train", "--data-dir", bank, "--model-dir", models, "--workers", workers],
        logs,
    )
    if not done.ok:
        return [(f"train on {bank}", False)]
    meta = artifacts.read_metadata(models / artifacts.LATEST).model_dump(mode="json")
    drawn = re.search(r"rows of (\d+) customers", done.log)
    learners = int(drawn.group(1)) if drawn else None
    print(
        f"  learned from {learners or 0:,} customers ({meta['rows']['train']:,} rows at {len(meta['rows']['cutoffs'])} "
        f"cutoffs); judged on {meta['test_customers']:,} held-out customers; train() alone {meta['seconds']} s"
    )
    print("  where the time goes (the command's log, seconds after it started):")
    for at, message in done.timeline:
        print(f"    {at:7.1f} s  {message[:110]}")
    peaks = {role: done.peak(role) for role in done.roles()}
    print("  peak memory: " + ", ".join(f"{role} {mb(peak)} (x{done.count(role)})" for role, peak in peaks.items()))
    print(metrics_table(meta["metrics"]))
    print(
        "\n  the lowest deciles (mean predicted, mean actual): "
        + "; ".join(f"{d['decile']}: {d['mean_predicted']:.1f}, {d['mean_actual']:.1f}" for d in meta["deciles"][:3])
    )
    print(horizons_table(meta["horizons"]))
    checks = [
        (
            f"train on {customers:,} <= {TARGET_BANK_TRAIN_S:.0f} s ({done.seconds:.1f} s, load {done.load_before:.1f} "
            "before)",
            done.seconds <= TARGET_BANK_TRAIN_S,
        ),
        (
            f"every process <= {mb(TARGET_PROCESS_BYTES)} ({mb(max(peaks.values()))})",
            max(peaks.values()) <= TARGET_PROCESS_BYTES,
        ),
    ]
    for h in meta["horizons"]:
        if not h["judged"] or h["months"] not in (12, 36):
            continue
        model, naive = h["model"], h["baseline_annuity"]
        name = "last-12-months baseline" if h["months"] == meta["horizon_months"] else "naive annuity"
        checks += [
            (
                f"{h['months']}-month decile MAPE beats the {name} ({model['decile_mape']:.3f} vs "
                f"{naive['decile_mape']:.3f})",
                model["decile_mape"] < naive["decile_mape"],
            ),
            (
                f"{h['months']}-month Gini beats the {name} ({model['normalized_gini']:.3f} vs "
                f"{naive['normalized_gini']:.3f})",
                model["normalized_gini"] > naive["normalized_gini"],
            ),
        ]
    return checks


def one_customer(model_dir: Path, runs: int) -> list[tuple[str, bool]]:
    print("\n== 2. one customer from request to number, in process ==", flush=True)
    loaded = artifacts.load(model_dir)
    model = loaded.model
    customer = CustomerIn.model_validate(EXAMPLE)
    day = dates.to_day(loaded.default_as_of)

    def score() -> dict:
        return model.predict_all(build_features(bank_from_request(customer, day), day))

    def score_validated() -> dict:
        return model.predict_all(build_features(bank_from_request(CustomerIn.model_validate(EXAMPLE), day), day))

    X = build_features(bank_from_request(customer, day), day)
    figures = {}
    for name, call in (
        ("validate + bank_from_request + build_features + predict_all", score_validated),
        ("bank_from_request + build_features + predict_all", score),
        ("predict_all alone", lambda: model.predict_all(X)),
    ):
        for _ in range(20):  # warm up
            call()
        times = []
        gc.disable()
        try:
            for _ in range(runs):
                started = time.perf_counter()
                call()
                times.append(time.perf_counter() - started)
        finally:
            gc.enable()
        times.sort()
        figures[name] = statistics.median(times) * 1e3
        p90 = times[int(0.9 * len(times))] * 1e3
        print(f"  {name:62s} median {figures[name]:6.3f} ms   p90 {p90:6.3f} ms")

    out = score()
    print(f"  the example's prediction: {out['point'][0]:.2f} (interval {out['low'][0]:.2f} .. {out['high'][0]:.2f})")
    median = figures["bank_from_request + build_features + predict_all"]
    return [(f"one customer, tables to number: median < {TARGET_ONE_MS} ms ({median:.3f} ms)", median < TARGET_ONE_MS)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large-customers", type=int, default=100_000)
    parser.add_argument("--skip-large", action="store_true", help="leave out the 100,000-customer run")
    parser.add_argument("--runs", type=int, default=1_000, help="runs of the one-customer timing")
    parser.add_argument("--bank", type=Path, help="a partitioned bank generated before: train on it alone and judge it")
    parser.add_argument("--workers", type=int, default=2, help="Dask workers training on --bank (default 2)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    with tempfile.TemporaryDirectory(prefix="bench_model_") as tmp:
        work = Path(tmp)
        if args.bank:
            checks = on_bank(args.bank, args.workers, work)
            print("\n== targets of issue 27 ==")
            for text, ok in checks:
                print(f"  {verdict(ok):6s}  {text}")
            return
        model_dir, checks = accuracy(work)
        checks += one_customer(model_dir, args.runs)
        if not args.skip_large:
            checks += large(work, args.large_customers)
    print("\n== targets of issue 3 ==")
    for text, ok in checks:
        print(f"  {verdict(ok):6s}  {text}")


if __name__ == "__main__":
    main()
