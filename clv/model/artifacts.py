"""Versioned model artifacts: a folder per version, a SHA-256 manifest, and an atomically switched `latest`."""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import platform
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import sklearn
from pydantic import ValidationError

from clv.common.io import atomic_folder, point_link, sha256
from clv.model.card import ModelMetadata
from clv.model.estimator import BankingCLVModel
from clv.model.features import FEATURE_NAMES
from clv.model.monitoring import Profile
from clv.model.predictor import Predictor

logger = logging.getLogger(__name__)

PREFIX = "clv_model_"
LATEST = f"{PREFIX}latest"
MANIFEST = "manifest.json"
PICKLED_BY = ("scikit-learn", "numpy")
PROFILE = "reference_profile.json"  # the training rows' distributions, for the drift metrics
# Version of the saved model's layout: a model saved in another layout is refused at load, with the
# advice to retrain, instead of being read into the wrong places.
ARTIFACT_FORMAT = 3  # 3: the estimator pickled from clv.model.estimator
FILES = ("model.joblib", "feature_names.joblib", "feature_importance.joblib", "metadata.json", PROFILE)


class ModelArtifactError(RuntimeError):
    """A model folder is missing, incomplete or changed since it was written."""


@dataclass(frozen=True)
class LoadedModel:
    """A verified model with its metadata; the service swaps one for another whole, never field by field."""

    model: BankingCLVModel
    metadata: ModelMetadata
    path: Path
    profile: Profile  # the training rows' distributions, for the drift

    @property
    def version(self) -> str:
        return self.metadata.version

    @property
    def default_as_of(self) -> dt.date:
        """The last date of the data the model was trained on: what a request is scored as of by default."""
        return self.metadata.data_last_date

    @functools.cached_property
    def predictor(self) -> Predictor:
        return Predictor(self.model, self.metadata.horizon_months)


def library_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
        "joblib": joblib.__version__,
    }


def save(model: BankingCLVModel, metadata: dict, importance: list[dict], profile: Profile, model_dir: Path) -> Path:
    """Write a new version folder completely, then point `latest` at it. Returns the folder."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    version = now.strftime("%Y%m%dT%H%M%S%fZ")
    final = model_dir / f"{PREFIX}{version}"
    with atomic_folder(final) as staging:
        # what this save knows wins over the caller's keys: a re-saved model gets its own version
        feature_names = [str(name) for name in model.feature_names_in_]
        typed = ModelMetadata.model_validate(
            {
                **metadata,
                "format": ARTIFACT_FORMAT,
                "version": version,
                "trained_at": now.replace(microsecond=0),
                "libraries": library_versions(),
                "feature_names": feature_names,
            }
        )
        joblib.dump(model, staging / "model.joblib", compress=3)
        joblib.dump(feature_names, staging / "feature_names.joblib")
        joblib.dump(importance, staging / "feature_importance.joblib")
        (staging / PROFILE).write_text(json.dumps(profile.to_json()) + "\n")
        (staging / "metadata.json").write_text(typed.model_dump_json(indent=2) + "\n")
        manifest = {
            name: {"sha256": sha256(staging / name), "bytes": (staging / name).stat().st_size} for name in FILES
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    point_latest(model_dir, final.name)
    logger.info("saved model %s to %s", version, final)
    return final


def point_latest(model_dir: Path, folder: str) -> None:
    """Switch `latest` to `folder` with one rename, so a reader never sees it missing or half-made."""
    point_link(model_dir / LATEST, folder)


def verify(path: Path) -> ModelMetadata:
    """Check every file against the manifest, the layout's format and the feature names; return the metadata."""
    manifest_path = path / MANIFEST
    if not manifest_path.exists():
        raise ModelArtifactError(f"{path}: no {MANIFEST}; the version is incomplete, train again")
    try:
        manifest = json.loads(manifest_path.read_text())
        listed = {name: (int(manifest[name]["bytes"]), str(manifest[name]["sha256"])) for name in manifest}
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelArtifactError(f"{manifest_path}: not a readable manifest ({exc}): truncated or changed") from exc
    for name in FILES:
        file = path / name
        if name not in listed:
            raise ModelArtifactError(f"{path}: {MANIFEST} does not list {name}")
        if not file.exists():
            raise ModelArtifactError(f"{file}: missing; the version is incomplete")
        if file.stat().st_size != listed[name][0]:
            raise ModelArtifactError(
                f"{file}: {file.stat().st_size} bytes where the manifest says {listed[name][0]}: truncated or changed"
            )
        if sha256(file) != listed[name][1]:
            raise ModelArtifactError(f"{file}: SHA-256 differs from the manifest: the file was changed")
    return read_metadata(path)


