"""A bank in partitions: generated the same whatever runs it, every customer in its partition, the numbers of
the flat folder, and a broken or misplaced partition refused by name. One LocalCluster for the module."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from clv.batch.runs import score_run
from clv.batch.scoring import write_scores
from clv.common.cluster import DaskRunner, LocalRunner, runner
from clv.data import prepare as prepare_module
from clv.data import schema
from clv.data.bank import Bank, bank_from_tables, only
from clv.data.contract import KEYS, DataContractError, read_bank, read_tables
from clv.data.layout import MANIFEST, ORACLE, Manifest, PartitionedBank, open_bank, part_name, partition_of
from clv.data.prepare import prepare
from clv.model import artifacts
from clv.model.config import MAX_TRAIN_CUSTOMERS, TRAIN_CUSTOMERS_FLOOR, TrainingConfig
from clv.model.evaluation import evaluate_saved
from clv.model.protocol import (
    HELD_OUT_SHARE,
    Rows,
    drawn,
    drawn_or_judged,
    gather_learning_rows,
    held_out,
    judged,
    rows_at,
)
from clv.model.training import train_and_save
from clv.synthetic import generator
from tests.servers import refaults, run_script

TABLES = ("customers", "products", "transactions", "customer_metrics")
GENERATED = generator.Config(customers=600, start=dt.date(2022, 1, 1), end=dt.date(2024, 12, 31), seed=7, oracle=True)
OTHER = generator.Config(customers=600, start=dt.date(2022, 1, 1), end=dt.date(2024, 12, 31), seed=11, oracle=True)
PARTS = 3
PROGRESS = re.compile(r"^scored: (\d+)/3 parts, ([\d,]+) customers, ")


def write_flawed(table: pa.Table, path: Path) -> None:
    """Write a part's table with a flaw of its content, and record the file in the manifest: a bank written so
    (its checksums are right), whose contract the reader must still check."""
    pq.write_table(table, path)
    bank = path.parent.parent
    manifest = Manifest.model_validate_json((bank / MANIFEST).read_text())
    part = next(p for p in manifest.parts if p.name == path.stem)
    part.sha256[path.parent.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    part.bytes[path.parent.name] = path.stat().st_size
    (bank / MANIFEST).write_text(manifest.model_dump_json())


def files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` by its relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def whole(bank: Path, table: str) -> pd.DataFrame:
    """A table of a partitioned bank, every part read as it was written."""
    return pd.concat([pd.read_parquet(p) for p in sorted((bank / table).glob("*.parquet"))], ignore_index=True)


def plain(frame: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    """Rows in key order, dates in whole seconds and categories as text: what a flat and a prepared bank share."""
    frame = frame.sort_values(key).reset_index(drop=True)
    for column in frame:
        if pd.api.types.is_datetime64_any_dtype(frame[column]):
            frame[column] = frame[column].astype("datetime64[s]")
        elif isinstance(frame[column].dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(frame[column]):
            frame[column] = frame[column].astype(object)
    return frame


def assert_same_metrics(mine: dict, theirs: dict, skip: tuple[str, ...] = ()) -> None:
    """The same metrics, but for the last digits of sums taken in another order; None where one is None."""
    assert mine.keys() == theirs.keys()
    for key in mine.keys() - set(skip):
        expected = None if mine[key] is None else pytest.approx(mine[key], rel=1e-9)
        assert theirs[key] == expected, key


def no_output(folder: Path) -> bool:
    return folder.is_dir() and not any(folder.iterdir())


@pytest.fixture(scope="module")
def cluster() -> Iterator[DaskRunner]:
    """The module's one LocalCluster of two workers."""
    with runner(workers=2, quiet=True) as run:
        yield run


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated bank of 600 customers in 3 partitions, with the oracle, made in this process."""
    out = tmp_path_factory.mktemp("generated") / "bank"
    generator.generate(generator.Plan(GENERATED, PARTS), out, LocalRunner())
    return out


@pytest.fixture(scope="module")
def prepared(bank_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's flat CSV bank prepared into 3 partitions."""
    out = tmp_path_factory.mktemp("prepared") / "bank"
    prepare(bank_dir, out, PARTS, LocalRunner())
    return out


