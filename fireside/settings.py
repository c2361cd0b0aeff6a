"""One settings object for the whole process: env vars FIRESIDE_*, overridden by CLI flags."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from fireside.errors import FiresideError

SignupPolicy = Literal["open", "closed", "approval"]
SECRET_KEY_FILE = "secret_key"


def default_data_dir() -> Path:
    """$XDG_DATA_HOME/fireside, else ~/.local/share/fireside: never the working directory."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "fireside"


class ConnectionSetting(BaseModel):
    """An OpenAI-compatible endpoint given in settings (FIRESIDE_CONNECTIONS, a JSON list of
    these): offered like an admin's connection, but changed only here."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    base_url: str = Field(pattern=r"^https?://[^\s]+$")  # e.g. http://host:8000/v1
    api_key: SecretStr | None = None


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
    # CPU: quantize the weights at load (ggml's Q8_0 / Q4_K kernels, fireside.model.quantized).
    quantize: Literal["int8", "int4"] | None = None
    # LoRA adapters served beside the base from the start, as NAME=DIR (vLLM's --lora-modules);
    # an admin loads and unloads more at run time.
    lora: list[str] = Field(default_factory=list)

    # The chat application (`fireside.app`, under /api).
    data_dir: Path | None = None  # None = default_data_dir()
    database_url: str | None = None  # None = SQLite in the data directory
    redis_url: str | None = None  # None = in-process event log and stop signals
    secret_key: SecretStr | None = None  # None = generated once, kept in the data directory
    # Read through default_signup(): unset, it depends on where the server listens.
    signup: SignupPolicy = "open"
    # "required": /v1/* also accepts (and then needs) a user's personal API key. Read through
    # v1_requires_key(): unset, a server listening beyond loopback requires one.
    auth: Literal["optional", "required"] = "optional"
    # Brute-force limits on /api/auth, per window of auth_window_s: failed password checks
    # (login, password change) per account and per client address, and sign-ups per client
    # address. Counted in Redis when redis_url is set (every process), else in this process.
    auth_window_s: int = Field(default=900, ge=1)
    auth_failures_per_account: int = Field(default=10, ge=1)
    auth_failures_per_address: int = Field(default=50, ge=1)
    signups_per_address: int = Field(default=20, ge=1)
    # Runs of an answer's code (POST /api/run) and HTML previews, each per user per window.
    run_per_user: int = Field(default=30, ge=1)
    run_window_s: int = Field(default=60, ge=1)
    # The names this server answers to (the Host header; any port): a JSON list, "*.example.com"
    # patterns allowed, ["*"] = no check (only behind a proxy that checks Host). Empty = the
    # bind address, localhost, 127.0.0.1 and [::1]; a server bound to 0.0.0.0 must name its
    # public host here (FIRESIDE_ALLOWED_HOSTS='["chat.example.com"]'), or only loopback works.
    allowed_hosts: list[str] = Field(default_factory=list)
    # Origins besides the server's own allowed to make cookie-authenticated changes
    # (a web UI served from a dev server, say).
    allowed_origins: list[str] = Field(default_factory=list)
    # The longest answer the chat app asks for, in tokens (the context caps it too).
    app_max_tokens: int = Field(default=1024, ge=1)
    app: bool = True  # serve the chat application under /api
    # Answers one user may have in writing at once (per process); more is a 429.
    max_answers_per_user: int = Field(default=4, ge=1)
    # Files in chats (POST /api/files): bytes per file, files per conversation, and bytes of
    # all of one user's files together (each file's bytes counted, however often shared).
    max_file_bytes: int = Field(default=20 << 20, ge=1)
    max_files_per_chat: int = Field(default=20, ge=1)
    max_file_bytes_per_user: int = Field(default=1 << 30, ge=1)
    # Login with OpenID Connect (any provider with a discovery document: Keycloak, Google,
    # Entra ID, Authentik...). All three set = the "Sign in with <oidc_name>" button shows.
    oidc_discovery_url: str | None = None  # .../.well-known/openid-configuration
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    oidc_name: str = "OpenID Connect"  # the provider's name on the login button
    oidc_scope: str = "openid email profile"
    # OpenAI-compatible endpoints whose models the chat app offers (as NAME/MODEL) beside the
    # local one; admins add more with PUT /api/admin/connections.
    connections: list[ConnectionSetting] = Field(default_factory=list)

    def binds_beyond_loopback(self) -> bool:
        """Whether others can reach the server directly (0.0.0.0, a LAN address, a name)."""
        if self.host == "localhost":
            return False
        try:
            return not ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return True

    def default_signup(self) -> SignupPolicy:
        """FIRESIDE_SIGNUP (or --signup) when given. Unset: "approval" on a server others can
        reach (bound beyond loopback, or guarded with --api-key, as behind a proxy), so that no
        stranger's sign-up gets to chat and run tools; "open" on a private one."""
        if "signup" in self.model_fields_set:
            return self.signup
        return "approval" if self.api_key is not None or self.binds_beyond_loopback() else "open"

    def v1_requires_key(self) -> bool:
        """/v1 needs a key (--api-key's or a personal one) with --api-key, with
        FIRESIDE_AUTH=required, and on a server bound beyond loopback unless FIRESIDE_AUTH is
        set to "optional" explicitly."""
        if self.api_key is not None or self.auth == "required":
            return True
        return "auth" not in self.model_fields_set and self.binds_beyond_loopback()

    def resolved_allowed_hosts(self) -> list[str]:
        from fireside.api.hosts import default_allowed_hosts

        return list(self.allowed_hosts) or default_allowed_hosts(self.host)

    def oidc_configured(self) -> bool:
        return bool(self.oidc_discovery_url and self.oidc_client_id and self.oidc_client_secret)

    def resolved_data_dir(self) -> Path:
        path = self.data_dir or default_data_dir()
        path.mkdir(parents=True, exist_ok=True, mode=0o700)  # the database: the owner's alone
        if path.stat().st_mode & 0o077:  # made before, or by hand: made private all the same
            with contextlib.suppress(PermissionError):  # not ours to change; the files still are
                path.chmod(0o700)
        return path

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.resolved_data_dir() / 'fireside.db'}"

    def resolved_secret_key(self) -> str:
        """The configured secret, else the one kept in the data directory (made on first use,
        readable by the owner alone)."""
        if self.secret_key is not None:
            value = self.secret_key.get_secret_value()
            if len(value) < 16:
                raise FiresideError("FIRESIDE_SECRET_KEY must be at least 16 characters")
            return value
        path = self.resolved_data_dir() / SECRET_KEY_FILE
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            value = path.read_text().strip()
            if len(value) < 16:
                raise FiresideError(f"{path} holds no usable secret key; delete it") from None
            return value
        value = secrets.token_urlsafe(32)
        with os.fdopen(fd, "w") as f:
            f.write(value + "\n")
        return value


def data_dir() -> Path:
    """Where Fireside keeps its files: FIRESIDE_DATA_DIR, else $XDG_DATA_HOME/fireside, else
    ~/.local/share/fireside (what Settings.resolved_data_dir gives, without reading the rest of
    the settings). Never the working directory."""
    if explicit := os.environ.get("FIRESIDE_DATA_DIR"):
        return Path(explicit).expanduser()
    return default_data_dir()