def read_metadata(path: Path) -> ModelMetadata:
    """metadata.json of a version, refused when another version of this code wrote it."""
    text = (path / "metadata.json").read_text()
    saved = json.loads(text).get("format", 1)
    if saved != ARTIFACT_FORMAT:
        raise ModelArtifactError(
            f"{path}: saved in model format {saved}, this code reads format {ARTIFACT_FORMAT}; "
            "retrain with `python model.py train`"
        )
    try:
        metadata = ModelMetadata.model_validate_json(text)
    except ValidationError as exc:
        raise ModelArtifactError(
            f"{path / 'metadata.json'}: not this code's metadata ({exc.error_count()} "
            "fields differ); retrain with `python model.py train`"
        ) from exc
    if metadata.feature_names != list(FEATURE_NAMES):
        differ = sorted(set(metadata.feature_names) ^ set(FEATURE_NAMES))[:3] or ["their order"]
        raise ModelArtifactError(
            f"{path}: its features differ from this code's ({', '.join(differ)}); retrain with `python model.py train`"
        )
    return metadata


def has_latest(model_dir: Path) -> bool:
    return (Path(model_dir) / LATEST).exists()


def resolve(model_dir: Path, version: str | None = None) -> Path:
    """The folder of `version` (a name or timestamp), or of `latest`; `model_dir` may itself be one."""
    model_dir = Path(model_dir)
    if (model_dir / MANIFEST).exists() or (model_dir / "model.joblib").exists():
        return model_dir
    name = LATEST if version is None else (version if version.startswith(PREFIX) else f"{PREFIX}{version}")
    path = model_dir / name
    if not path.exists():
        if version is None:
            raise ModelArtifactError(
                f"no model in {model_dir}; run `python model.py train` or start the API to train one"
            )
        raise ModelArtifactError(f"no version {version} in {model_dir}; `python model.py list` shows them")
    return path.resolve()


def load(model_dir: Path, version: str | None = None) -> LoadedModel:
    path = resolve(model_dir, version)
    metadata = verify(path)
    saved = metadata.libraries
    for name, current in library_versions().items():
        if saved.get(name) in (None, current):
            continue
        if name in PICKLED_BY:  # the pickle is these libraries' objects: another version may read it wrong
            versions = f"saved with {name} {saved[name]}, this is {name} {current}"
            raise ModelArtifactError(f"{path}: {versions}; retrain with `python model.py train`")
        logger.warning("model %s was saved with %s %s, this is %s %s", path.name, name, saved[name], name, current)
    try:
        model = joblib.load(path / "model.joblib")
    except Exception as exc:
        raise ModelArtifactError(f"{path / 'model.joblib'}: cannot be loaded: {exc}") from exc
    try:
        profile = Profile.from_json((path / PROFILE).read_text())
    except (ValueError, KeyError, TypeError) as exc:  # DriftError is a ValueError
        raise ModelArtifactError(f"{path / PROFILE}: {exc}; retrain with `python model.py train`") from exc
    return LoadedModel(model, metadata, path, profile)


def versions(model_dir: Path) -> list[dict]:
    """Every complete version, newest first, with its headline held-out metrics."""
    model_dir = Path(model_dir)
    latest = (model_dir / LATEST).resolve().name if (model_dir / LATEST).exists() else None
    out = []
    for path in sorted(model_dir.glob(f"{PREFIX}*"), reverse=True):
        if path.name == LATEST or not (path / "metadata.json").exists():
            continue
        try:
            meta = json.loads((path / "metadata.json").read_text())
            model = meta.get("metrics", {}).get("model", {})
        except (ValueError, AttributeError) as exc:  # a changed file: `load` and `promote` refuse it too
            logger.warning("%s: metadata.json is not readable (%s); version skipped", path, exc)
            continue
        out.append(
            {
                "version": meta["version"],
                "trained_at": meta["trained_at"],
                "cutoff": meta.get("cutoff"),
                "normalized_gini": model.get("normalized_gini"),
                "decile_mape": model.get("decile_mape"),
                "interval_coverage": model.get("interval_coverage"),
                "latest": path.name == latest,
            }
        )
    return out


def promote(model_dir: Path, version: str) -> Path:
    """Make an existing, intact version the latest (a rollback)."""
    path = resolve(model_dir, version)
    verify(path)
    point_latest(Path(model_dir), path.name)
    return path
