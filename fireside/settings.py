"""One settings object for the whole process: env vars FIRESIDE_*, overridden by CLI flags."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from fireside.errors import FiresideError

SignupPolicy = Literal["open", "closed", "approval"]
SECRET_KEY_FILE = "secret_key"


def default_data_dir() -> Path:
    """$XDG_DATA_HOME/fireside, else ~/.local/share/fireside: never the working directory."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "fireside"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FIRESIDE_", extra="ignore")

    model: str | None = None  # a model directory; None = the bundled default model
    served_model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    device: str = "auto"  # "auto" = CUDA when present, else CPU
    # Engine sizing, named as vLLM's flags are: samples decoding at once, a cap on the
    # context, the KV cache's memory, and (CPU) whether to keep oneDNN-packed weights.
    max_num_seqs: int = Field(default=64, ge=1)
    max_model_len: int | None = Field(default=None, ge=1)
    kv_cache_gib: float = Field(default=1.0, gt=0)
    pack_weights: bool = True


def data_dir() -> Path:
    """FIRESIDE_DATA_DIR, else default_data_dir(): for code that has no Settings object at hand
    (the knowledge index)."""
    if explicit := os.environ.get("FIRESIDE_DATA_DIR"):
        return Path(explicit).expanduser()
    return default_data_dir()
