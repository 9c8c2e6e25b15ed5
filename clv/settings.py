"""Settings: working defaults, overridden by CLV_* environment variables, overridden by CLI flags."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLV_", protected_namespaces=())

    data_dir: Path = Path("data")
    model_dir: Path = Path("models")
    host: str = "127.0.0.1"
    port: int = 8000
    rate_limit: str = "120/minute"
    cors_origins: str = ""  # comma-separated; empty keeps CORS closed
    log_file: Path = Path("api.log")
    max_body_bytes: int = 2 * 1024 * 1024
    train_on_start: bool = True  # train a model at start-up when there is none
    first_run_customers: int = 10_000

    @property
    def cors_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]
