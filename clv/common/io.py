"""Files on disk: every write goes to a temporary name in the same folder and is renamed when complete."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`, on failure remove it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_folder(out: Path) -> Iterator[Path]:
    """Yield a hidden folder beside `out`; on success it takes `out`'s place (what was there is set aside by
    a rename and removed only after), on failure it is removed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        for leftover in tmp.rglob(".*.tmp"):  # a file a task lost with its worker was writing; rerun elsewhere
            leftover.unlink()
        old = out.parent / f".{out.name}.{os.getpid()}.old"
        replaced = out.exists() or out.is_symlink()
        if replaced:
            os.replace(out, old)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if replaced:
        shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()


def point_link(link: Path, folder: str) -> None:
    """Switch the symbolic link `link` to `folder` (a name beside it) with one rename, so that a reader never
    sees it missing or half-made."""
    tmp = link.parent / f".{link.name}.{os.getpid()}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(folder, tmp)
    os.replace(tmp, link)


def write_csv(table: pa.Table, path: Path) -> None:
    with atomic_path(path) as tmp:
        pa_csv.write_csv(table, tmp, pa_csv.WriteOptions(quoting_style="needed"))


def write_json(obj: object, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(paths: list[Path]) -> str:
    """One hash over the named data files' contents, in name order."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        digest.update(sha256(path).encode())
    return digest.hexdigest()
