"""Which clv a process imports: the version and a hash of the source files, so that a client can check that
the workers of a cluster run the very code it runs before it sends them any work. A worker started from
another environment, or before the code changed, would otherwise fail with a traceback, or, worse, give
other numbers."""

from __future__ import annotations

import hashlib
import importlib
from functools import cache
from pathlib import Path

import clv

ROOT = Path(clv.__file__).parent


@cache
def identity() -> str:
    """`VERSION+HASH`: the package's version and the first 12 hex digits of the SHA-256 of its .py files."""
    digest = hashlib.sha256()
    for path in sorted(ROOT.rglob("*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{clv.__version__}+{digest.hexdigest()[:12]}"


def probe() -> str:
    """Run on a worker, sent by value (it must not need clv to be unpickled): what that worker imports."""
    try:  # the worker's own copy of this module, which is not the one this function was pickled from
        package = importlib.import_module("clv.common.package")
    except ImportError as exc:
        return f"no clv ({exc})"
    return f"clv {package.identity()} from {package.ROOT}"
