"""The `http-log`, `file-log` and `syslog` plugins: each finished request, shipped.

A handler holds the worker's `Shipper` for its config (one per identical config,
shared by instances and kept across snapshots: `ShipperRegistry.acquire`); its `log`
phase appends the request's record to that shipper's queue and returns. Encoding,
batching, I/O and retries happen in the shipper's task (portcullis/logship/).
"""

from __future__ import annotations

from typing import ClassVar, TypeVar

from portcullis.analytics.record import RequestRecord
from portcullis.logship.records import LineEncoder
from portcullis.logship.shipper import (
    Delivery,
    Shipper,
    ShipperRegistry,
    ShipStats,
    Sink,
    default_registry,
)
from portcullis.model.plugins.log_shipping import (
    FileLogConfig,
    HttpLogConfig,
    LogShippingConfig,
    SyslogConfig,
)
from portcullis.plugins.base import Phase, Plugin
from portcullis.plugins.env import PluginEnv


def delivery_of(config: LogShippingConfig) -> Delivery:
    return Delivery(
        queue_size=config.queue_size,
        batch_size=config.batch_size,
        flush_interval=config.flush_interval,
        retries=config.retries,
        backoff_initial=config.backoff_initial,
        backoff_max=max(config.backoff_max, config.backoff_initial),
        drain_timeout=config.drain_timeout,
    )


C = TypeVar("C", bound=LogShippingConfig)


class LogPlugin(Plugin[C]):
    """A log-shipping handler: `sink()` makes the destination's sink (once per shipper)."""

    phases: ClassVar[frozenset[Phase]] = frozenset({"log"})

    def __init__(self, config: C, env: PluginEnv) -> None:
        super().__init__(config, env)
        registry: ShipperRegistry = env.shippers if env.shippers is not None else default_registry()
        key = (self.name, config.model_dump_json())

        def make(stats: ShipStats) -> Shipper:
            return Shipper(self.sink(), delivery_of(config), stats)

        self.shipper = registry.acquire(key, self.name, config.destination(), make)

    def sink(self) -> Sink:
        raise NotImplementedError

    def encoder(self) -> LineEncoder:
        return LineEncoder(self.config.custom_fields)

    def log(self, record: RequestRecord) -> None:
        self.shipper.offer(record)


class HttpLog(LogPlugin[HttpLogConfig]):
    name: ClassVar[str] = "http-log"
    priority: ClassVar[int] = 12
    config_model = HttpLogConfig

    def sink(self) -> Sink:
        from portcullis.logship.http_sink import HttpSink
        from portcullis.webhooks.destinations import DestinationPolicy

        c = self.config
        return HttpSink(
            c.url,
            policy=self.env.destinations or DestinationPolicy(),
            headers=c.headers,
            ndjson=c.format == "ndjson",
            timeout=c.timeout,
            encoder=self.encoder(),
        )


class FileLog(LogPlugin[FileLogConfig]):
    name: ClassVar[str] = "file-log"
    priority: ClassVar[int] = 9
    config_model = FileLogConfig

    def sink(self) -> Sink:
        from portcullis.logship.file_sink import FileSink

        return FileSink(self.config.path, encoder=self.encoder())


class Syslog(LogPlugin[SyslogConfig]):
    name: ClassVar[str] = "syslog"
    priority: ClassVar[int] = 4
    config_model = SyslogConfig

    def sink(self) -> Sink:
        from portcullis.logship.syslog_sink import (
            DEFAULT_SEVERITY,
            FACILITIES,
            SEVERITIES,
            Formatter,
            TcpSyslogSink,
            UdpSyslogSink,
        )

        c = self.config
        names: dict[str, str] = {**DEFAULT_SEVERITY}
        for status_class, severity in c.severity.items():
            names[status_class] = severity
        severities = {k: SEVERITIES[v] for k, v in names.items()}
        formatter = Formatter(
            facility=FACILITIES[c.facility],
            severities=severities,
            msgid=c.msgid,
            hostname=c.hostname,
            structured=c.structured_data,
            encoder=self.encoder(),
        )
        if c.protocol == "tcp":
            return TcpSyslogSink(c.host, c.port, formatter, timeout=c.timeout)
        return UdpSyslogSink(c.host, c.port, formatter, max_bytes=c.max_message_bytes)
