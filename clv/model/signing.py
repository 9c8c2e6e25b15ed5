"""Ed25519 signatures of model manifests: a key pair made by `python model.py keygen`, a detached signature beside
each version's manifest, checked before any other file of the version is read."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNATURE = "manifest.sig"
PRIVATE = "signing.key"
PUBLIC = "signing.pub"
ALGORITHM = "Ed25519"


class KeyFileError(ValueError):
    """A key file that is missing, not an Ed25519 key, or readable by others; the message names the file, never
    its content."""


class SignatureError(ValueError):
    """A manifest that is unsigned, signed by another key, or changed since it was signed."""


def keygen(out: Path) -> tuple[Path, Path]:
    """Write a new key pair into `out`: signing.key (PEM PKCS#8, mode 0600) and signing.pub (PEM). An existing key
    is never overwritten: the versions it signed would no longer verify."""
    out = Path(out)
    private, public = out / PRIVATE, out / PUBLIC
    for path in (private, public):
        if path.exists() or path.is_symlink():
            raise KeyFileError(f"{path}: exists; keygen never overwrites a key (move it away to make a new pair)")
    out.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    _write_new(private, pem, 0o600)
    try:
        _write_new(public, pub, 0o644)
    except BaseException:
        private.unlink()
        raise
    return private, public


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Write `data` to a temporary file of `mode` (never wider, whatever the umask), then link it to `path`: whole
    or not at all, and refused if `path` appeared meanwhile."""
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise KeyFileError(f"{path}: exists; keygen never overwrites a key") from None
    finally:
        tmp.unlink()


def private_key(path: Path) -> Ed25519PrivateKey:
    """The signing key at `path`, refused when other users may read it."""
    path = Path(path)
    data = _read(path, "CLV_MODEL_SIGNING_KEY")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyFileError(f"CLV_MODEL_SIGNING_KEY {path}: readable by others (mode {mode:o}); `chmod 600 {path}`")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"CLV_MODEL_SIGNING_KEY {path}: not an unencrypted Ed25519 private key in PEM")
    return key


def public_key(path: Path) -> Ed25519PublicKey:
    path = Path(path)
    data = _read(path, "CLV_MODEL_VERIFY_KEY")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(
            f"CLV_MODEL_VERIFY_KEY {path}: not an Ed25519 public key in PEM (`model.py keygen` makes one)"
        )
    return key


def _read(path: Path, variable: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{variable} {path}: cannot be read ({exc.strerror})") from None


def key_id(key: Ed25519PublicKey) -> str:
    """A short name of a public key for messages: the start of the SHA-256 of its raw bytes."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(manifest: bytes, key: Ed25519PrivateKey) -> bytes:
    """The content of manifest.sig: the signature of the manifest's bytes, and which key made it (for messages)."""
    document = {
        "algorithm": ALGORITHM,
        "key": key_id(key.public_key()),
        "signature": base64.b64encode(key.sign(manifest)).decode("ascii"),
    }
    return (json.dumps(document, indent=2) + "\n").encode()


def check(manifest: bytes, signature: bytes | None, key: Ed25519PublicKey) -> None:
    """Raise SignatureError unless `signature` (manifest.sig's bytes; None when there is none) is `key`'s
    signature of exactly `manifest`."""
    if signature is None:
        raise SignatureError(f"unsigned (no {SIGNATURE})")
    try:
        document = json.loads(signature)
        raw = base64.b64decode(document["signature"], validate=True)
        named = str(document.get("key", "?"))
    except (ValueError, KeyError, TypeError):
        raise SignatureError(f"{SIGNATURE} is not a signature file") from None
    try:
        key.verify(raw, manifest)
    except InvalidSignature:
        expected = key_id(key)
        if named != expected:
            raise SignatureError(f"signed by another key ({named}; CLV_MODEL_VERIFY_KEY is {expected})") from None
        raise SignatureError("its signature does not match its manifest: changed since it was signed") from None
