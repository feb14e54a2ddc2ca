"""Log shipping through a real gateway (`portcullis serve`, one granian worker) to real
receivers the test starts: an HTTP collector (aiohttp), a file the test rotates, and
syslog over UDP and TCP parsed by an independent RFC 5424 parser.

Requests keep succeeding whatever the receivers do: a collector that hangs fills the
queue, and what does not fit is dropped and counted on /metrics; one that refuses
(503/429 with Retry-After) is retried until it accepts; one that is down costs the
batches after their retries, counted. Stopping the gateway ships what is queued.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from support.log_receivers import Behaviour, HttpCollector, SyslogReceiver
from support.servers import Gateway, free_port, gateway, stop_process
from support.threaded_upstream import wait_until

TOKEN = "a-scrape-token"
SECRET = "Bearer collector-s3cret"
QUEUE = 5


@dataclass
class Setup:
    gw: Gateway
    collector: HttpCollector
    syslog: SyslogReceiver
    log: Path
    down: int
    client: httpx.Client


def _plugin(route: str, name: str, **config: Any) -> dict[str, Any]:
    return {"name": name, "route": route, "config": {"flush_interval": 0.05, **config}}


def _config(
    upstream: int, collector: HttpCollector, syslog: SyslogReceiver, log: Path, down: int
) -> dict[str, Any]:
    routes = ["http", "ndjson", "flaky", "slow", "down", "file", "udp", "tcp", "drain"]
    quick = {"backoff_initial": 0.01, "backoff_max": 0.05}
    return {
        "services": [{"name": "demo", "url": f"http://127.0.0.1:{upstream}"}],
        "routes": [
            {"name": r, "service": "demo", "paths": [f"/{r}"], "strip_path": True} for r in routes
        ],
        "plugins": [
            _plugin("http", "http-log", url=collector.url("http"), batch_size=5,
                    headers={"x-collector-token": SECRET}, custom_fields={"env": "e2e"}),
            _plugin("ndjson", "http-log", url=collector.url("ndjson"), format="ndjson"),
            _plugin("flaky", "http-log", url=collector.url("flaky"), **quick),
            _plugin("slow", "http-log", url=collector.url("slow"), queue_size=QUEUE,
                    batch_size=1, timeout=60),
            _plugin("down", "http-log", url=f"http://127.0.0.1:{down}/", retries=2, **quick),
            _plugin("file", "file-log", path=str(log)),
            # Only the shutdown drain sends these (batches of 1000 records, or a minute).
            _plugin("drain", "http-log", url=collector.url("drain"), batch_size=1000,
                    flush_interval=60),
            _plugin("udp", "syslog", host="127.0.0.1", port=syslog.udp_port),
            _plugin("tcp", "syslog", host="127.0.0.1", port=syslog.tcp_port, protocol="tcp",
                    structured_data=True, facility="local3", **quick),
        ],
    }  # fmt: skip


def _env(tmp: Path) -> dict[str, str]:
    return {
        "PORTCULLIS_WEBHOOK_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
        "PORTCULLIS_METRICS_TOKEN": TOKEN,
        "PORTCULLIS_METRICS_DIR": str(tmp / "metrics"),
        "PORTCULLIS_METRICS_INTERVAL": "0.1",
    }


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, upstream_a: int) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("logship")
    collector = HttpCollector(
        behaviours={
            "flaky": Behaviour(fail=2, status=503, retry_after="0"),
            "slow": Behaviour(held=True),
        }
    ).start()
    syslog = SyslogReceiver().start()
    log, down = tmp / "requests.log", free_port()
    cfg = tmp / "gateway.yaml"
    cfg.write_text(yaml.safe_dump(_config(upstream_a, collector, syslog, log, down)))
    try:
        with gateway(tmp, cfg, extra_env=_env(tmp)) as gw, httpx.Client(timeout=10) as client:
            yield Setup(gw, collector, syslog, log, down, client)
    finally:
        collector.stop()
        syslog.stop()


def _get(s: Setup, path: str, **kw: Any) -> int:
    return s.client.get(f"{s.gw.url}{path}", **kw).status_code


def _metric(s: Setup, family: str, **labels: str) -> float:
    r = s.client.get(f"{s.gw.admin_url}/metrics", headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    return sum(
        float(sample.value)
        for f in text_string_to_metric_families(r.text)
        if f.name == family
        for sample in f.samples
        if sample.name in (family, f"{family}_total")
        and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def test_http_log_posts_batches_without_secrets(setup: Setup) -> None:
    s = setup
    for n in range(12):
        headers = {"authorization": "Bearer client-secret", "x-request-id": f"http-{n}"}
        assert _get(s, f"/http/echo/{n}", params={"apikey": "pc_live_k"}, headers=headers) == 200
    wait_until(lambda: len(s.collector.records("http")) == 12, timeout=20)
    records = s.collector.records("http")
    assert sorted(r["request_id"] for r in records) == sorted(f"http-{n}" for n in range(12))
    assert all(len(b) <= 5 for b in s.collector.batches["http"])
    first = next(r for r in records if r["request_id"] == "http-0")
    assert (first["route"], first["service"], first["method"], first["status"]) == (
        "http", "demo", "GET", 200,
    )  # fmt: skip
    assert first["path"] == "/http/echo/0"
    assert first["client_ip"] == "127.0.0.1"
    assert first["latency_ms"] > 0
    assert first["env"] == "e2e"  # the config's custom field
    assert first["bytes_out"] > 0
    text = str(records)
    assert "client-secret" not in text
    assert "pc_live_k" not in text
    sent = s.collector.headers["http"][0]
    assert sent["x-collector-token"] == SECRET
    assert sent["Content-Type"] == "application/json"
    wait_until(
        lambda: _metric(s, "portcullis_log_shipping_shipped", plugin="http-log",
                        destination=s.collector.url("http")) == 12,
        timeout=20,
    )  # fmt: skip


def test_ndjson_format(setup: Setup) -> None:
    s = setup
    for _ in range(3):
        assert _get(setup, "/ndjson/echo") == 200
    wait_until(lambda: len(s.collector.records("ndjson")) == 3, timeout=20)
    assert s.collector.headers["ndjson"][0]["Content-Type"] == "application/x-ndjson"


def test_refusals_are_retried_until_the_collector_accepts(setup: Setup) -> None:
    s = setup
    for _ in range(3):
        assert _get(s, "/flaky/echo") == 200
    wait_until(lambda: len(s.collector.records("flaky")) == 3, timeout=20)
    assert s.collector.attempts["flaky"] >= 3  # two 503s, then accepted
    assert _metric(s, "portcullis_log_shipping_dropped", destination=s.collector.url("flaky")) == 0


def test_a_hung_collector_fills_the_queue_and_the_rest_is_dropped_and_counted(
    setup: Setup,
) -> None:
    s = setup
    url = s.collector.url("slow")
    assert _get(s, "/slow/echo") == 200
    wait_until(lambda: s.collector.attempts["slow"] == 1)  # one record held at the collector
    sent = 30
    statuses = [_get(s, "/slow/echo") for _ in range(sent - 1)]
    assert statuses == [200] * (sent - 1)  # the requests never waited for the log
    dropped = sent - 1 - QUEUE
    wait_until(
        lambda: _metric(s, "portcullis_log_shipping_dropped", destination=url,
                        reason="queue_full") == dropped
        and _metric(s, "portcullis_log_shipping_queue_depth", destination=url) == QUEUE,
        timeout=20,
    )  # fmt: skip
    s.collector.release()
    wait_until(lambda: len(s.collector.records("slow")) == 1 + QUEUE, timeout=20)
    wait_until(
        lambda: (
            _metric(s, "portcullis_log_shipping_shipped", destination=url) == 1 + QUEUE
            and _metric(s, "portcullis_log_shipping_queue_depth", destination=url) == 0
        ),
        timeout=20,
    )


def test_a_collector_that_is_down_costs_the_records_after_retries(setup: Setup) -> None:
    s = setup
    for _ in range(4):
        assert _get(s, "/down/echo") == 200
    url = f"http://127.0.0.1:{s.down}/"
    wait_until(
        lambda: _metric(s, "portcullis_log_shipping_dropped", destination=url,
                        reason="retries_exhausted") == 4,
        timeout=20,
    )  # fmt: skip
    assert _metric(s, "portcullis_log_shipping_shipped", destination=url) == 0


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_file_log_follows_rename_and_create_and_copytruncate(setup: Setup) -> None:
    s = setup
    for _ in range(3):
        assert _get(s, "/file/echo") == 200
    wait_until(lambda: len(_lines(s.log)) == 3, timeout=20)
    rotated = s.log.with_suffix(".log.1")
    os.rename(s.log, rotated)  # logrotate `create`
    s.log.touch()
    for _ in range(2):
        assert _get(s, "/file/echo") == 200
    wait_until(lambda: len(_lines(s.log)) == 2, timeout=20)
    assert len(_lines(rotated)) == 3
    shutil.copyfile(s.log, s.log.with_suffix(".log.2"))  # logrotate `copytruncate`
    with open(s.log, "r+b") as f:
        f.truncate(0)
    assert _get(s, "/file/echo") == 200
    wait_until(lambda: len(_lines(s.log)) == 1, timeout=20)
    assert not s.log.read_bytes().startswith(b"\x00")  # appended at the new end
    assert '"route":"file"' in _lines(s.log)[0]


def test_syslog_over_udp_and_tcp_parses_as_rfc_5424(setup: Setup) -> None:
    s = setup
    assert _get(s, "/udp/echo") == 200
    assert _get(s, "/udp/status/404") == 404
    wait_until(lambda: len(s.syslog.messages["udp"]) == 2, timeout=20)
    (ok, ok_body), (missing, missing_body) = sorted(
        s.syslog.messages["udp"], key=lambda m: m[1]["status"]
    )
    assert (ok.facility.name, ok.severity.name, ok.appname, ok.msgid) == (
        "local0", "info", "portcullis", "request",
    )  # fmt: skip
    assert missing.severity.name == "warning"
    assert missing_body["status"] == 404
    assert ok_body["route"] == "udp"
    assert ok.sd == {}

    assert _get(s, "/tcp/echo") == 200
    wait_until(lambda: len(s.syslog.messages["tcp"]) == 1, timeout=20)
    message, body = s.syslog.messages["tcp"][0]
    assert message.facility.name == "local3"
    assert message.sd["portcullis@32473"]["route"] == "tcp"
    assert body["path"] == "/tcp/echo"
    # The receiver drops the connection: the next batch goes over a new one.
    s.syslog.close_tcp()
    for _ in range(3):
        assert _get(s, "/tcp/echo") == 200
    wait_until(lambda: len(s.syslog.messages["tcp"]) >= 4, timeout=20)
    assert s.syslog.connections >= 2


def test_stopping_the_gateway_ships_what_is_queued(setup: Setup) -> None:
    """Last in this module: it stops the module's gateway."""
    s = setup
    for n in range(20):
        assert _get(s, "/drain/echo", headers={"x-request-id": f"d-{n}"}) == 200
    assert s.collector.records("drain") == []  # batches of 1000 or a minute: none sent yet
    stop_process(s.gw.process, timeout=30)
    # The gateway has exited: its worker shipped the queue on the way out.
    assert sorted(r["request_id"] for r in s.collector.records("drain")) == sorted(
        f"d-{n}" for n in range(20)
    )
