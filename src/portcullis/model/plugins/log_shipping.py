"""The configs of the log-shipping plugins `http-log`, `file-log` and `syslog`
(their handlers: plugins/log_shipping.py; the shipping itself: portcullis/logship/).

Each ships one JSON record per finished request to a destination, off the request
path: a bounded queue per destination and worker (`queue_size`), drained in batches
(`batch_size` records, or what waits after `flush_interval` seconds), retried
`retries` times with exponential backoff from `backoff_initial` to `backoff_max`
seconds, and drained for at most `drain_timeout` seconds when a worker stops or the
plugin leaves the config. A full queue drops the record and counts it.
"""

from __future__ import annotations

import os
import posixpath
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from portcullis.http_fields import check_field_value, check_header_name
from portcullis.model.plugins.base import PluginConfig
from portcullis.model.secrets import Secret

FacilityName = Literal[
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
    "authpriv", "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2",
    "local3", "local4", "local5", "local6", "local7",
]  # fmt: skip
SeverityName = Literal["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"]
StatusClass = Literal["1xx", "2xx", "3xx", "4xx", "5xx"]
# The fields a shipped record has (logship/records.py `log_fields`); custom fields may not
# replace them.
RECORD_FIELDS = frozenset(
    {
        "time", "request_id", "method", "path", "status", "route", "service", "consumer",
        "api", "api_version", "client_ip", "user_agent", "upstream", "latency_ms",
        "upstream_ms", "gateway_ms", "bytes_in", "bytes_out", "error", "trace_id", "flags",
    }
)  # fmt: skip
# Headers the sink sets itself (or that would confuse the receiver's framing).
_OWN_HEADERS = frozenset({"content-length", "transfer-encoding", "host", "connection"})


class LogShippingConfig(PluginConfig):
    """What every log-shipping plugin shares: its queue, batching and retries."""

    queue_size: int = Field(
        default=10_000, ge=1, le=1_000_000, description="records a worker queues, then drops"
    )
    batch_size: int = Field(default=100, ge=1, le=10_000, description="records per batch")
    flush_interval: float = Field(
        default=1.0, ge=0.01, le=60, description="the longest a record waits for its batch (s)"
    )
    retries: int = Field(default=3, ge=0, le=20, description="attempts after a failed one")
    backoff_initial: float = Field(default=0.5, gt=0, le=60, description="first retry wait (s)")
    backoff_max: float = Field(default=30.0, gt=0, le=600, description="longest retry wait (s)")
    drain_timeout: float = Field(
        default=5.0, ge=0, le=60, description="how long a stopping worker keeps shipping (s)"
    )
    custom_fields: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        max_length=32,
        description="fields added to every record as they are (e.g. environment, cluster)",
    )

    @field_validator("custom_fields")
    @classmethod
    def _custom(cls, v: dict[str, str | int | float | bool]) -> dict[str, str | int | float | bool]:
        for name, value in v.items():
            if not name or len(name) > 64:
                raise ValueError("a field name has 1 to 64 characters")
            if name in RECORD_FIELDS:
                raise ValueError(f"{name!r} is a field of the record itself")
            if isinstance(value, str) and len(value) > 1024:
                raise ValueError(f"{name!r}: a value has at most 1024 characters")
        return v

    def destination(self) -> str:
        """The metrics label of where this config ships (no secrets: no query, no user)."""
        raise NotImplementedError


class HttpLogConfig(LogShippingConfig):
    url: str = Field(
        min_length=1,
        max_length=2048,
        description="http(s) URL batches are POSTed to (reached through the webhook SSRF guard)",
    )
    format: Literal["json_array", "ndjson"] = Field(
        default="json_array", description="one JSON array per batch, or one object per line"
    )
    # Values are secret (an Authorization header is how most collectors authenticate).
    headers: dict[str, Secret[str]] = Field(
        default_factory=dict, description="extra request headers (values are secret)"
    )
    timeout: float = Field(default=10.0, gt=0, le=120, description="per attempt (s)")
    retries: int = Field(default=5, ge=0, le=20, description="attempts after a failed one")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL")
        if not parts.hostname:
            raise ValueError("must name a host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not carry credentials: send them in `headers`")
        if parts.fragment:
            raise ValueError("must not have a fragment")
        try:
            _ = parts.port
        except ValueError:
            raise ValueError("has an invalid port") from None
        return v

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            check_header_name(name)
            check_field_value(value)
            if name.lower() in _OWN_HEADERS:
                raise ValueError(f"{name!r} is set by the gateway")
        return v

    def destination(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}{parts.path}"


class FileLogConfig(LogShippingConfig):
    path: str = Field(
        min_length=2,
        max_length=4096,
        description="absolute path of the file JSON lines are appended to (created if missing)",
    )

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if "\x00" in v:
            raise ValueError("must not contain NUL")
        if not os.path.isabs(v):
            raise ValueError("must be an absolute path")
        if v.endswith("/") or posixpath.normpath(v) != v:
            raise ValueError(f"must be a normalised file path (e.g. {posixpath.normpath(v)!r})")
        return v

    def destination(self) -> str:
        return self.path


class SyslogConfig(LogShippingConfig):
    host: str = Field(min_length=1, max_length=253, description="the syslog receiver")
    port: int = Field(default=514, ge=1, le=65535)
    protocol: Literal["udp", "tcp"] = Field(
        default="udp", description="udp: one message per datagram; tcp: octet counting"
    )
    facility: FacilityName = Field(default="local0", description="RFC 5424 facility")
    severity: dict[StatusClass, SeverityName] = Field(
        default_factory=dict,
        description="severity per status class (default 1xx-3xx info, 4xx warning, 5xx err)",
    )
    msgid: str = Field(
        default="request", min_length=1, max_length=32, description="the MSGID header field"
    )
    hostname: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="the HOSTNAME header field (default: the machine's name)",
    )
    structured_data: bool = Field(
        default=False, description="repeat the main fields as [portcullis@32473 ...]"
    )
    max_message_bytes: int = Field(
        default=2048,
        ge=480,
        le=65_000,
        description="UDP: longer messages are cut to this size (RFC 5426 asks receivers "
        "for 2048 at least)",
    )
    timeout: float = Field(default=5.0, gt=0, le=60, description="TCP connect and send (s)")

    @field_validator("msgid", "hostname")
    @classmethod
    def _printable(cls, v: str | None) -> str | None:
        if v is not None and not all(33 <= ord(c) <= 126 for c in v):
            raise ValueError("must be printable US-ASCII without spaces")
        return v

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if any(c.isspace() or c in "/?#@" for c in v):
            raise ValueError("must be a host name or IP address")
        return v

    def destination(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.protocol}://{host}:{self.port}"
