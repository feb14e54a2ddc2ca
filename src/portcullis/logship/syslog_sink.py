"""syslog's sink: RFC 5424 messages over UDP (RFC 5426) or TCP (RFC 6587 octet counting).

One message per request: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG`,
PRI from the configured facility and the severity of the status class, TIMESTAMP
the request's start (RFC 3339, UTC, microseconds), APP-NAME `portcullis`, MSG the
request's JSON (UTF-8, with the BOM RFC 5424 §6.4 asks for). Structured data, when
enabled, repeats the main fields as `[portcullis@32473 ...]` (32473 is the enterprise
number RFC 5612 reserves for examples; operators filter on it).

UDP sends one datagram per message; a message longer than `max_message_bytes` has its
MSG cut to fit (counted in `truncated`). TCP frames each message as `LEN SP MSG`
(RFC 6587 §3.4.1) over one connection, reconnecting when a batch fails; a failed
batch is resent whole, so a receiver may see a message twice, never a torn frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Mapping
from typing import Final

from portcullis.analytics.record import RequestRecord
from portcullis.logship.records import LineEncoder, rfc3339
from portcullis.logship.shipper import ShipError

APP_NAME: Final = "portcullis"
SD_ID: Final = "portcullis@32473"
BOM: Final = b"\xef\xbb\xbf"

FACILITIES: Final[Mapping[str, int]] = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6,
    "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "audit": 13,
    "alert": 14, "clock": 15, "local0": 16, "local1": 17, "local2": 18, "local3": 19,
    "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}  # fmt: skip
SEVERITIES: Final[Mapping[str, int]] = {
    "emerg": 0, "alert": 1, "crit": 2, "err": 3, "warning": 4, "notice": 5, "info": 6,
    "debug": 7,
}  # fmt: skip
STATUS_CLASSES: Final = ("1xx", "2xx", "3xx", "4xx", "5xx")
DEFAULT_SEVERITY: Final[Mapping[str, str]] = {
    "1xx": "info", "2xx": "info", "3xx": "info", "4xx": "warning", "5xx": "err",
}  # fmt: skip


def _header_field(value: str, limit: int) -> str:
    """A header field of printable US-ASCII without spaces (RFC 5424 §6), or NILVALUE."""
    text = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return text or "-"


def _sd_value(value: object) -> str:
    text = str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def structured_data(record: RequestRecord) -> str:
    params = (
        ("request_id", record.request_id),
        ("route", record.route),
        ("service", record.service),
        ("consumer", record.consumer),
        ("method", record.method),
        ("status", record.status),
    )
    body = "".join(f' {k}="{_sd_value(v)}"' for k, v in params if v is not None and v != "")
    return f"[{SD_ID}{body}]"


class Formatter:
    """Turns records into RFC 5424 messages (bytes), everything per-config fixed up front."""

    def __init__(
        self,
        *,
        facility: int,
        severities: Mapping[str, int],
        msgid: str,
        hostname: str | None = None,
        procid: int | None = None,
        structured: bool = False,
        encoder: LineEncoder | None = None,
    ) -> None:
        self.json = (encoder or LineEncoder()).line
        self.facility = facility
        # PRI by the status's hundreds digit (1..5); anything else counts as 5xx.
        self._pri = {int(k[0]): facility * 8 + v for k, v in severities.items()}
        self._pri_other = facility * 8 + severities.get("5xx", SEVERITIES["err"])
        host = hostname if hostname is not None else socket.gethostname()
        pid = os.getpid() if procid is None else procid
        self._fixed = (
            f" {_header_field(host, 255)} {APP_NAME} {_header_field(str(pid), 128)} "
            f"{_header_field(msgid, 32)} "
        )
        self.structured = structured

    def pri(self, status: int) -> int:
        return self._pri.get(status // 100, self._pri_other)

    def head(self, record: RequestRecord) -> bytes:
        """Everything before MSG (the space that separates it included)."""
        sd = structured_data(record) if self.structured else "-"
        return (
            f"<{self.pri(record.status)}>1 {rfc3339(record.started_at)}{self._fixed}{sd} ".encode()
        )

    def message(self, record: RequestRecord) -> bytes:
        return self.head(record) + BOM + self.json(record).encode()


def octet_counted(message: bytes) -> bytes:
    """RFC 6587 §3.4.1 framing: `MSG-LEN SP SYSLOG-MSG`."""
    return b"%d %s" % (len(message), message)


def fit(head: bytes, msg: bytes, limit: int) -> tuple[bytes, bool]:
    """`head + BOM + msg` cut to `limit` bytes at a UTF-8 character boundary; and whether
    it had to be cut."""
    whole = head + BOM + msg
    if len(whole) <= limit:
        return whole, False
    room = max(0, limit - len(head) - len(BOM))
    # Decoding drops a character the cut left incomplete.
    cut = msg[:room].decode("utf-8", "ignore").encode()
    return (head + BOM + cut)[:limit], True


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.error: Exception | None = None

    def error_received(self, exc: Exception) -> None:
        self.error = exc


class UdpSyslogSink:
    def __init__(self, host: str, port: int, formatter: Formatter, *, max_bytes: int) -> None:
        self.host, self.port = host, port
        self.formatter = formatter
        self.max_bytes = max_bytes
        self.truncated = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._protocol: _Datagrams | None = None

    async def send(self, batch: list[RequestRecord]) -> None:
        if self._transport is None or self._transport.is_closing():
            try:
                loop = asyncio.get_running_loop()
                self._transport, self._protocol = await loop.create_datagram_endpoint(
                    _Datagrams, remote_addr=(self.host, self.port)
                )
            except OSError as exc:
                raise ShipError(
                    f"syslog udp {self.host}:{self.port}: {exc}", retryable=True
                ) from exc
        transport = self._transport
        fmt = self.formatter
        for record in batch:
            datagram, cut = fit(fmt.head(record), fmt.json(record).encode(), self.max_bytes)
            self.truncated += cut
            transport.sendto(datagram)

    async def aclose(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None


class TcpSyslogSink:
    def __init__(self, host: str, port: int, formatter: Formatter, *, timeout: float) -> None:
        self.host, self.port = host, port
        self.formatter = formatter
        self.timeout = timeout
        self.connects = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connection(self) -> asyncio.StreamWriter:
        # A receiver that closed its end (EOF seen) gets a new connection before writing,
        # rather than a batch written into a socket that will only fail afterwards.
        if self._reader is not None and self._reader.at_eof():
            await self._drop_connection()
        if self._writer is not None and not self._writer.is_closing():
            return self._writer
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), self.timeout
        )
        self._reader, self._writer = reader, writer
        self.connects += 1
        return writer

    async def send(self, batch: list[RequestRecord]) -> None:
        fmt = self.formatter
        data = b"".join(octet_counted(fmt.message(r)) for r in batch)
        try:
            writer = await self._connection()
            writer.write(data)
            await asyncio.wait_for(writer.drain(), self.timeout)
        except (OSError, TimeoutError) as exc:
            await self._drop_connection()
            raise ShipError(f"syslog tcp {self.host}:{self.port}: {exc!r}", retryable=True) from exc

    async def _drop_connection(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def aclose(self) -> None:
        await self._drop_connection()
