"""Versioned model artifacts: a folder per version of arrays and JSON (never a pickle), a SHA-256 manifest that
names the version, an optional Ed25519 signature of it, and an atomically switched `latest` inside the folder."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import io
import json
import logging
import platform
import zipfile
from dataclasses import dataclass
from importlib import metadata as distributions
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pydantic import ValidationError

from clv.common.io import atomic_folder, atomic_path, point_link, sha256
from clv.model import signing
from clv.model.card import ModelMetadata
from clv.model.features import FEATURE_NAMES
from clv.model.monitoring import Profile

if TYPE_CHECKING:  # scikit-learn loads with a model read or written, not to list or verify versions
    from clv.model.estimator import BankingCLVModel
    from clv.model.predictor import Predictor

logger = logging.getLogger(__name__)

PREFIX = "clv_model_"
LATEST = f"{PREFIX}latest"
MANIFEST = "manifest.json"
SIGNATURE = signing.SIGNATURE
PROFILE = "reference_profile.json"  # the training rows' distributions, for the drift metrics
ESTIMATOR = "model.json"  # the hyperparameters and fitted numbers (clv.model.persistence)
ARRAYS = "model.npz"  # the compiled forest's node arrays, read with allow_pickle=False
IMPORTANCE = "feature_importance.json"
# Version of the saved model's layout: a model saved in another layout is refused at load, with the
# advice to retrain, instead of being read into the wrong places.
ARTIFACT_FORMAT = 4  # 4: arrays and JSON, a manifest naming its version; 3: the estimator pickled by joblib
PICKLED = "model.joblib"  # format 3's pickle: its presence alone refuses the version, unread
FILES = (ESTIMATOR, ARRAYS, "feature_names.json", IMPORTANCE, "metadata.json", PROFILE)


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
        from clv.model.predictor import Predictor

        return Predictor(self.model, self.metadata.horizon_months)


def library_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit-learn": distributions.version("scikit-learn"),
    }


def save(
    model: BankingCLVModel,
    metadata: dict,
    importance: list[dict],
    profile: Profile,
    model_dir: Path,
    signing_key: Path | None = None,
) -> Path:
    """Write a new version folder completely (signed with the private key at `signing_key`, if given), then point
    `latest` at it. Returns the folder."""
    from clv.model import persistence

    key = read_signing_key(signing_key)
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
        document, arrays = persistence.to_parts(model)
        (staging / ESTIMATOR).write_text(document.model_dump_json(indent=2) + "\n")
        with (staging / ARRAYS).open("wb") as handle:
            np.savez_compressed(handle, **arrays)
        (staging / "feature_names.json").write_text(json.dumps(feature_names) + "\n")
        (staging / IMPORTANCE).write_text(json.dumps(importance, indent=2) + "\n")
        (staging / PROFILE).write_text(json.dumps(profile.to_json()) + "\n")
        (staging / "metadata.json").write_text(typed.model_dump_json(indent=2) + "\n")
        files = {name: {"sha256": sha256(staging / name), "bytes": (staging / name).stat().st_size} for name in FILES}
        manifest = (
            json.dumps({"format": ARTIFACT_FORMAT, "version": version, "files": files}, indent=2) + "\n"
        ).encode()
        (staging / MANIFEST).write_bytes(manifest)
        if key is not None:
            (staging / SIGNATURE).write_bytes(signing.sign(manifest, key))
    point_latest(model_dir, final.name)
    logger.info("saved model %s to %s%s", version, final, " (signed)" if key is not None else "")
    return final


def read_signing_key(path: Path | None) -> signing.Ed25519PrivateKey | None:
    """The private key at `path` (None for none), checked: what `save` and `promote` sign with."""
    try:
        return None if path is None else signing.private_key(path)
    except signing.KeyFileError as exc:
        raise ModelArtifactError(str(exc)) from None


def point_latest(model_dir: Path, folder: str) -> None:
    """Switch `latest` to `folder` with one rename, so a reader never sees it missing or half-made."""
    point_link(model_dir / LATEST, folder)


def verify(path: Path, verify_key: Path | None = None) -> ModelMetadata:
    """Check a version folder and return its metadata: with `verify_key` (a public key file) its manifest's signature
    first, before any other file is read; then every file against the manifest, the version the manifest names, the
    layout's format and the feature names."""
    return _verified(path, verify_key)[0]


