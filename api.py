"""The CLV service: POST /predict/clv and /predict/clv/batch; GET /health, /livez, /readyz, /model, /portfolio,
/metrics; the page at /.

Run `python api.py` (or `make run`). At start it loads models/clv_model_latest; when there is none it
generates the default data if data/ is empty and trains a first model in the background, while
/health answers 503 with the reason. The app is clv/service/app.py.

`python api.py keys add NAME --scopes clv:predict,clv:portfolio` makes an API key (printed once), `keys list` shows
them and `keys revoke NAME` revokes one (clv/service/keys.py).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile

from clv.service.app import create_app
from clv.service.settings import SettingsError

__all__ = ["app", "create_app", "main"]

if __name__ == "__main__" and sys.argv[1:2] == ["keys"]:  # the keys file only: no app is made
    from clv.service import keys

    sys.exit(keys.main(sys.argv[2:]))

try:
    app = create_app()
except SettingsError as exc:
    if __name__ != "__main__":
        raise
    print(f"api.py: error: {exc}", file=sys.stderr)
    sys.exit(2)


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
            log_level="info",
            limit_concurrency=settings.max_connections,
        )


if __name__ == "__main__":
    main()
