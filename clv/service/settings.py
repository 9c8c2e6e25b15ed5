"""Settings: working defaults, overridden by CLV_* environment variables, overridden by CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PlainValidator, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from clv.data.location import WarehouseURL, mask, parse_location

DEFAULT_DATA_DIR = Path("data")


class SettingsError(ValueError):
    """A CLV_* variable with a value that cannot be used; the message names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLV_", protected_namespaces=())

    data_dir: Annotated[Path | WarehouseURL, PlainValidator(parse_location)] = Field(
        DEFAULT_DATA_DIR,
        description="the bank the service and the commands read: a flat folder, a partitioned bank, or "
        "postgresql://USER@HOST[:PORT]/DB?schema=NAME (docs/warehouse.md)",
    )
    model_dir: Path = Path("models")
    model_verify_key: Path | None = Field(
        None, description="Ed25519 public key (PEM): a model version not signed by its pair is never loaded"
    )
    model_signing_key: Path | None = Field(
        None, description="Ed25519 private key (PEM, mode 0600): `train` and `promote` sign the versions they make"
    )
    scores_dir: Path = Field(Path("scores"), description="scoring runs; GET /portfolio serves the latest's")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64, description="server processes")
    rate_limit: str = "120/minute"
    rate_limit_storage: str = Field("memory://", description="memory:// per process, or redis://host:port shared")
    cors_origins: str = ""  # comma-separated; empty keeps CORS closed
    log_file: Path = Path("api.log")
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024)
    body_timeout_seconds: float = Field(30.0, gt=0, description="a body not whole this long after its request: 408")
    max_connections: int = Field(1_000, ge=1, description="open connections a worker serves; past it: 503")
    train_on_start: bool = True  # with no model: train one at start (and generate a demo bank for data/ only)
    first_run_customers: int = Field(10_000, ge=100)
    reload_seconds: float = Field(10.0, gt=0, description="how often the service looks for a new latest model")
    drift_window: int = Field(2_000, ge=50, description="recent request feature rows kept for the drift metrics")
    metrics: bool = Field(True, description="/metrics, the request and prediction series and the drift window")
    dask_scheduler: str | None = Field(None, description="tcp://host:8786 of a Dask cluster; none: a local one")
    auth: Literal["auto", "on", "off"] = Field(
        "auto",
        description="auto: on with a key in the keys file or OIDC set, else loopback only; on: always; off: never "
        "(any CLV_HOST, with a warning)",
    )
    api_keys_file: Path = Field(Path("api_keys.json"), description="API keys' hashes (`python api.py keys add`)")
    oidc_issuer: str | None = Field(None, description="OIDC tokens: the issuer (iss) they must name")
    oidc_audience: str | None = Field(None, description="OIDC tokens: the audience (aud) they must name")
    oidc_jwks_url: str | None = Field(None, description="OIDC tokens: the issuer's signing keys (JWKS)")
    allowed_hosts: str = Field(
        "", description="Host headers served, comma-separated (host or host:port); empty: loopback names on loopback"
    )

    @field_validator("rate_limit")
    @classmethod
    def _a_rate(cls, value: str) -> str:
        from limits import parse

        try:
            parse(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a rate limit such as '120/minute'") from None
        return value

    @field_validator("rate_limit_storage")
    @classmethod
    def _a_storage(cls, value: str) -> str:
        if not value.startswith(("memory://", "redis://", "rediss://")):
            raise ValueError(f"{value!r} is not memory:// or a redis:// address")
        return value

    @property
    def cors_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def demo_data(self) -> bool:
        """The default data folder: the only one the first run may fill with a generated bank."""
        return self.data_dir == DEFAULT_DATA_DIR


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment; a bad CLV_* value raises SettingsError naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = f"CLV_{str(error['loc'][0]).upper()}" if error["loc"] else "CLV_*"
        message = str(error["msg"]).removeprefix("Value error, ")
        raise SettingsError(mask(f"{name}={error.get('input')!r}: {message}")) from None  # a URL's password never