@pytest.fixture(scope="module")
def other_bank(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Another flat CSV bank (not the one the session's model learned from) and its prepared copy."""
    root = tmp_path_factory.mktemp("other")
    generator.write_tables(generator.simulate(OTHER), root / "flat")
    prepare(root / "flat", root / "prepared", PARTS, LocalRunner())
    return root / "flat", root / "prepared"


@pytest.fixture
def bank(generated: Path, tmp_path: Path) -> Path:
    """A writable copy of the generated bank."""
    return Path(shutil.copytree(generated, tmp_path / "bank"))


# ---- a generated partitioned bank ------------------------------------------------------------------


def test_the_cli_on_a_cluster_writes_the_files_of_an_in_process_run(
    generated: Path, cluster: DaskRunner, tmp_path: Path
) -> None:
    """`data_gen.py --partitions 3 --write-oracle` on a 2-worker LocalCluster writes the bytes the library
    wrote in this process: the files depend on the seed and the partition count, not on who made them."""
    out = tmp_path / "bank"
    done = run_script(
        "data_gen.py",
        "--customers",
        GENERATED.customers,
        "--partitions",
        PARTS,
        "--write-oracle",
        "--start-date",
        GENERATED.start,
        "--end-date",
        GENERATED.end,
        "--seed",
        GENERATED.seed,
        "--scheduler",
        cluster.client.scheduler.address,
        "--quiet",
        "--out",
        out,
    )
    assert done.returncode == 0, done.stderr
    assert " parts, " not in done.stderr  # --quiet
    made = files(out)
    assert {f"{ORACLE}/part-0000{p}.parquet" for p in range(PARTS)} <= set(made)
    assert made == files(generated)


def test_a_worker_reuses_the_memory_a_part_freed(cluster: DaskRunner) -> None:
    """The runner sets every worker's allocator to keep what a part frees (keep_freed_memory): the next part's
    arrays reuse those pages. 256 MB filled again after it was freed, in a task: no page faults, where a worker as
    Dask starts it maps fresh pages and faults in each (128 of 2 MB here). The local cluster's workers have a share
    of this machine's memory, over the 4 GiB under which the runner leaves them as they are."""
    faults = cluster.client.gather([cluster.client.submit(refaults, pure=False) for _ in range(4)])
    assert max(faults) < 16, faults


def test_another_seed_gives_other_files(generated: Path, tmp_path: Path) -> None:
    config = generator.Config(GENERATED.customers, GENERATED.start, GENERATED.end, seed=8)
    generator.generate(generator.Plan(config, PARTS), tmp_path / "bank", LocalRunner())
    made, seed_7 = files(tmp_path / "bank"), files(generated)
    assert not (tmp_path / "bank" / ORACLE).exists()  # no oracle unless asked
    for path in made:
        assert made[path] != seed_7[path], path


def test_ids_are_unique_across_the_bank(generated: Path) -> None:
    for table, key in (("customers", "customer_id"), ("products", "product_id"), ("transactions", "transaction_id")):
        ids = whole(generated, table)[key]
        assert ids.is_unique, table
    assert sorted(whole(generated, "customers")["customer_id"]) == list(range(1, GENERATED.customers + 1))
    # a transaction moves money on a product of its own customer
    products = whole(generated, "products").set_index("product_id")["customer_id"]
    txns = whole(generated, "transactions").dropna(subset=["product_id"])
    assert (products.loc[txns["product_id"].astype(np.int64)].to_numpy() == txns["customer_id"].to_numpy()).all()


@pytest.mark.parametrize("name", ["generated", "prepared"])
def test_every_row_is_in_the_partition_the_manifest_rule_says(name: str, request: pytest.FixtureRequest) -> None:
    folder = request.getfixturevalue(name)
    manifest = Manifest.model_validate_json((folder / MANIFEST).read_text())
    assert manifest.rule == {"generated": "modulo", "prepared": "hash"}[name]
    assert [part.name for part in manifest.parts] == [f"part-0000{p}" for p in range(PARTS)]
    for index, part in enumerate(manifest.parts):
        assert set(part.rows) == {*TABLES, ORACLE} and part.rows["customers"] > 0
        for table in part.rows:
            ids = pd.read_parquet(folder / table / f"{part.name}.parquet")["customer_id"].to_numpy(np.int64)
            assert (partition_of(ids, PARTS, manifest.rule) == index).all(), (part.name, table)


@pytest.mark.parametrize("name", ["generated", "prepared"])
def test_the_manifest_counts_and_checksums_are_the_files(name: str, request: pytest.FixtureRequest) -> None:
    folder = request.getfixturevalue(name)
    manifest = Manifest.model_validate_json((folder / MANIFEST).read_text())
    listed = set()
    for part in manifest.parts:
        for table, rows in part.rows.items():
            path = folder / table / f"{part.name}.parquet"
            listed.add(str(path.relative_to(folder)))
            assert pq.ParquetFile(path).metadata.num_rows == rows, path
            assert hashlib.sha256(path.read_bytes()).hexdigest() == part.sha256[table], path
    assert set(files(folder)) == listed | {MANIFEST}  # no file the manifest does not name
    for table, total in manifest.tables.items():
        assert len(whole(folder, table)) == total == sum(part.rows[table] for part in manifest.parts)


@pytest.fixture(scope="module")
def flat_parquet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A flat bank written as Parquet files, a file a table."""
    out = tmp_path_factory.mktemp("flat") / "bank"
    generator.write_tables(generator.simulate(GENERATED), out, "parquet")
    return out


@pytest.mark.parametrize("name", ["generated", "prepared", "flat_parquet"])
def test_each_column_is_stored_as_the_contract_says(name: str, request: pytest.FixtureRequest) -> None:
    """The keys by delta, the amounts and balances plain, every other column in a dictionary; pages in LZ4, and
    statistics for every column but the categories."""
    folder = request.getfixturevalue(name)
    checked = set()
    for table, columns in schema.TABLES.items():
        path = folder / table / f"{part_name(0)}.parquet"
        path = path if path.exists() else folder / f"{table}.parquet"  # a flat bank's one file
        chunks = pq.ParquetFile(path).metadata.row_group(0)
        stored = {chunks.column(i).path_in_schema: chunks.column(i) for i in range(chunks.num_columns)}
        for column in (column for column in columns if column.name in stored):
            chunk = stored[column.name]
            assert (column.encoding or "RLE_DICTIONARY") in chunk.encodings, (table, column.name, chunk.encodings)
            assert chunk.has_dictionary_page == (column.encoding is None), (table, column.name)
            assert chunk.compression == "LZ4", (table, column.name, chunk.compression)  # Parquet's LZ4_RAW
            # a category's least and greatest label would help no reader; the keys and numbers keep theirs
            assert chunk.is_stats_set == (column.kind not in ("category", "month")), (table, column.name)
            checked.add((table, column.name))
    stored_plain = {("transactions", "amount"), ("customer_metrics", "deposits_balance")}
    assert {("transactions", "transaction_id"), ("products", "product_id"), *stored_plain} <= checked


# ---- the numbers of the flat folder --------------------------------------------------------------


def test_a_prepared_bank_scores_what_the_flat_folder_scores(
    bank_dir: Path, prepared: Path, loaded: artifacts.LoadedModel, tmp_path: Path
) -> None:
    """The same customers get the same numbers, to the cent, whatever the layout or the output format."""
    outputs = {"flat.csv": bank_dir, "parts.parquet": prepared, "parts.csv": prepared}
    for name, source in outputs.items():
        done = write_scores(open_bank(source), LocalRunner(), loaded.predictor, None, tmp_path / name)
        assert done.rows == done.summary.customers == 1200, name
    assert sorted(p.name for p in (tmp_path / "parts.parquet").iterdir()) == [f"part-0000{p}.parquet" for p in range(3)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(outputs)  # no temporary file or folder left

    empty = {"churn_probability": [""]}  # the one column that may be empty (a customer who had left); drivers are ""
    flat = pd.read_csv(tmp_path / "flat.csv", keep_default_na=False, na_values=empty)
    for name in ("parts.parquet", "parts.csv"):
        path = tmp_path / name
        if path.suffix == ".parquet":
            parts = pd.read_parquet(path)
        else:
            parts = pd.read_csv(path, keep_default_na=False, na_values=empty)
        assert list(parts.columns) == list(flat.columns)
        joined = flat.merge(parts, on="customer_id", suffixes=("", "_parts"), validate="one_to_one")
        assert len(joined) == len(flat) == len(parts)
        for column in flat.columns.drop("customer_id"):
            mine, theirs = joined[column], joined[f"{column}_parts"]
            if pd.api.types.is_float_dtype(mine):
                mine, theirs = ((x.fillna(-1) * 10_000).round().astype(np.int64) for x in (mine, theirs))
            assert (mine.to_numpy() == theirs.to_numpy()).all(), (name, column)


def test_a_prepared_bank_gives_the_monthly_curve_of_the_flat_folder(
    bank_dir: Path, prepared: Path, loaded: artifacts.LoadedModel, tmp_path: Path
) -> None:
    curves = {}
    for name, source in (("flat", bank_dir), ("parts", prepared)):
        write_scores(
            open_bank(source),
            LocalRunner(),
            loaded.predictor,
            None,
            tmp_path / f"{name}.csv",
            curve=tmp_path / f"{name}-curve.parquet",
        )
        curves[name] = pd.read_parquet(tmp_path / f"{name}-curve.parquet").sort_values(
            ["customer_id", "month"], ignore_index=True
        )
    assert len(list((tmp_path / "parts-curve.parquet").iterdir())) == 3  # a file a part
    pd.testing.assert_frame_equal(curves["flat"], curves["parts"])


def test_a_prepared_bank_gives_the_portfolio_of_the_flat_folder(
    bank_dir: Path, prepared: Path, loaded: artifacts.LoadedModel, tmp_path: Path
) -> None:
    """Part by part, the sums, the deciles, the segments and the at-risk list are the flat folder's."""
    results = {}
    for name, source in (("flat", bank_dir), ("parts", prepared)):
        _, result = score_run(open_bank(source), LocalRunner(), loaded, None, source, tmp_path / name)
        results[name] = result.model_dump(mode="json", exclude={"run", "scored_at", "data_dir", "data_fingerprint"})
    flat, parts = results["flat"], results["parts"]
    assert parts["at_risk"] == flat["at_risk"] and parts["customers"] == flat["customers"]
    for key in ("horizons", "deciles", "segments"):
        assert json.dumps(parts[key], sort_keys=True) == json.dumps(flat[key], sort_keys=True) or _close(
            parts[key], flat[key]
        ), key
    assert parts["value_at_risk"] == pytest.approx(flat["value_at_risk"], abs=0.01)


def _close(a: object, b: object) -> bool:
    """Equal but for the last cent of sums added in another order."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return abs(a - b) <= 0.011
    return a == b


@pytest.fixture(scope="module")
def evaluations(other_bank: tuple[Path, Path], loaded: artifacts.LoadedModel) -> tuple[dict, dict]:
    """The session's model evaluated on the other bank, flat and prepared."""
    flat, parts = (evaluate_saved(loaded.model, loaded.metadata, path, runner=LocalRunner()) for path in other_bank)
    return flat, parts


def test_evaluate_judges_every_customer_the_same_on_the_flat_and_the_prepared_bank(
    evaluations: tuple[dict, dict],
) -> None:
    flat, parts = evaluations
    assert flat["evaluated_on"] == parts["evaluated_on"] == "every eligible customer"
    assert flat["test_customers"] == parts["test_customers"] > 300
    for name in ("model", "model_without_ledger", "baseline_last12"):
        assert_same_metrics(flat["metrics"][name], parts["metrics"][name], skip=("oracle_ratio",))
    for mine, theirs in zip(flat["deciles"], parts["deciles"], strict=True):
        assert_same_metrics(mine, theirs)


def test_evaluate_on_a_prepared_bank_compares_with_the_oracle_as_the_flat_folder_does(
    evaluations: tuple[dict, dict],
) -> None:
    flat, parts = evaluations
    assert flat["metrics"]["oracle"] is not None and parts["metrics"]["oracle"] is not None
    assert_same_metrics(flat["metrics"]["oracle"], parts["metrics"]["oracle"])
    assert parts["metrics"]["model"]["oracle_ratio"] == pytest.approx(flat["metrics"]["model"]["oracle_ratio"])


def test_the_mean_baseline_does_not_depend_on_the_layout(evaluations: tuple[dict, dict]) -> None:
    flat, parts = evaluations
    assert_same_metrics(flat["metrics"]["baseline_mean"], parts["metrics"]["baseline_mean"])


def test_training_on_a_partitioned_bank_holds_out_the_customers_of_the_whole_bank(
    prepared: Path, loaded: artifacts.LoadedModel, tmp_path: Path
) -> None:
    path, meta = train_and_save(prepared, tmp_path / "models", runner=LocalRunner())
    source = open_bank(prepared)
    held = 0
    for part in source.parts:
        rows = rows_at(source.load(part)[0], [meta.cutoff], meta.horizon_months, meta.discount_rate)
        held += int(held_out(rows.customer_id, meta.seed).sum())
    assert meta.test_customers == meta.rows.test == held > 100
    assert meta.test_customers == loaded.metadata.test_customers  # the flat folder holds out the same customers
    again = evaluate_saved(artifacts.load(path).model, meta, prepared, runner=LocalRunner())
    assert again["evaluated_on"] == "held-out customers of the training data"
    assert again["metrics"]["model"]["normalized_gini"] == pytest.approx(meta.metrics.model.normalized_gini)


def test_the_training_sample_is_drawn_from_every_part_the_same_whatever_the_layout(
    bank_dir: Path, prepared: Path, loaded: artifacts.LoadedModel
) -> None:
    """A bank with more training customers than the sample wants: every part gives its share, none of them held out,
    each row the one the whole part gives its customer; the same customers from the flat folder and from its parts,
    and again on a second run; a larger sample holds the smaller one."""
    meta = loaded.metadata
    config = TrainingConfig(seed=meta.seed, max_train_customers=200)
    source = open_bank(prepared)
    drawn = gather_learning_rows(source, LocalRunner(), meta.rows.cutoffs, config)
    learners = np.unique(drawn.customer_id)
    assert learners.size == 200 and not held_out(learners, meta.seed).any()
    rule = source.manifest
    parts = partition_of(learners, rule.partitions, rule.rule, rule.bounds)
    assert set(parts) == set(range(PARTS)) and np.bincount(parts).min() > 200 / PARTS / 2
    flat = gather_learning_rows(open_bank(bank_dir), LocalRunner(), meta.rows.cutoffs, config)
    again = gather_learning_rows(source, LocalRunner(), meta.rows.cutoffs, config)
    for other in (flat, again):
        assert np.array_equal(np.unique(other.customer_id), learners) and other.y.size == drawn.y.size
    larger = gather_learning_rows(source, LocalRunner(), meta.rows.cutoffs, replace(config, max_train_customers=400))
    assert np.unique(larger.customer_id).size == 400
    whole = Rows.concat(
        [
            rows_at(source.load(part)[0], meta.rows.cutoffs, meta.horizon_months, meta.discount_rate)
            for part in source.parts
        ]
    )
    mine = np.isin(whole.customer_id, learners)
    order = np.lexsort((whole.customer_id[mine], whole.cutoff[mine]))
    expected = whole.take(np.flatnonzero(mine)[order])
    order = np.lexsort((drawn.customer_id, drawn.cutoff))
    got = drawn.take(order)
    pd.testing.assert_frame_equal(got.X, expected.X)
    np.testing.assert_array_equal(got.y, expected.y)
    np.testing.assert_array_equal(got.churned, expected.churned)


def test_the_training_sample_grows_with_the_bank() -> None:
    """The floor for a small bank (the default bank learns from every training customer), a share of a larger one,
    the ceiling for the largest; a number given is kept."""
    rule = TrainingConfig()
    assert rule.learners(10_000) == rule.learners(600) == TRAIN_CUSTOMERS_FLOOR
    sizes = [rule.learners(n) for n in (1_000_000, 3_000_000, 10_000_000, 100_000_000)]
    assert sizes[0] > TRAIN_CUSTOMERS_FLOOR and sizes == sorted(sizes) and sizes[-1] == MAX_TRAIN_CUSTOMERS
    assert TrainingConfig(max_train_customers=500).learners(10_000_000) == 500


def test_a_parts_rows_for_training_are_those_drawn_or_judged_whatever_the_ids() -> None:
    """One pass of the hash takes the rows `drawn` and `judged` take apart, for ids small and large, in any order,
    in about the shares asked, and leaves the caller's ids as they were."""
    rng = np.random.default_rng(7)
    ids = np.concatenate([rng.integers(0, 2**62, 100_000), np.arange(1, 50_001), rng.permutation(50_000)])
    for seed, learning, judging in [(5, 0.02, 0.1), (42, 1.0, 1.0), (0, 0.0, 0.0), (2**31, 0.5, 0.3)]:
        taken = drawn_or_judged(ids, seed, learning, judging)
        assert np.array_equal(taken, drawn(ids, seed, learning) | judged(ids, seed, judging))
        assert abs(taken.mean() - (HELD_OUT_SHARE * judging + (1 - HELD_OUT_SHARE) * learning)) < 0.01
    unsigned = ids.astype(np.uint64)
    drawn_or_judged(unsigned, 5, 0.02, 0.1)
    assert np.array_equal(unsigned, ids.astype(np.uint64))


# ---- faults: a broken, wrong or misplaced partition ----------------------------------------------


@pytest.fixture(scope="module")
def broken_run(generated: Path, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """`model.py score --quiet` of a bank whose second transactions part is garbage, on its own LocalCluster."""
    root = tmp_path_factory.mktemp("broken")
    bank = Path(shutil.copytree(generated, root / "bank"))
    broken = bank / "transactions" / "part-00001.parquet"
    broken.write_bytes(np.random.default_rng(0).bytes(4096))
    (root / "out").mkdir()
    done = run_script(
        "model.py",
        "score",
        "--data-dir",
        bank,
        "--model-dir",
        model_dir,
        "--workers",
        "1",
        "--quiet",
        "--output",
        root / "out" / "scores.parquet",
    )
    return done, broken, root / "out"


def test_a_broken_partition_file_is_named_and_nothing_is_written(broken_run: tuple) -> None:
    done, broken, out = broken_run
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("model.py score: error:")]
    assert len(errors) == 1 and f"{broken}: 4,096 bytes where the manifest wrote " in errors[0], done.stderr
    assert no_output(out)  # neither the dataset nor its temporary folder


@pytest.mark.parametrize("change", ["one byte", "truncated"])
def test_a_part_changed_since_it_was_written_is_named_and_nothing_is_written(
    bank: Path, loaded: artifacts.LoadedModel, tmp_path: Path, cluster: DaskRunner, change: str
) -> None:
    """A byte changed in the middle of a column (the file still reads, with another value), or the file cut
    short: the manifest's SHA-256 and size catch them before the contract reads a row, on a cluster too."""
    path = bank / "products" / "part-00002.parquet"
    data = bytearray(path.read_bytes())
    if change == "one byte":
        data[len(data) // 3] ^= 0x01
    else:
        data = data[: len(data) - 100]
    path.write_bytes(bytes(data))
    with pytest.raises(DataContractError) as caught:
        write_scores(open_bank(bank), cluster, loaded.predictor, None, tmp_path / "out" / "scores.parquet")
    why = "its SHA-256 is not the manifest's" if change == "one byte" else "bytes where the manifest wrote"
    assert str(caught.value).startswith(f"{path}: ") and why in str(caught.value)
    assert no_output(tmp_path / "out")


def test_a_broken_partition_is_reported_without_a_traceback(broken_run: tuple) -> None:
    done, _, _ = broken_run
    assert "Traceback" not in done.stderr and "Compute Failed" not in done.stderr, done.stderr


@pytest.mark.parametrize("where", ["in-process", "cluster"])
def test_a_value_that_breaks_the_contract_is_named_by_partition_file_and_row(
    bank: Path, loaded: artifacts.LoadedModel, tmp_path: Path, where: str, request: pytest.FixtureRequest
) -> None:
    path = bank / "transactions" / "part-00002.parquet"
    table = pq.read_table(path)
    amount = table["amount"].to_numpy().copy()
    amount[41] = np.inf
    write_flawed(table.set_column(table.schema.get_field_index("amount"), "amount", pa.array(amount)), path)
    run = LocalRunner() if where == "in-process" else request.getfixturevalue("cluster")
    with pytest.raises(DataContractError) as caught:
        write_scores(open_bank(bank), run, loaded.predictor, None, tmp_path / "out" / "scores.csv")
    assert str(caught.value) == f"{path}: column 'amount' row 42: 'inf' is not a finite number"
    assert no_output(tmp_path / "out")


def same_bank(mine: Bank, theirs: Bank) -> None:
    """Every field of two banks equal: each column, each table's arrays (NaN where NaN), a missing table on both."""
    for name in (f.name for f in fields(Bank)):
        a, b = getattr(mine, name), getattr(theirs, name)
        if isinstance(a, dict) or isinstance(b, dict):
            assert a is not None and b is not None and a.keys() == b.keys(), name
            for column in a:
                assert np.array_equal(a[column], b[column], equal_nan=a[column].dtype.kind == "f"), (name, column)
        elif isinstance(a, np.ndarray):
            assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), name
        else:
            assert a == b or (a is None and b is None), name


@pytest.mark.parametrize("picked", ["every 7th", "without a ledger", "nobody"])
def test_a_bank_of_some_customers_is_the_whole_banks_cut(generated: Path, picked: str) -> None:
    """Building the kept customers' bank from the part's tables gives what cutting the whole part's bank gives, table
    for table: also for customers with no row of a table the part has (an empty table, not none)."""
    source = open_bank(generated)
    tables = read_tables(source.paths(source.parts[1]), source.last_day)
    ids = tables["customers"]["customer_id"].to_numpy(np.int64)
    some = {"every 7th": ids[::7], "without a ledger": ids[:5], "nobody": ids[:0]}[picked]
    if picked == "without a ledger":
        ledger = tables["customer_metrics"]
        tables["customer_metrics"] = ledger[~ledger["customer_id"].isin(some)]
    keep = lambda values: np.isin(values, some)  # noqa: E731
    whole = bank_from_tables(tables)
    same_bank(bank_from_tables(tables, keep), only(whole, keep(whole.customer_id)))


def test_a_load_of_some_customers_checks_the_whole_part_and_builds_theirs_alone(bank: Path) -> None:
    """Training loads a part for the customers it draws: a bank of theirs alone, dated as the part (of nobody: an
    empty one); every row of the part is still checked, a bad one named where its customer is not drawn."""
    source = open_bank(bank)
    part = source.parts[2]
    full = source.load(part)[0]
    some = full.customer_id[::7]
    mine = source.load(part, keep=lambda ids: np.isin(ids, some))[0]
    assert np.array_equal(mine.customer_id, some) and mine.snapshot_day == full.snapshot_day
    days = full.transactions["day"][np.isin(full.customer_id[full.transactions["cust"]], some)]
    assert np.array_equal(mine.transactions["day"], days)
    nobody = source.load(part, keep=lambda ids: np.zeros(ids.size, bool))[0]
    assert nobody.size == 0 and nobody.transactions["day"].size == 0 and nobody.snapshot_day == full.snapshot_day
    path = bank / "transactions" / f"{part}.parquet"
    table = pq.read_table(path)
    amount = table["amount"].to_numpy().copy()
    amount[41] = np.inf
    write_flawed(table.set_column(table.schema.get_field_index("amount"), "amount", pa.array(amount)), path)
    with pytest.raises(DataContractError, match=r"column 'amount' row 42: 'inf' is not a finite number"):
        open_bank(bank).load(part, keep=lambda ids: np.zeros(ids.size, bool))  # the manifest has the new file


def move_customer(bank: Path, customer: int, tables: tuple[str, ...], keep: bool = False) -> dict[str, int]:
    """Put a customer's rows of `tables` from part 0 at the end of part 1 (a copy when `keep`); the row of
    part 1 where each table's first moved row now is (1-based)."""
    first_row = {}
    for name in tables:
        source, target = (bank / name / f"part-0000{p}.parquet" for p in (0, 1))
        here, there = pq.read_table(source), pq.read_table(target)
        mine = pc.equal(here["customer_id"], customer)
        if not keep:
            write_flawed(here.filter(pc.invert(mine)), source)
        write_flawed(pa.concat_tables([there, here.filter(mine)]), target)
        first_row[name] = there.num_rows + 1
    return first_row


@pytest.mark.parametrize(
    ("tables", "named", "rule"),
    [
        ((*TABLES, ORACLE), "customers", "belongs to another partition"),
        (("transactions",), "transactions", "is not in customers"),
    ],
    ids=["every row", "transactions only"],
)
def test_a_customer_moved_to_another_partition_is_refused(
    bank: Path, loaded: artifacts.LoadedModel, tmp_path: Path, tables: tuple[str, ...], named: str, rule: str
) -> None:
    customer = int(pd.read_parquet(bank / "customers" / "part-00000.parquet")["customer_id"].iloc[5])
    row = move_customer(bank, customer, tables)[named]
    with pytest.raises(DataContractError) as caught:
        write_scores(open_bank(bank), LocalRunner(), loaded.predictor, None, tmp_path / "scores.parquet")
    path = bank / named / "part-00001.parquet"
    assert str(caught.value) == f"{path}: column 'customer_id' row {row:,}: '{customer}' {rule}"
    assert [p.name for p in tmp_path.iterdir()] == ["bank"]  # no scores, no temporary folder


def test_a_customer_in_two_partitions_is_refused(bank: Path, loaded: artifacts.LoadedModel, tmp_path: Path) -> None:
    """Never scored twice: the copy in the partition the rule does not give it is refused."""
    customer = int(pd.read_parquet(bank / "customers" / "part-00000.parquet")["customer_id"].iloc[0])
    row = move_customer(bank, customer, TABLES, keep=True)["customers"]
    source = open_bank(bank)
    source.load("part-00000")  # the original is where it belongs
    with pytest.raises(DataContractError) as caught:
        write_scores(source, LocalRunner(), loaded.predictor, None, tmp_path / "scores.parquet")
    path = bank / "customers" / "part-00001.parquet"
    assert str(caught.value) == f"{path}: column 'customer_id' row {row:,}: '{customer}' belongs to another partition"
    assert [p.name for p in tmp_path.iterdir()] == ["bank"]


# ---- prepare: the source's contract, and its rows ------------------------------------------------


@pytest.fixture
def source(other_bank: tuple[Path, Path], tmp_path: Path) -> Path:
    """A writable copy of the other flat bank, without its oracle."""
    return Path(shutil.copytree(other_bank[0], tmp_path / "src", ignore=shutil.ignore_patterns("oracle_clv.csv")))


def edit(path: Path, rows: dict[int, dict[str, object]]) -> None:
    """Change cells of a CSV file: {row (0-based, header excluded): {column: value}}."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    for row, values in rows.items():
        for column, value in values.items():
            frame.loc[row, column] = value
    frame.to_csv(path, index=False)


def nothing_prepared(out: Path) -> bool:
    return not out.exists() and not list(out.parent.glob(f".{out.name}*"))


def test_prepare_refuses_a_bad_source_value_naming_the_source_file_row_and_column(
    source: Path, cluster: DaskRunner, tmp_path: Path
) -> None:
    edit(source / "transactions.csv", {41: {"transaction_date": "2024-13-01"}})
    out = tmp_path / "prepared"
    done = run_script(
        "model.py",
        "prepare",
        source,
        "--out",
        out,
        "--partitions",
        PARTS,
        "--quiet",
        "--scheduler",
        cluster.client.scheduler.address,
    )
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    expected = f"{source / 'transactions.csv'}: column 'transaction_date' row 42: '2024-13-01' is not a date"
    assert len(errors) == 1 and expected in errors[0], done.stderr
    assert nothing_prepared(out)


@pytest.mark.parametrize(
    ("table", "column", "value", "row"),
    [
        ("transactions", "transaction_date", "2024-13-01", 41),
        ("transactions", "amount", "twelve", 29_999),
        ("customers", "join_date", "yesterday", 41),
        ("products", "customer_id", "999999", 41),
        pytest.param("products", "start_date", "2031-01-01", 5),
        pytest.param("transactions", "customer_id", "", 29_999),
    ],
    ids=[
        "a bad date",
        "a bad amount in block 2",
        "a bad join date",
        "an unknown customer",
        "a start after the data",
        "an empty id in block 2",
    ],
)
def test_prepare_refuses_what_a_flat_read_refuses_with_the_same_message(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, table: str, column: str, value: str, row: int
) -> None:
    """Read in blocks of 1 MiB (some 20,000 transactions each), prepare names the source file, the row in that
    file and the column, as reading the flat folder does."""
    monkeypatch.setattr(prepare_module, "BLOCK_BYTES", 1 << 20)
    edit(source / f"{table}.csv", {row: {column: value}})
    with pytest.raises(DataContractError) as flat:
        read_bank(source)
    assert f"{source / f'{table}.csv'}: column '{column}' row {row + 1:,}: " in str(flat.value)
    with pytest.raises(DataContractError) as prepared:
        prepare(source, tmp_path / "prepared", PARTS, LocalRunner())
    assert str(prepared.value) == str(flat.value)
    assert nothing_prepared(tmp_path / "prepared")


@pytest.mark.parametrize("block_bytes", [prepare_module.BLOCK_BYTES, 1 << 18], ids=["one block", "apart"])
def test_prepare_refuses_a_ledger_month_given_twice_naming_the_source_file_and_key(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block_bytes: int
) -> None:
    """A month given twice would count its margin twice in a label: refused whether the two rows are read
    together or in different blocks (then only the shuffled partition shows it)."""
    monkeypatch.setattr(prepare_module, "BLOCK_BYTES", block_bytes)
    path = source / "customer_metrics.csv"
    ledger = pd.read_csv(path, dtype=str, keep_default_na=False)
    customer, month = ledger.loc[3, "customer_id"], ledger.loc[3, "month"]
    edit(path, {len(ledger) - 10: {"customer_id": customer, "month": month}})
    with pytest.raises(DataContractError) as caught:
        prepare(source, tmp_path / "prepared", PARTS, LocalRunner())
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "duplicate key" in message, message
    assert f"customer_id '{customer}', month '{month}'" in message, message
    assert nothing_prepared(tmp_path / "prepared")


@pytest.mark.parametrize("table", [*TABLES, ORACLE])
def test_the_prepared_bank_reads_back_the_rows_of_the_source(bank_dir: Path, prepared: Path, table: str) -> None:
    bank = PartitionedBank.open(prepared)
    if table == ORACLE:
        source = pd.read_csv(bank_dir / f"{ORACLE}.csv", parse_dates=["as_of"])
        parts = whole(prepared, ORACLE)
        key = ["customer_id"]
    else:
        source = read_bank(bank_dir)[table]
        parts = pd.concat([read_tables(bank.paths(p), bank.last_day)[table] for p in bank.parts], ignore_index=True)
        key = list(KEYS[table])
    pd.testing.assert_frame_equal(plain(parts, key), plain(source, key), check_dtype=False)


# ---- progress --------------------------------------------------------------------------------------


def test_score_reports_its_progress_by_parts_unless_quiet(
    prepared: Path, model_dir: Path, cluster: DaskRunner, tmp_path: Path
) -> None:
    args = ("score", "--data-dir", prepared, "--model-dir", model_dir, "--scheduler", cluster.client.scheduler.address)
    loud = run_script("model.py", *args, "--output", tmp_path / "loud.parquet")
    quiet = run_script("model.py", *args, "--output", tmp_path / "quiet.parquet", "--quiet")
    assert loud.returncode == 0 and quiet.returncode == 0, loud.stderr + quiet.stderr
    done = [(int(m[1]), int(m[2].replace(",", ""))) for m in map(PROGRESS.match, loud.stderr.splitlines()) if m]
    assert [parts for parts, _ in done] == [1, 2, 3]  # a line a part: each is a third of the bank
    customers = [count for _, count in done]
    assert customers == sorted(customers) and customers[-1] == 1200
    assert " parts, " not in quiet.stderr
