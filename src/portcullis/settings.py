"""Process settings, read from the environment (`PORTCULLIS_*`) and CLI flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_secret_key_file() -> Path:
    return Path("var/portcullis.secret").resolve()


def default_database_url() -> str:
    return f"sqlite+aiosqlite:///{Path('var/portcullis.db').resolve()}"


class Settings(BaseSettings):
    """Everything a gateway process needs to start; the routing config lives in the store."""

    model_config = SettingsConfigDict(env_prefix="PORTCULLIS_", extra="ignore")

    database_url: str = Field(default_factory=default_database_url)
    redis_url: str | None = None
    proxy_host: str = "127.0.0.1"
    proxy_port: int = Field(default=8000, ge=0, le=65535)
    admin_host: str = "127.0.0.1"
    admin_port: int = Field(default=8001, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=256)
    node_name: str = "portcullis"
    log_level: str = "info"
    log_json: bool = True
    # How often each data-plane worker checks the store for a newer config version.
    config_poll_interval: float = Field(default=0.25, gt=0, le=60)
    # Requests from these networks may set X-Forwarded-* / Forwarded; others are overwritten.
    trusted_proxies: list[str] = Field(default_factory=list)
    transport: str = Field(default="http1", pattern="^(http1|aiohttp)$")
    max_request_body: int = Field(default=0, ge=0, description="bytes; 0 = unlimited")
    max_header_bytes: int = Field(default=32 * 1024, ge=1024)
    max_uri_length: int = Field(default=8 * 1024, ge=256)
    # Browser origins allowed to call the admin API (CORS); empty = none.
    admin_cors_origins: list[str] = Field(default_factory=list)
    shutdown_grace: float = Field(default=30.0, ge=0)
    # Deployment secret (base64, >= 32 bytes) that peppers API-key hashes and encrypts
    # signing keys at rest. Unset: read or create `secret_key_file` (fine for one node;
    # every node of a cluster must share the same value).
    secret_key: str | None = Field(default=None, repr=False)
    secret_key_file: Path = Field(default_factory=default_secret_key_file)
    # `iss` of access tokens from the built-in OAuth2 server (default: the admin URL).
    oauth_issuer: str | None = None
    # How often an unused worker-side usage stamp (API key last_used_at) is flushed.
    key_usage_flush_interval: float = Field(default=10.0, gt=0, le=3600)
    # /health/ready fails unless a data-plane worker heartbeat is this fresh (seconds).
    ready_requires_data_plane: bool = True
    heartbeat_interval: float = Field(default=2.0, gt=0, le=60)
    # Admin API rate limits (token buckets per process): requests a minute and burst, per
    # credential (Authorization header) and per client IP; a per_minute of 0 switches one off.
    admin_rate_limit_per_minute: int = Field(default=1200, ge=0)
    admin_rate_limit_burst: int = Field(default=300, ge=1)
    admin_rate_limit_ip_per_minute: int = Field(default=3000, ge=0)
    admin_rate_limit_ip_burst: int = Field(default=600, ge=1)
    # Rate limits (with redis_url: shared counters in Redis). Deadline of one decision,
    # after which the plugin's failure policy answers; how long before Redis is tried
    # again after a failure; the key prefix; the pool size per worker; and the cap on
    # keys held in memory (the memory backend, and the local fallback).
    limits_redis_timeout: float = Field(default=0.2, gt=0, le=10)
    limits_redis_retry_interval: float = Field(default=1.0, gt=0, le=300)
    limits_key_prefix: str = "pc:rl:"
    limits_redis_max_connections: int = Field(default=64, ge=1, le=10_000)
    limits_memory_max_keys: int = Field(default=1_000_000, ge=1)

    @property
    def issuer(self) -> str:
        return self.oauth_issuer or f"http://{self.admin_host}:{self.admin_port}"
