"""A saved model is data, not code: arrays and JSON that predict exactly as the fitted model did, a pickle never read
(an old version's or an attacker's), Ed25519-signed manifests checked before any other file is read, and versions
kept inside the model folder."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import shutil
import stat
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sklearn.base import clone

from api import create_app
from clv.data.bank import load_bank
from clv.model import artifacts, signing
from clv.model.artifacts import ModelArtifactError
from clv.model.estimator import BankingCLVModel
from clv.model.predictor import Predictor
from clv.model.protocol import Rows, churn_labels, rows_at
from clv.service.settings import Settings
from tests.conftest import resave
from tests.servers import run_script, wait_until


@pytest.fixture(scope="module")
def rows(bank_dir: Path, loaded: artifacts.LoadedModel) -> Rows:
    meta = loaded.metadata
    return rows_at(load_bank(bank_dir), [meta.cutoff], meta.horizon_months, meta.discount_rate)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A signing key pair made by the library's keygen: (private, public)."""
    return signing.keygen(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return signing.keygen(tmp_path_factory.mktemp("other_keys"))


def latest(models: Path) -> Path:
    return (models / artifacts.LATEST).resolve()


def save_signed(loaded: artifacts.LoadedModel, models: Path, key: Path | None) -> Path:
    importance = artifacts.read_importance(loaded.path)
    return artifacts.save(loaded.model, loaded.metadata.model_dump(), importance, loaded.profile, models, key)


# ---- arrays and JSON predict exactly as the fitted model ---------------------------------------------------


@pytest.mark.parametrize(
    ("target", "ledger", "churn"),
    [("two_part", True, True), ("log", True, False), ("squared_error", False, True)],
    ids=["two-part with ledger and churn", "log without churn", "squared error without ledger"],
)
def test_a_saved_model_predicts_exactly_what_the_fitted_one_did(
    loaded: artifacts.LoadedModel, rows: Rows, tmp_path: Path, target: str, ledger: bool, churn: bool
) -> None:
    """Everything a prediction carries, to the bit: value, interval, confidence, churn probability, drivers and
    their bias, every horizon and the curve (through `lifetime`), for rows with and without a ledger."""
    params = {"target": target, "n_estimators": 25}
    if not ledger:  # one group, "all", for the interval and the longer horizons' margins alike
        lifetime = loaded.model.lifetime
        margins = {months: {"all": by["ledger"]} for months, by in lifetime.margins.items()}
        params |= {"ledger_features": (), "lifetime": dataclasses.replace(lifetime, margins=margins)}
    fitted = clone(loaded.model).set_params(**params)
    # the small bank's customers as of one date all bring something: the two-part target needs some who do not
    y = np.where(np.abs(rows.y) < np.quantile(np.abs(rows.y), 0.2), 0.0, rows.y)
    fitted.fit(rows.X, y, groups=rows.customer_id, churned=churn_labels(rows.churned) if churn else None)
    importance = artifacts.read_importance(loaded.path)
    path = artifacts.save(fitted, loaded.metadata.model_dump(), importance, loaded.profile, tmp_path)
    again = artifacts.load(tmp_path)
    assert again.path == path and type(again.model) is BankingCLVModel
    assert again.model.get_params() == fitted.get_params()
    assert again.model.expected_value_ == fitted.expected_value_
    for X in (rows.X, fitted.without_ledger(rows.X), rows.X.iloc[:3]):  # many rows (trees' apply), few (numpy)
        mine, theirs = (Predictor(model, 12).predict(X, curve=True) for model in (again.model, fitted))
        for name in ("value", "low", "high", "confidence", "churn", "contributions"):
            np.testing.assert_array_equal(getattr(mine, name), getattr(theirs, name), err_msg=name)
        assert mine.horizons.keys() == theirs.horizons.keys()
        for months, band in mine.horizons.items():
            for a, b in zip(band, theirs.horizons[months], strict=True):
                np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(mine.curve.cumulative_clv, theirs.curve.cumulative_clv)
        np.testing.assert_array_equal(again.model.explain(X.iloc[:2]), fitted.explain(X.iloc[:2]))
    assert np.isnan(again.model.predict_churn(rows.X)).all() != churn


def test_a_version_holds_arrays_and_json_and_no_pickle(loaded: artifacts.LoadedModel) -> None:
    files = sorted(p.name for p in loaded.path.iterdir())
    assert files == sorted([*artifacts.FILES, artifacts.MANIFEST])
    for name in files:
        if name.endswith(".json"):
            json.loads((loaded.path / name).read_text())
    with zipfile.ZipFile(loaded.path / artifacts.ARRAYS) as archive:
        for member in archive.namelist():
            header = archive.read(member)[:128]
            assert header.startswith(b"\x93NUMPY") and b"'O'" not in header and b"|O" not in header, member
    manifest = json.loads((loaded.path / artifacts.MANIFEST).read_text())
    assert manifest["version"] == loaded.version and set(manifest["files"]) == set(artifacts.FILES)


# ---- a pickle is never read ----------------------------------------------------------------------------------


class Exploit:
    """What an attacker puts in a model folder: unpickling it creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


def forge(models: Path, source: Path, marker: Path, how: str) -> Path:
    """A new version copied from `source`, its files replaced by pickles that create `marker` when loaded, with
    its metadata and manifest rewritten to match (as an attacker who can write the model folder would)."""
    version = "29991231T000000000000Z"
    forged = models / f"{artifacts.PREFIX}{version}"
    shutil.copytree(source, forged)
    (forged / artifacts.SIGNATURE).unlink(missing_ok=True)  # the attacker has no signing key
    payload = pickle.dumps(Exploit(marker))
    for name in artifacts.FILES:
        if name == "metadata.json":
            continue
        if how == "object array" and name == artifacts.ARRAYS:
            with (forged / name).open("wb") as handle:  # numpy pickles an object array inside the archive
                np.savez(handle, fill=np.array([Exploit(marker)], dtype=object))
        else:
            (forged / name).write_bytes(payload)
    metadata = json.loads((forged / "metadata.json").read_text()) | {"version": version}
    (forged / "metadata.json").write_text(json.dumps(metadata))
    files = {
        name: {"sha256": artifacts.sha256(forged / name), "bytes": (forged / name).stat().st_size}
        for name in artifacts.FILES
    }
    (forged / artifacts.MANIFEST).write_text(json.dumps({"format": 4, "version": version, "files": files}))
    return forged


@pytest.fixture
def opened() -> Iterator[list[str]]:
    """The files this process opens while the test runs (Python's audit events: open() and os.open alike)."""
    seen: list[str] = []
    active = [True]

    def hook(event: str, args: tuple) -> None:
        if active[0] and event == "open" and isinstance(args[0], str | bytes | os.PathLike):
            seen.append(os.fsdecode(args[0]))

    sys.addaudithook(hook)  # hooks cannot be removed: this one goes quiet after the test
    yield seen
    active[0] = False


@pytest.mark.parametrize("how", ["pickles", "object array"])
@pytest.mark.parametrize("verified", [False, True], ids=["no verify key", "verify key"])
def test_a_forged_version_of_pickles_runs_nothing(
    loaded: artifacts.LoadedModel,
    models: Path,
    tmp_path: Path,
    keys: tuple[Path, Path],
    opened: list[str],
    how: str,
    verified: bool,
) -> None:
    marker = tmp_path / "pwned"
    forged = forge(models, loaded.path, marker, how)
    artifacts.point_latest(models, forged.name)
    verify_key = keys[1] if verified else None
    opened.clear()
    with pytest.raises(ModelArtifactError, match=forged.name) as refused:
        artifacts.load(models, verify_key=verify_key)
    with pytest.raises(ModelArtifactError, match=forged.name):
        artifacts.promote(models, forged.name, verify_key=verify_key)
    assert not marker.exists()
    assert "\n" not in str(refused.value)
    if verified:  # refused on its signature, before any other file of it was opened
        assert "unsigned" in str(refused.value)
        read = {Path(p).name for p in opened if Path(p).parent == forged}
        assert read <= {artifacts.MANIFEST, artifacts.SIGNATURE}, read
    else:
        assert "cannot be read" in str(refused.value)


def test_an_old_pickled_version_is_refused_unread_with_the_advice_to_retrain(
    models: Path, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    marker = tmp_path / "pwned"
    old = models / f"{artifacts.PREFIX}20240101T000000000000Z"
    old.mkdir()
    for name in ("model.joblib", "feature_names.joblib", "feature_importance.joblib"):
        (old / name).write_bytes(pickle.dumps(Exploit(marker)))
    (old / "metadata.json").write_text(json.dumps({"format": 3, "version": "20240101T000000000000Z"}))
    (old / artifacts.MANIFEST).write_text(json.dumps({"model.joblib": {"sha256": "0", "bytes": 1}}))
    artifacts.point_latest(models, old.name)
    for verify_key in (None, keys[1]):
        with pytest.raises(ModelArtifactError, match=rf"{old.name}: saved in model format 3 .*retrain"):
            artifacts.load(models, verify_key=verify_key)
        with pytest.raises(ModelArtifactError, match="format 3"):
            artifacts.load(old, verify_key=verify_key)  # the folder itself
    done = run_script("model.py", "evaluate", "--model-dir", models, "--data-dir", tmp_path)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "format 3" in done.stderr and old.name in done.stderr and "retrain" in done.stderr
    assert not marker.exists()


# ---- versions stay inside the model folder ---------------------------------------------------------------------


def test_a_version_outside_the_model_folder_is_refused(
    loaded: artifacts.LoadedModel, models: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(loaded.path, elsewhere / loaded.path.name)  # a whole, intact version, but not in the folder
    (models / artifacts.LATEST).unlink()
    os.symlink(elsewhere / loaded.path.name, models / artifacts.LATEST)
    with pytest.raises(ModelArtifactError, match="leads outside"):
        artifacts.load(models)
    os.symlink(elsewhere / loaded.path.name, models / f"{artifacts.PREFIX}29990101T000000000000Z")
    with pytest.raises(ModelArtifactError, match="leads outside"):
        artifacts.promote(models, "29990101T000000000000Z")
    for name in ("../elsewhere", f"../elsewhere/{loaded.path.name}", "a/b", "..", ".hidden"):
        with pytest.raises(ModelArtifactError, match="not a version"):
            artifacts.promote(models, name)
    with pytest.raises(ModelArtifactError, match="not a version"):
        artifacts.load(models, "../elsewhere")
    assert os.readlink(models / artifacts.LATEST) == str(elsewhere / loaded.path.name)  # promote moved nothing


# ---- signed models -------------------------------------------------------------------------------------------


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(tmp_path: Path) -> None:
    done = run_script("model.py", "keygen", "--out", tmp_path / "keys")
    assert done.returncode == 0, done.stderr
    private, public = tmp_path / "keys" / signing.PRIVATE, tmp_path / "keys" / signing.PUBLIC
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert signing.key_id(signing.private_key(private).public_key()) == signing.key_id(signing.public_key(public))
    before = private.read_bytes()
    again = run_script("model.py", "keygen", "--out", tmp_path / "keys")
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1
    assert "never overwrites" in again.stderr and private.read_bytes() == before
    assert "PRIVATE KEY" not in done.stdout + done.stderr + again.stderr


def test_a_signed_version_verifies_and_an_unsigned_or_wrongly_signed_one_is_refused(
    loaded: artifacts.LoadedModel, models: Path, keys: tuple[Path, Path], other_keys: tuple[Path, Path]
) -> None:
    private, public = keys
    unsigned = loaded.path.name
    signed = save_signed(loaded, models, private)
    assert (signed / artifacts.SIGNATURE).exists() and not (models / unsigned / artifacts.SIGNATURE).exists()
    assert artifacts.load(models, verify_key=public).path == signed
    assert artifacts.load(models).path == signed  # without a verify key a signature is not needed, nor in the way

    with pytest.raises(ModelArtifactError, match=rf"{unsigned}: refused, unsigned"):
        artifacts.load(models, unsigned, verify_key=public)
    with pytest.raises(ModelArtifactError, match=rf"{signed.name}: refused, signed by another key"):
        artifacts.load(models, verify_key=other_keys[1])
    # the signature covers the manifest's bytes, and the manifest names the version: it moves nowhere
    shutil.copy(signed / artifacts.SIGNATURE, models / unsigned / artifacts.SIGNATURE)
    with pytest.raises(ModelArtifactError, match=rf"{unsigned}: refused, its signature does not match"):
        artifacts.load(models, unsigned, verify_key=public)
    renamed = models / f"{artifacts.PREFIX}29990101T000000000000Z"
    shutil.copytree(signed, renamed)
    with pytest.raises(ModelArtifactError, match=rf"{renamed.name}: its manifest is version {signed.name[10:]}'s"):
        artifacts.load(models, renamed.name, verify_key=public)
    manifest = signed / artifacts.MANIFEST
    manifest.write_bytes(manifest.read_bytes().replace(b'"format": 4', b'"format":  4'))
    with pytest.raises(ModelArtifactError, match="signature does not match its manifest"):
        artifacts.load(models, verify_key=public)
    with pytest.raises(ModelArtifactError, match=r"CLV_MODEL_VERIFY_KEY .*cannot be read"):
        artifacts.load(models, verify_key=models / "no.pub")
    with pytest.raises(ModelArtifactError, match=r"CLV_MODEL_VERIFY_KEY .*not an Ed25519 public key"):
        artifacts.load(models, verify_key=private)


def test_promote_signs_with_the_signing_key_and_refuses_what_does_not_verify(
    loaded: artifacts.LoadedModel, models: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    private, public = keys
    old = loaded.path.name
    new = resave(loaded, models).name
    env = {"CLV_MODEL_VERIFY_KEY": str(public)}
    refused = run_script("model.py", "promote", old, "--model-dir", models, **env)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert f"{old}: refused, unsigned" in refused.stderr and latest(models).name == new
    promoted = run_script("model.py", "promote", old, "--model-dir", models, CLV_MODEL_SIGNING_KEY=str(private), **env)
    assert promoted.returncode == 0, promoted.stderr
    assert latest(models).name == old and artifacts.load(models, verify_key=public).version == loaded.version
    listed = run_script("model.py", "list", "--model-dir", models, **env)
    assert listed.returncode == 0 and new[10:] in listed.stdout
    # a signing key others can read is refused before anything is trained or signed
    loose = tmp_path / "loose.key"
    shutil.copy(private, loose)
    loose.chmod(0o644)
    trained = run_script(
        "model.py", "train", "--model-dir", models, "--data-dir", tmp_path, CLV_MODEL_SIGNING_KEY=str(loose)
    )
    assert trained.returncode == 2 and "readable by others" in trained.stderr and "chmod 600" in trained.stderr
    assert "PRIVATE KEY" not in trained.stderr


# ---- the service never serves a forged version -------------------------------------------------------------------


def refusals(client: TestClient) -> float:
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "clv_model_reloads_total" and sample.labels.get("result") == "refused":
                return sample.value
    return 0.0


@pytest.mark.parametrize(
    ("forgery", "reason"),
    [
        ("unsigned", "refused, unsigned"),
        ("signature kept", "its signature does not match its manifest"),
        ("outside the folder", "leads outside"),
    ],
)
def test_the_service_keeps_serving_the_signed_model_and_counts_the_refusal(
    caplog: pytest.LogCaptureFixture,
    reason: str,
    settings: Settings,
    loaded: artifacts.LoadedModel,
    models: Path,
    tmp_path: Path,
    keys: tuple[Path, Path],
    forgery: str,
) -> None:
    private, public = keys
    artifacts.promote(models, loaded.version, signing_key=private)  # the good version, signed
    marker = tmp_path / "pwned"
    following = settings.model_copy(
        update={
            "model_dir": models,
            "reload_seconds": 0.2,
            "log_file": tmp_path / "api.log",
            "model_verify_key": public,
        }
    )
    with TestClient(create_app(following)) as client:
        assert client.get("/health").json()["model_version"] == loaded.version
        before = refusals(client)
        if forgery == "outside the folder":  # a version signed by the right key, but not in the model folder
            elsewhere = save_signed(loaded, tmp_path / "elsewhere", private)
            (models / artifacts.LATEST).unlink()
            os.symlink(elsewhere, models / artifacts.LATEST)
        else:
            good = models / loaded.path.name
            forged = forge(models, good, marker, "pickles")
            if forgery == "signature kept":
                shutil.copy(good / artifacts.SIGNATURE, forged / artifacts.SIGNATURE)
            artifacts.point_latest(models, forged.name)
        wait_until(lambda: refusals(client) > before, "a refusal counted in /metrics")
        time.sleep(0.5)  # more looks at the same latest: refused once, not again
        assert refusals(client) - before == 1
        assert client.get("/health").json()["model_version"] == loaded.version
    assert not marker.exists()
    assert f"still serving {loaded.version}" in caplog.text and reason in caplog.text


def test_a_manifest_beside_latest_does_not_make_the_model_folder_a_version(
    loaded: artifacts.LoadedModel, models: Path
) -> None:
    shutil.copy(models / loaded.path.name / artifacts.MANIFEST, models / artifacts.MANIFEST)
    assert artifacts.load(models).path == models / loaded.path.name
    assert artifacts.load(models / loaded.path.name).version == loaded.version  # a version folder given itself


def test_the_service_signs_the_first_model_it_trains_and_serves_it_verified(
    bank_dir: Path, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    private, public = keys
    first = Settings(
        data_dir=bank_dir,
        model_dir=tmp_path / "models",
        log_file=tmp_path / "api.log",
        model_signing_key=private,
        model_verify_key=public,
    )
    with TestClient(create_app(first)) as client:
        wait_until(lambda: client.get("/health").status_code == 200, "the first model served", 180)
        version = client.get("/health").json()["model_version"]
    assert (latest(tmp_path / "models") / artifacts.SIGNATURE).exists()
    assert artifacts.load(tmp_path / "models", verify_key=public).version == version
