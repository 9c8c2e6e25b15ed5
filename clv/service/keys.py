"""API keys: the keys file (hashes only, mode 0600, written whole) that `python api.py keys add|list|revoke` changes,
and the ring the service looks keys up in, read again when the file changes."""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

SCOPES = ("clv:predict", "clv:portfolio", "clv:read", "clv:metrics")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
PREFIX = "clv_"  # lets a secret scanner spot a key pasted where it should not be


class KeyFileError(ValueError):
    """A keys file that cannot be read or written; the message names the file."""


@dataclass(frozen=True)
class ApiKey:
    """One key as the file keeps it: never the key, only its SHA-256. A key is 256 random bits, so its hash
    cannot be reversed by guessing: a slow KDF (bcrypt, Argon2) is for passwords people choose, and would
    only cost each request milliseconds."""

    name: str
    sha256: str
    scopes: tuple[str, ...]
    created_at: str


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def read_keys(path: Path) -> list[ApiKey]:
    """The file's keys; none when there is no file."""
    try:
        document = json.loads(path.read_text())
        return [
            ApiKey(k["name"], k["sha256"], tuple(k["scopes"]), k["created_at"])
            for k in document["keys"]  # a list of objects with these four fields
        ]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a keys file of `python api.py keys add` ({type(exc).__name__})") from None


def write_keys(path: Path, keys: list[ApiKey]) -> None:
    """The whole file, renamed into place: a reader sees the old file or the new one, mode 0600 either way."""
    document = {"keys": [k.__dict__ | {"scopes": list(k.scopes)} for k in keys]}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp makes it 0600
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(document, out, indent=2)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextmanager
def changing(path: Path) -> Iterator[None]:
    """One change of the keys file at a time: two `keys add` run at once both land."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / f".{path.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def add_key(path: Path, name: str, scopes: list[str]) -> str:
    """A new random key named `name` with `scopes`, its hash added to the file; the key itself is returned once."""
    with changing(path):
        keys = read_keys(path)
        if any(k.name == name for k in keys):
            raise KeyFileError(f"{path}: a key named {name!r} exists; revoke it first or choose another name")
        key = PREFIX + secrets.token_urlsafe(32)  # 256 random bits
        created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        write_keys(path, [*keys, ApiKey(name, digest(key), tuple(scopes), created)])
    return key


def revoke_key(path: Path, name: str) -> None:
    with changing(path):
        keys = read_keys(path)
        if not any(k.name == name for k in keys):
            raise KeyFileError(f"{path}: no key named {name!r}; `python api.py keys list` shows them")
        write_keys(path, [k for k in keys if k.name != name])


class KeyRing:
    """The keys the service accepts, by hash: a dict lookup per request. The file is looked at (stat: time,
    size, inode) at most every `reload_seconds`, and read again only when that changed; a file that no longer
    reads keeps the keys read before."""

    def __init__(self, path: Path, reload_seconds: float) -> None:
        self.path = path
        self.reload_seconds = reload_seconds
        self.by_hash: dict[str, ApiKey] = {}
        self.seen: tuple | None = None
        self.looked = -float("inf")
        self.load(strict=True)

    def load(self, strict: bool = False) -> None:
        try:
            stat = self.path.stat()
            seen = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        except FileNotFoundError:
            seen = None
        self.looked = time.monotonic()
        if seen == self.seen:
            return
        try:
            keys = read_keys(self.path)
        except KeyFileError:
            if strict:
                raise
            logger.exception("keeping the %d keys read before", len(self.by_hash))
            return
        if seen is not None and stat.st_mode & 0o077:
            logger.warning("%s can be read by others (mode %o): chmod 600 it", self.path, stat.st_mode & 0o777)
        self.by_hash, self.seen = {k.sha256: k for k in keys}, seen
        logger.info("%d API keys from %s", len(keys), self.path)

    def find(self, key: str) -> ApiKey | None:
        """The key's record, or None; the hash found is compared again in constant time."""
        if time.monotonic() - self.looked >= self.reload_seconds:
            self.load()
        hashed = digest(key)
        record = self.by_hash.get(hashed)
        if record is None or not hmac.compare_digest(record.sha256, hashed):
            return None
        return record

    def __len__(self) -> int:
        return len(self.by_hash)
