"""The CLV service: POST /predict/clv and /predict/clv/batch; GET /health, /livez, /readyz, /model, /portfolio,
/metrics; the page at /.

Run `python api.py` (or `make run`). At start it loads models/clv_model_latest; when there is none it
generates the default data if data/ is empty and trains a first model in the background, while
/health answers 503 with the reason. The app is clv/service/app.py.

`python api.py keys add NAME --scopes clv:predict,clv:portfolio` makes an API key (printed once), `keys list` shows
them and `keys revoke NAME` revokes one (clv/service/keys.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from typing import NoReturn

from clv.service import keys
from clv.service.settings import SettingsError, load_settings

__all__ = ["app", "create_app", "main"]


def keys_parser() -> argparse.ArgumentParser:
    from clv.cli import OneLineParser  # the command line's helpers, not loaded to serve

    parser = OneLineParser(
        prog="api.py keys",
        description="API keys of the service, kept as hashes in CLV_API_KEYS_FILE (default api_keys.json).",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    add = commands.add_parser("add", help="make a key and print it once, alone on the last line")
    add.add_argument("name", help="who or what holds the key; it names the caller in the request log")
    add.add_argument(
        "--scopes", default="clv:predict", help=f"comma-separated, of {', '.join(keys.SCOPES)} (default clv:predict)"
    )
    commands.add_parser("list", help="names, scopes and creation times; never a key")
    revoke = commands.add_parser("revoke", help="remove a key: the service refuses it within CLV_RELOAD_SECONDS")
    revoke.add_argument("name")
    return parser


def keys_command(argv: list[str]) -> int:
    """`python api.py keys ...`: errors are one line on stderr and exit code 2."""
    from clv.cli import OptionError

    args = keys_parser().parse_args(argv)
    try:
        path = load_settings().api_keys_file
        if args.command == "add":
            if not keys.NAME.fullmatch(args.name):
                raise OptionError(f"name {args.name!r}: letters, digits, '.', '_' or '-', up to 64")
            scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
            if not scopes or any(s not in keys.SCOPES for s in scopes):
                raise OptionError(f"--scopes {args.scopes!r}: not one of {', '.join(keys.SCOPES)}")
            key = keys.add_key(path, args.name, scopes)
            print(f"added key {args.name!r} ({', '.join(scopes)}) to {path}; it is shown once, on the next line:")
            print(key)
        elif args.command == "list":
            for k in keys.read_keys(path):
                print(f"{k.name}\t{','.join(k.scopes)}\t{k.created_at}")
        else:
            keys.revoke_key(path, args.name)
            print(f"revoked key {args.name!r} in {path}")
    except (OptionError, SettingsError, keys.KeyFileError, OSError) as exc:
        print(f"api.py keys: error: {exc}", file=sys.stderr)
        return 2
    return 0


def refuse(exc: SettingsError) -> NoReturn:
    print(f"api.py: error: {exc}", file=sys.stderr)
    sys.exit(2)


settings = None
if __name__ == "__main__":
    if sys.argv[1:2] == ["keys"]:  # the keys file only: no app is made, nothing heavy imported
        sys.exit(keys_command(sys.argv[2:]))
    try:  # a bad CLV_* variable is refused before pandas and scikit-learn load (1.5 s)
        settings = load_settings()
    except SettingsError as exc:
        refuse(exc)

from clv.service.app import create_app  # noqa: E402  (pandas and scikit-learn: after the keys command)

try:
    app = create_app(settings)
except SettingsError as exc:
    if __name__ != "__main__":
        raise
    refuse(exc)


def main() -> None:
    """Serve the app with uvicorn: CLV_WORKERS processes, their metrics in one multiprocess folder."""
    import uvicorn

    settings = app.state.service.settings
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    if settings.workers == 1:
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            access_log=False,
            server_header=False,  # an answer does not name the server software
            log_level="info",
            limit_concurrency=settings.max_connections,
        )
        return
    with tempfile.TemporaryDirectory(prefix="clv-metrics-") as folder:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder  # read by prometheus-client as each worker imports it
        # a worker imports pandas and scikit-learn before it can answer uvicorn's health check: give it time
        uvicorn.run(
            "api:app",
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            timeout_worker_healthcheck=60,
            access_log=False,
            server_header=False,  # an answer does not name the server software
            log_level="info",
            limit_concurrency=settings.max_connections,
        )


if __name__ == "__main__":
    main()