def _verified(path: Path, verify_key: Path | None) -> tuple[ModelMetadata, dict[str, bytes]]:
    """`verify`, and the bytes of every file as they were checked: the load reads these, never the files again,
    so a file swapped after its check is not what is loaded."""
    if (path / PICKLED).exists():
        raise ModelArtifactError(
            f"{path}: saved in model format 3 (a pickle, never loaded: it could run code); this code reads "
            f"format {ARTIFACT_FORMAT}: retrain with `python model.py train`"
        )
    manifest_path = path / MANIFEST
    if not manifest_path.exists():
        raise ModelArtifactError(f"{path}: no {MANIFEST}; the version is incomplete, train again")
    text = manifest_path.read_bytes()
    if verify_key is not None:
        check_signature(path, text, verify_key)
    try:
        manifest = json.loads(text)
        version = str(manifest["version"])
        listed = {name: (int(entry["bytes"]), str(entry["sha256"])) for name, entry in manifest["files"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelArtifactError(f"{manifest_path}: not a readable manifest ({exc}): truncated or changed") from exc
    contents = {}
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
        data = file.read_bytes()
        if len(data) != listed[name][0] or hashlib.sha256(data).hexdigest() != listed[name][1]:
            raise ModelArtifactError(f"{file}: SHA-256 differs from the manifest: the file was changed")
        contents[name] = data
    if path.name.startswith(PREFIX) and path.name != f"{PREFIX}{version}":
        raise ModelArtifactError(f"{path}: its manifest is version {version}'s: a version moved or renamed")
    metadata = read_metadata(path, contents["metadata.json"].decode("utf-8", "replace"))
    if metadata.version != version:
        raise ModelArtifactError(f"{path}: metadata.json is version {metadata.version}'s, its manifest {version}'s")
    return metadata, contents


def check_signature(path: Path, manifest: bytes, verify_key: Path) -> None:
    """Refuse the version at `path` unless manifest.sig is the signature of `manifest` by the key at `verify_key`."""
    try:
        key = signing.public_key(verify_key)
        signature = (path / SIGNATURE).read_bytes() if (path / SIGNATURE).exists() else None
        signing.check(manifest, signature, key)
    except (signing.KeyFileError, signing.SignatureError) as exc:
        raise ModelArtifactError(f"{path}: refused, {exc}") from None


def read_metadata(path: Path, text: str | None = None) -> ModelMetadata:
    """metadata.json of a version (its `text`, when read already), refused when another version of this code wrote
    it."""
    text = (path / "metadata.json").read_text() if text is None else text
    try:
        saved = json.loads(text).get("format", 1)
    except (ValueError, AttributeError) as exc:
        raise ModelArtifactError(f"{path / 'metadata.json'}: not JSON ({exc}); retrain") from exc
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


def read_importance(path: Path) -> list[dict]:
    """The permutation importance measured at training, as saved beside the model."""
    return json.loads((path / IMPORTANCE).read_text())


def has_latest(model_dir: Path) -> bool:
    return (Path(model_dir) / LATEST).exists()


def resolve(model_dir: Path, version: str | None = None) -> Path:
    """The real folder of `version` (a name or timestamp), or of `latest`; `model_dir` may itself be one. A version
    is a `clv_model_*` folder directly inside `model_dir`: a name with a path in it, or a link that leads elsewhere,
    is refused."""
    model_dir = Path(model_dir)
    itself = (model_dir / MANIFEST).exists() or (model_dir / PICKLED).exists()
    if itself and not (model_dir / LATEST).is_symlink():  # a manifest put beside `latest` makes no version of it
        return model_dir.resolve()
    if version is not None and (not version or "/" in version or "\\" in version or version.startswith(".")):
        raise ModelArtifactError(f"{version!r} is not a version: `python model.py list` shows them")
    name = LATEST if version is None else (version if version.startswith(PREFIX) else f"{PREFIX}{version}")
    path = model_dir / name
    if not path.exists():
        if version is None:
            raise ModelArtifactError(
                f"no model in {model_dir}; run `python model.py train` or start the API to train one"
            )
        raise ModelArtifactError(f"no version {version} in {model_dir}; `python model.py list` shows them")
    real = path.resolve()
    if real.parent != model_dir.resolve() or not real.name.startswith(PREFIX) or real.name == LATEST:
        raise ModelArtifactError(f"{path}: leads outside {model_dir}; refused (a version is a {PREFIX}* folder in it)")
    return real


def load(model_dir: Path, version: str | None = None, verify_key: Path | None = None) -> LoadedModel:
    """The version `version` (default: `latest`) of `model_dir`, verified (signed by `verify_key`'s pair, if given)."""
    return load_folder(resolve(model_dir, version), verify_key)


def load_folder(path: Path, verify_key: Path | None = None) -> LoadedModel:
    """A version folder that `resolve` found, verified, then read: JSON, and arrays read with allow_pickle=False."""
    from clv.model import persistence

    metadata, contents = _verified(path, verify_key)
    saved = metadata.libraries
    for name, current in library_versions().items():
        if saved.get(name) not in (None, current):  # plain numbers and JSON: any version reads them the same
            logger.warning("model %s was saved with %s %s, this is %s %s", path.name, name, saved[name], name, current)
    try:
        document = persistence.SavedEstimator.model_validate_json(contents[ESTIMATOR])
        with np.load(io.BytesIO(contents[ARRAYS]), allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
        model = persistence.from_parts(document, arrays)
    except (ValueError, TypeError, OSError, zipfile.BadZipFile) as exc:  # ValidationError is a ValueError
        raise ModelArtifactError(f"{path}: the model cannot be read ({_first_line(exc)}); retrain") from exc
    try:
        profile = Profile.from_json(contents[PROFILE].decode())
    except (ValueError, KeyError, TypeError) as exc:  # DriftError is a ValueError
        raise ModelArtifactError(f"{path / PROFILE}: {exc}; retrain with `python model.py train`") from exc
    return LoadedModel(model, metadata, path, profile)


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


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


def promote(model_dir: Path, version: str, signing_key: Path | None = None, verify_key: Path | None = None) -> Path:
    """Make an existing, intact version the latest (a rollback). With `signing_key` it signs the version's manifest
    (an operator vouching for it: how a version saved before signing is brought in); with `verify_key` a version
    whose signature does not verify is refused."""
    path = resolve(model_dir, version)
    key = read_signing_key(signing_key)
    if key is not None:
        verify(path)
        with atomic_path(path / SIGNATURE) as tmp:
            tmp.write_bytes(signing.sign((path / MANIFEST).read_bytes(), key))
    load_folder(path, verify_key)  # every file read as the service will, so what is made latest serves
    point_latest(Path(model_dir), path.name)
    return path
