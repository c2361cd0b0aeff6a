"""One settings object for the whole process: env vars FIRESIDE_*, overridden by CLI flags."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FIRESIDE_", extra="ignore")

    model: str | None = None  # a model directory; None = the bundled default model
    served_model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    device: str = "auto"  # "auto" = CUDA when present, else CPU
    database_url: str = "sqlite:///fireside.db"
    redis_url: str | None = None
