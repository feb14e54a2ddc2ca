"""Process settings, read from the environment (`PORTCULLIS_*`) and CLI flags."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_secret_key_file() -> Path:
    return Path("var/portcullis.secret").resolve()


def default_database_url() -> str:
    return f"sqlite+aiosqlite:///{Path('var/portcullis.db').resolve()}"


# The Standard Webhooks example schedule: delay before each attempt, in seconds
# (immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: eight attempts over ~27.5 h).
# Kept here, not in webhooks/, so settings import no delivery code.
WEBHOOK_RETRY_SCHEDULE: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)


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
    # The proxy's TLS port (HTTP/2 and HTTP/1.1 by ALPN, certificates chosen by SNI from
    # the config's `certificates`; docs/tls.md). "on" (the default, as Kong listens on
    # 8443): always, so a certificate added later through the admin API is served without
    # a restart (until then handshakes are refused); "auto": only when the config holds a
    # certificate with server names at start; "off": never (TLS ends in front).
    proxy_tls: Literal["auto", "on", "off"] = "on"
    # The TLS listener's port (docs/tls.md); also the port a route's https_redirect sends
    # plain-HTTP clients to (left out of the URL when 443).
    proxy_tls_port: int = Field(default=8443, ge=0, le=65535)
    # Who serves the TLS port (docs/decisions/028, addendum): "granian" (its own TLS, one
    # certificate, no client CA), "hypercorn" (Python's TLS: SNI, client certificates),
    # "auto": granian while the config serves exactly one certificate and no client CA
    # is set, else hypercorn; switched when a new config version changes that.
    proxy_tls_engine: Literal["auto", "granian", "hypercorn"] = "auto"
    # A PEM bundle of CAs: clients may then present a certificate (optional, verified
    # against it) that the mtls-auth plugin reads; unset, none is requested.
    proxy_tls_client_ca_file: Path | None = None
    # The control plane over TLS (granian's, one certificate from files): both or neither.
    admin_tls_cert_file: Path | None = None
    admin_tls_key_file: Path | None = None
    # `certificate.expiring` events are sent this many days before a certificate expires.
    certificate_expiry_warning_days: int = Field(default=30, ge=1, le=365)
    # How often the control plane looks for certificates due a `certificate.expiring`.
    certificate_expiry_interval: float = Field(default=3600.0, gt=0)
    node_name: str = "portcullis"
    log_level: str = "info"
    log_json: bool = True
    # How often each data-plane worker checks the store for a newer config version.
    config_poll_interval: float = Field(default=0.25, gt=0, le=60)
    # Config versions kept in the store (the newest; at most twice as many); 0 keeps all.
    config_history_keep: int = Field(default=100, ge=0)
    # Requests from these networks may set X-Forwarded-* / Forwarded; others are overwritten.
    trusted_proxies: list[str] = Field(default_factory=list)
    transport: str = Field(default="http1", pattern="^(http1|aiohttp)$")
    max_request_body: int = Field(default=0, ge=0, description="bytes; 0 = unlimited")
    max_header_bytes: int = Field(default=32 * 1024, ge=1024)
    max_uri_length: int = Field(default=8 * 1024, ge=256)
    # Browser origins allowed to call the admin API (CORS); empty = none.
    admin_cors_origins: list[str] = Field(default_factory=list)
    shutdown_grace: float = Field(default=30.0, ge=0)
    # The data plane's URL as clients reach it (behind a load balancer or TLS terminator,
    # e.g. https://api.example.com): the servers of the OpenAPI descriptions the catalogue
    # publishes (GET /apis/{api}/{version}/openapi.json). Unset: proxy_url.
    public_proxy_url: str | None = Field(default=None, pattern=r"^https?://[^/?#]+(/[^?#]*)?$")
    # The developer portal's try-it console (services/portal_tryit.py, decision 037): the
    # gateway URL its requests go to (scheme, host and port only; unset: proxy_url, the
    # local proxy port), and how long it waits for an answer.
    portal_tryit_url: str | None = Field(default=None, pattern=r"^https?://[^/?#@]+/?$")
    portal_tryit_timeout: float = Field(default=10.0, gt=0, le=60)
    # Try-it requests one developer may send per minute (per control-plane process).
    portal_tryit_per_minute: int = Field(default=60, ge=1, le=10_000)
    # How often the control plane looks for URL-imported OpenAPI descriptions due for a
    # refresh (each source's own refresh_seconds says when it is due).
    openapi_refresh_interval: float = Field(default=30.0, gt=0, le=3600)
    # Client connections (both planes; granian options, see supervision/planes.py).
    # A connection that has sent no byte for client_first_byte_timeout seconds is closed
    # (proxy/silent_connections.py; 0 = never). A request's headers must arrive within
    # client_header_timeout seconds of its first byte, and a keep-alive connection may
    # idle that long between requests. Each worker holds at most
    # max_connections_per_worker connections (granian's backpressure: past it, a worker
    # stops accepting and new connections wait in the kernel's listen_backlog queue).
    client_first_byte_timeout: float = Field(default=10.0, ge=0, le=3600)
    client_header_timeout: float = Field(default=30.0, ge=0.001, le=60)
    max_connections_per_worker: int = Field(default=8192, ge=1)
    listen_backlog: int = Field(default=2048, ge=128)
    # A plane (granian process) that dies is restarted after a backoff (0.5 s, doubling
    # to 10 s); after plane_restart_limit restarts within plane_restart_window seconds,
    # `portcullis serve` gives up and stops. Crashed workers are respawned by granian.
    plane_restart_limit: int = Field(default=5, ge=0)
    plane_restart_window: float = Field(default=60.0, gt=0)
    # Outgoing webhooks. Destinations must be public addresses unless they are in one of
    # webhook_allowed_networks (CIDRs, e.g. ["10.0.0.0/8"]; JSON in the environment).
    # webhook_delivery: this control-plane process delivers (several may share the work
    # on PostgreSQL). An endpoint whose every attempt failed for webhook_disable_after_days
    # is disabled.
    # webhook_retry_schedule: seconds before each attempt (JSON list; its length is the
    # number of attempts before a delivery is dead-lettered; the default is the Standard
    # Webhooks example: now, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h). A receiver's
    # Retry-After stretches a delay up to the longest entry.
    # webhook_lease: seconds a claimed message stays with its delivering process before
    # another may take it over (the process died); default 2 x webhook_timeout + 30. It
    # must exceed webhook_timeout, or live attempts would be taken over.
    # webhook_breaker_rest: seconds an endpoint rests in a process after 5 failures in a row.
    webhook_allowed_networks: list[str] = Field(default_factory=list)
    webhook_delivery: bool = True
    webhook_timeout: float = Field(default=15.0, gt=0, le=30)
    webhook_poll_interval: float = Field(default=0.25, gt=0, le=60)
    webhook_disable_after_days: float = Field(default=5.0, gt=0)
    webhook_retry_schedule: list[float] = Field(
        default_factory=lambda: list(WEBHOOK_RETRY_SCHEDULE), min_length=1, max_length=50
    )
    webhook_lease: float | None = Field(default=None, gt=0, le=3600)
    webhook_breaker_rest: float = Field(default=30.0, ge=0, le=3600)
    # A `key.expiring` event goes out this many days before an active key expires (0: none).
    key_expiry_notice_days: float = Field(default=7.0, ge=0)
    # A `version.sunset_approaching` event goes to each consumer that called an API version
    # in the last sunset_caller_days days, sunset_notice_days before the version's sunset
    # (0: none); the job looks every sunset_notice_interval seconds.
    sunset_notice_days: float = Field(default=30.0, ge=0)
    sunset_caller_days: int = Field(default=30, ge=1, le=3650)
    sunset_notice_interval: float = Field(default=300.0, gt=0, le=86400)
    # GraphQL persisted documents (services/graphql_documents.py), kept in the store so
    # every control-plane node shares them. graphql_apq_enabled: clients may register
    # documents by hash (Apollo's automatic persisted queries); at most
    # graphql_apq_max_documents of those are kept (the least recently used go first;
    # trusted documents never), each at most graphql_max_bytes of UTF-8 (the size limit
    # of any document).
    # graphql_trusted_documents_only: only documents an operator registered as trusted
    # (`portcullis graphql documents add`) run, by hash or by their full text.
    graphql_apq_enabled: bool = True
    graphql_apq_max_documents: int = Field(default=10_000, ge=1)
    graphql_trusted_documents_only: bool = False

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _schedule(cls, value: list[float]) -> list[float]:
        if any(not 0 <= delay <= 7 * 86400 for delay in value):
            raise ValueError("each delay is between 0 and 604800 seconds (7 days)")
        return value

    @model_validator(mode="after")
    def _lease_outlasts_an_attempt(self) -> Settings:
        if self.webhook_lease is not None and self.webhook_lease <= self.webhook_timeout:
            raise ValueError(
                f"webhook_lease ({self.webhook_lease} s) must exceed webhook_timeout "
                f"({self.webhook_timeout} s), or live attempts are taken over"
            )
        return self

    @model_validator(mode="after")
    def _admin_tls_pair(self) -> Settings:
        if (self.admin_tls_cert_file is None) != (self.admin_tls_key_file is None):
            raise ValueError("admin_tls_cert_file and admin_tls_key_file go together")
        return self

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not a network (e.g. 10.0.0.0/8)") from None
        return value

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
    # Anonymous /health/ready callers get only the status; the details (config version,
    # data-plane workers with their PIDs, upstream health) need a deployment-wide admin
    # credential with config:read, unless readiness_details is "public".
    readiness_details: Literal["admin", "public"] = "admin"
    heartbeat_interval: float = Field(default=2.0, gt=0, le=60)
    # Admin API rate limits (token buckets per process): requests a minute and burst, per
    # credential (Authorization header) and per client IP; a per_minute of 0 switches one off.
    admin_rate_limit_per_minute: int = Field(default=1200, ge=0)
    admin_rate_limit_burst: int = Field(default=300, ge=1)
    admin_rate_limit_ip_per_minute: int = Field(default=3000, ge=0)
    admin_rate_limit_ip_burst: int = Field(default=600, ge=1)
    # GraphQL admin API (/graphql): introspection (and the published SDL at
    # /graphql/schema.graphql) can be switched off; clients then need the SDL from the
    # release they were built against.
    graphql_introspection: bool = True
    # Rate limits (with redis_url: shared counters in Redis). Deadline of one decision,
    # after which the plugin's failure policy answers; how long before Redis is tried
    # again after a failure; the key prefix; the pool size per worker; and the cap on
    # keys held in memory (the memory backend, and the local fallback).
    limits_redis_timeout: float = Field(default=0.2, gt=0, le=10)
    limits_redis_retry_interval: float = Field(default=1.0, gt=0, le=300)
    limits_key_prefix: str = "pc:rl:"
    limits_redis_max_connections: int = Field(default=64, ge=1, le=10_000)
    limits_memory_max_keys: int = Field(default=1_000_000, ge=1)
    # Request log (analytics/log_queue.py): each data-plane worker queues one row per
    # request (at most queue_size; beyond that rows are dropped and counted, a request
    # never waits) and inserts them in batches of batch_size, or every flush_interval
    # seconds, whichever comes first. Raw rows older than retention_days are deleted by
    # a control-plane job (rollups are kept longer).
    # The developer portal (docs/decisions/034-developer-portal.md). Mail: SMTP when
    # portal_smtp_host is set, else the embedded outbox (a store table); the outbox view at
    # /portal/outbox shows the signed-in developer's own mail (verification links), and
    # is on only when asked for (the demo does). Verification links are built on
    # portal_url (default: the control plane's own URL) and expire after
    # portal_verification_ttl seconds.
    portal_outbox_view: bool = False
    portal_url: str | None = Field(default=None, pattern=r"^https?://[^/?#]+(/[^?#]*)?$")
    portal_mail_from: str = Field(default="portal@localhost", max_length=320)
    portal_smtp_host: str | None = None
    portal_smtp_port: int = Field(default=25, ge=1, le=65535)
    portal_smtp_starttls: bool = False
    portal_smtp_username: str | None = None
    portal_smtp_password: SecretStr | None = None
    portal_verification_ttl: int = Field(default=24 * 3600, ge=60, le=30 * 86400)
    request_log_enabled: bool = True
    request_log_queue_size: int = Field(default=100_000, ge=1)
    request_log_batch_size: int = Field(default=1000, ge=1, le=50_000)
    request_log_flush_interval: float = Field(default=1.0, gt=0, le=300)
    request_log_retention_days: float = Field(default=7.0, gt=0)
    # Request inspector (proxy/inspector.py, services/inspector.py): each worker queues
    # captured exchanges (at most queue_size; beyond that they are dropped and counted)
    # and writes them every flush_interval seconds; capture sessions and their exchanges
    # are deleted retention_days after they started.
    inspector_queue_size: int = Field(default=1000, ge=1, le=100_000)
    inspector_flush_interval: float = Field(default=0.5, gt=0, le=60)
    inspector_retention_days: float = Field(default=7.0, gt=0)
    # Platform events (the `events` table) older than this are deleted; a live stream
    # asked to resume from before the deleted range gets an explicit `reset` event.
    events_retention_days: float = Field(default=30.0, gt=0)
    # Live streams (SSE /admin/v1/stream, WebSocket /admin/v1/ws, GraphQL subscriptions;
    # services/streams): each control-plane process tails the event log every
    # stream_poll_interval seconds (sooner when its event bus hears of an event), keeps
    # up to stream_queue_size events per client before the client catches up from the
    # log instead, and sends an SSE comment (a WebSocket ping) every
    # stream_heartbeat_seconds of silence. stream_max_clients bounds open streams per
    # process (503 beyond).
    stream_poll_interval: float = Field(default=0.25, gt=0, le=10)
    stream_queue_size: int = Field(default=256, ge=1, le=100_000)
    stream_heartbeat_seconds: float = Field(default=15.0, gt=0, le=300)
    stream_retry_ms: int = Field(default=2000, ge=0, le=600_000)
    stream_max_clients: int = Field(default=10_000, ge=1)
    # The newest events kept in memory per process: resumes and catch-ups within them
    # (a reconnect storm after a node dies) need no query.
    stream_buffer_events: int = Field(default=10_000, ge=0, le=1_000_000)
    # A stream's credential is authenticated again this often (seconds): a revoked token,
    # an ended session or a lost permission ends the stream (admin/credential_watch.py).
    stream_recheck_seconds: float = Field(default=15.0, gt=0, le=3600)
    # GraphQL over WebSocket (graphql-transport-ws, admin/graphql_ws.py): a client must
    # send connection_init within graphql_ws_init_timeout seconds (close 4408 else) and
    # may run up to graphql_ws_max_operations operations at once on one connection.
    graphql_ws_init_timeout: float = Field(default=3.0, gt=0, le=300)
    graphql_ws_max_operations: int = Field(default=100, ge=1, le=10_000)
    # WebSocket rooms (/admin/v1/ws; services/streams/rooms.py, docs/realtime.md): the
    # first auth message must come within ws_auth_timeout seconds; a connection that
    # sends nothing for ws_idle_timeout seconds is closed (4000); at most ws_max_rooms
    # rooms and presence entries, frames of at most ws_max_message_bytes (1009), and a
    # send queue of ws_send_queue messages that may stay full for ws_send_timeout
    # seconds before the connection is closed as a slow consumer (4429).
    ws_auth_timeout: float = Field(default=5.0, gt=0, le=120)
    ws_idle_timeout: float = Field(default=60.0, gt=0, le=3600)
    ws_max_rooms: int = Field(default=32, ge=1, le=1000)
    ws_max_message_bytes: int = Field(default=65_536, ge=256, le=1_048_576)
    ws_send_queue: int = Field(default=256, ge=1, le=100_000)
    ws_send_timeout: float = Field(default=10.0, gt=0, le=300)
    # Presence (services/streams/presence.py): an entry expires presence_ttl seconds
    # after its last refresh (live sessions are refreshed every third of it); with
    # redis_url, entries live in Redis and every node sees them.
    presence_ttl: float = Field(default=30.0, ge=0.3, le=3600)
    # Rollups (analytics/rollups.py): a control-plane round every rollup_interval seconds
    # rolls up each minute once it ended more than rollup_lateness + the request log's
    # flush_interval seconds ago (rows arriving later stay out of the rollups). Minute,
    # hour and day rollups are kept for their retention in days. The error breakdown by
    # error kind reads raw rows, for ranges up to raw_query_max_seconds.
    analytics_rollup_interval: float = Field(default=10.0, gt=0, le=3600)
    analytics_rollup_lateness: float = Field(default=10.0, ge=0, le=3600)
    analytics_minute_rollup_retention_days: int = Field(default=7, ge=1)
    analytics_hour_rollup_retention_days: int = Field(default=90, ge=1)
    analytics_day_rollup_retention_days: int = Field(default=730, ge=1)
    analytics_raw_query_max_seconds: int = Field(default=86_400, ge=60)
    # Live traffic (analytics/live.py, services/streams/traffic.py, docs/live-traffic.md):
    # every data-plane worker sums each second of its traffic (requests, 4xx, 5xx, a
    # latency sketch; per route, per consumer and in total) and sends it to the control
    # plane: over Redis pub/sub when redis_url is set, else through the store's
    # live_traffic_reports table (polled every live_traffic_poll_interval seconds). At most
    # live_traffic_max_routes routes and live_traffic_max_consumers consumers are kept per
    # second and worker (the rest is summed under "_other"); a worker queues at most
    # live_traffic_queue_size records between two seconds (more are dropped and counted).
    # The control plane merges the workers' reports of a second once every live worker
    # reported it, or live_traffic_grace seconds after the second ended, and keeps the
    # last live_traffic_history_seconds frames for clients that resume.
    live_traffic_enabled: bool = True
    live_traffic_history_seconds: int = Field(default=60, ge=1, le=3600)
    live_traffic_max_routes: int = Field(default=200, ge=1, le=100_000)
    live_traffic_max_consumers: int = Field(default=200, ge=1, le=100_000)
    live_traffic_queue_size: int = Field(default=100_000, ge=1)
    live_traffic_grace: float = Field(default=1.0, gt=0, le=30)
    live_traffic_poll_interval: float = Field(default=0.2, gt=0, le=10)
    live_traffic_channel: str = "pc:live-traffic"
    # Prometheus metrics (analytics/metrics.py), served at GET /metrics on the admin port.
    # `portcullis serve` gives every process one multiprocess directory (exported as
    # PROMETHEUS_MULTIPROC_DIR): metrics_dir, emptied at start, or (unset) a fresh temp
    # directory removed at exit. /metrics needs `Authorization: Bearer <metrics_token>`
    # (or a deployment-wide admin credential with analytics:read) unless metrics_public
    # is set. Consumer names become a label only with
    # metrics_consumer_labels; past metrics_max_series label sets per worker, new ones
    # count under "(other)". Workers publish every metrics_interval seconds.
    metrics_dir: Path | None = None
    metrics_token: str | None = Field(default=None, repr=False)
    metrics_public: bool = False
    metrics_consumer_labels: bool = False
    metrics_max_series: int = Field(default=5000, ge=10)
    metrics_interval: float = Field(default=1.0, gt=0, le=60)
    # OpenTelemetry traces (analytics/tracing.py) over OTLP/HTTP, off unless otlp_endpoint
    # is set (the full URL, e.g. http://collector:4318/v1/traces); otlp_headers are sent
    # with every export (e.g. an API key); otlp_sample_ratio of traces are kept.
    otlp_endpoint: str | None = None
    otlp_headers: dict[str, str] = Field(default_factory=dict, repr=False)
    otlp_service_name: str = "portcullis"
    otlp_sample_ratio: float = Field(default=1.0, ge=0, le=1)
    # Response cache (cache/, plugin response-cache): `memory` keeps one LRU per worker,
    # capped by entries and bytes (purges reach every worker through the store's event
    # feed); `redis` shares entries through redis_url under cache_key_prefix, each read
    # bounded by cache_redis_timeout (Redis trouble is a miss, never a failed request).
    cache_backend: str = Field(default="memory", pattern="^(memory|redis)$")
    cache_memory_max_entries: int = Field(default=10_000, ge=1)
    cache_memory_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    cache_key_prefix: str = "pc:cache:"
    cache_redis_timeout: float = Field(default=0.2, gt=0, le=10)
    # Alerts (analytics/alerts.py) and anomaly detection (analytics/anomalies.py), both
    # control-plane jobs. Alert rules are evaluated every alerts_interval seconds (how
    # long a breach must hold before firing is each rule's for_seconds). Anomalies:
    # every closed minute of the request log, each API key's and client
    # IP's signals are compared with an EWMA baseline of the last anomaly_history_minutes;
    # a signal is anomalous when its z-score reaches anomaly_z_threshold AND its value
    # reaches the signal's absolute minimum per minute (anomaly_min_*), so a quiet key
    # going from 1 to 3 requests is not reported. Request and error rates need
    # anomaly_warmup_minutes of history first. One subject and signal is reported at most
    # once per anomaly_cooldown_seconds. With anomaly_auto_suspend, an anomaly in one of
    # anomaly_auto_suspend_signals suspends the key (audited as system:anomaly-detector).
    alerts_interval: float = Field(default=15.0, gt=0, le=3600)
    # quota.threshold_reached (analytics/quota_events.py): how often the control plane
    # reads the quota counters that changed and announces the 80 % / 100 % thresholds.
    quota_events_interval: float = Field(default=15.0, gt=0, le=3600)
    anomaly_interval: float = Field(default=15.0, gt=0, le=3600)
    anomaly_history_minutes: int = Field(default=60, ge=5, le=1440)
    anomaly_warmup_minutes: int = Field(default=10, ge=0, le=1440)
    anomaly_z_threshold: float = Field(default=4.0, gt=0)
    anomaly_min_requests: int = Field(default=100, ge=1)
    anomaly_min_error_rate: float = Field(default=0.2, gt=0, le=1)
    anomaly_min_auth_failures: int = Field(default=10, ge=1)
    anomaly_min_distinct_ips: int = Field(default=10, ge=1)
    anomaly_ip_min_auth_failures: int = Field(default=20, ge=1)
    anomaly_cooldown_seconds: float = Field(default=600.0, ge=0)
    anomaly_auto_suspend: bool = False
    anomaly_auto_suspend_signals: list[str] = Field(
        default_factory=lambda: ["request_rate", "error_rate", "auth_failures", "distinct_ips"]
    )
    # GraphQL admin API document limits (graph/limits.py, docs/decisions/016), checked
    # before validation and execution on the fragment-expanded operation: source bytes,
    # lexer tokens (and, separately, comments), selection depth, aliases (each fragment
    # spread counts again) and cost (1 per field; a field's selection set multiplied by
    # its first/last/limit argument, or graphql_default_list_size for a list without one),
    # and, counted in the source before parsing, directives, operations (validation
    # spends ~0.1-0.3 ms on each), fragment definitions and the length of one name.
    graphql_max_bytes: int = Field(default=100_000, ge=1)
    graphql_max_tokens: int = Field(default=5_000, ge=1)
    graphql_max_depth: int = Field(default=12, ge=1)
    graphql_max_aliases: int = Field(default=30, ge=1)
    graphql_max_cost: int = Field(default=50_000, ge=1)
    graphql_default_list_size: int = Field(default=100, ge=1)
    graphql_max_directives: int = Field(default=50, ge=1)
    graphql_max_operations: int = Field(default=20, ge=1)
    graphql_max_fragments: int = Field(default=100, ge=1)
    graphql_max_name_length: int = Field(default=256, ge=1)
    # Web applications (docs/web.md): a dashboard or portal session ends
    # web_session_lifetime seconds after sign-in, or after web_session_idle seconds
    # without a request; ended sessions are deleted from the store every hour.
    web_session_lifetime: int = Field(default=12 * 3600, ge=60, le=30 * 86400)
    web_session_idle: int = Field(default=30 * 60, ge=60, le=86400)

    # Hybrid mode (docs/hybrid.md, docs/decisions/038). role: "all" runs both planes on
    # one store (the default); "control-plane" runs only the admin API and accepts data
    # planes on /cluster/v1/connect; "data-plane" runs only the proxy, without a
    # database: it takes its config from control_plane_url over one WebSocket per node,
    # authenticated by cluster_token, and keeps the last snapshots in lkg_dir (two
    # generations) to boot from when the control plane is unreachable. A data plane
    # refuses a plain-http control_plane_url to a host that is not loopback unless
    # cluster_insecure is set. It reconnects after cluster_reconnect_min seconds,
    # doubling to cluster_reconnect_max, each delay with +-50 % jitter.
    role: Literal["all", "control-plane", "data-plane"] = "all"
    control_plane_url: str | None = None
    cluster_token: str | None = Field(default=None, repr=False)
    cluster_insecure: bool = False
    # A PEM bundle of CAs a data plane trusts for the control plane's certificate
    # (unset: the system's CAs).
    cluster_ca_file: Path | None = None
    lkg_dir: Path = Field(default_factory=lambda: Path("var/lkg").resolve())
    cluster_reconnect_min: float = Field(default=0.5, gt=0, le=60)
    cluster_reconnect_max: float = Field(default=10.0, gt=0, le=600)

    @property
    def admin_url(self) -> str:
        """The URL the control plane listens on, as a client on this host reaches it."""
        scheme = "https" if self.admin_tls_cert_file else "http"
        return local_url(self.admin_host, self.admin_port, scheme)

    @property
    def proxy_url(self) -> str:
        """The URL the data plane listens on, as a client on this host reaches it."""
        return local_url(self.proxy_host, self.proxy_port)

    @property
    def proxy_tls_url(self) -> str:
        """The data plane's TLS port, as a client on this host reaches it."""
        return local_url(self.proxy_host, self.proxy_tls_port, "https")

    @property
    def issuer(self) -> str:
        return self.oauth_issuer or f"http://{self.admin_host}:{self.admin_port}"


def local_url(host: str, port: int, scheme: str = "http") -> str:
    """`http://host:port` for a listening address: a wildcard bind (0.0.0.0, ::) is
    reached on loopback, and an IPv6 literal is bracketed (RFC 3986 §3.2.2)."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"
