"""What a shipped line holds, RFC 5424 messages (checked by an independent parser), RFC
6587 octet counting, and UDP's size cap."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from portcullis.analytics.record import Flag
from portcullis.logship.records import LineEncoder, json_array, json_lines, log_fields, rfc3339
from portcullis.logship.syslog_sink import BOM, Formatter, fit, octet_counted, structured_data
from portcullis.model.plugins.log_shipping import RECORD_FIELDS
from portcullis.model.plugins.registry import validate_plugin
from support.log_receivers import SyslogMessage, parse_syslog, split_octet_counted
from support.records import make_record

SEVERITIES = {"1xx": 6, "2xx": 6, "3xx": 6, "4xx": 4, "5xx": 3}


def formatter(**kw: object) -> Formatter:
    options: dict[str, object] = {
        "facility": 16,
        "severities": SEVERITIES,
        "msgid": "request",
        "hostname": "gw-1",
        "procid": 4242,
        **kw,
    }
    return Formatter(**options)  # type: ignore[arg-type]


def test_a_line_holds_what_users_need_and_no_credential() -> None:
    record = make_record(
        3, flags=int(Flag.CACHE_HIT | Flag.RETRIED), api="orders", api_version="v2"
    )
    fields = log_fields(record)
    assert fields["time"] == "2023-11-14T22:13:23.250000Z"
    assert fields["route"] == "items"
    assert fields["service"] == "catalog"
    assert fields["consumer"] == "alice"
    assert fields["status"] == 200
    assert fields["api"] == "orders"
    assert fields["api_version"] == "v2"
    assert fields["flags"] == ["cache_hit", "retried"]
    assert fields["latency_ms"] == 3.5
    assert fields["upstream_ms"] == 2.0
    assert "credential_id" not in fields
    assert "key-1" not in json.dumps(fields)


def test_batches_encode_as_an_array_or_as_json_lines() -> None:
    records = [make_record(n) for n in range(3)]
    assert [r["request_id"] for r in json.loads(json_array(records))] == ["req-0", "req-1", "req-2"]
    lines = json_lines(records).decode().split("\n")
    assert lines[-1] == ""
    assert [json.loads(line)["path"] for line in lines[:-1]] == [
        "/items/0",
        "/items/1",
        "/items/2",
    ]


def test_rfc3339_is_utc_with_microseconds() -> None:
    assert rfc3339(0.5) == "1970-01-01T00:00:00.500000Z"


@pytest.mark.parametrize(
    ("status", "pri", "severity"),
    [(101, 134, "info"), (200, 134, "info"), (302, 134, "info"), (404, 132, "warning"),
     (503, 131, "err"), (999, 131, "err")],
)  # fmt: skip
def test_pri_is_facility_times_eight_plus_the_status_class_severity(
    status: int, pri: int, severity: str
) -> None:
    message = formatter().message(make_record(1, status=status))
    assert message.startswith(f"<{pri}>1 ".encode())
    parsed, body = parse_syslog(message.decode())
    assert parsed.facility.name == "local0"
    assert parsed.severity.name == severity
    assert body["status"] == status


def test_header_fields_and_the_json_msg_parse_back() -> None:
    message = formatter().message(make_record(7, path="/caf\u00e9"))
    parsed, body = parse_syslog(message.decode())
    assert parsed.version == 1
    assert parsed.timestamp == "2023-11-14T22:13:27.250000Z"
    assert (parsed.hostname, parsed.appname, parsed.procid, parsed.msgid) == (
        "gw-1", "portcullis", 4242, "request",
    )  # fmt: skip
    assert parsed.sd == {}
    assert body["path"] == "/caf\u00e9"
    assert body["request_id"] == "req-7"
    assert BOM in message


def test_structured_data_escapes_what_rfc_5424_reserves() -> None:
    record = make_record(1, route='we"ird]\\route', consumer=None)
    assert structured_data(record) == (
        '[portcullis@32473 request_id="req-1" route="we\\"ird\\]\\\\route" '
        'service="catalog" method="GET" status="200"]'
    )
    parsed, _ = parse_syslog(formatter(structured=True).message(record).decode())
    params = parsed.sd["portcullis@32473"]
    assert params["status"] == "200"
    assert params["service"] == "catalog"
    assert "consumer" not in params


def test_header_fields_drop_spaces_and_non_ascii() -> None:
    message = formatter(hostname="my host\u00e9", msgid="a b").message(make_record(1))
    parsed, _ = parse_syslog(message.decode())
    assert parsed.hostname == "myhost"
    assert parsed.msgid == "ab"


def test_octet_counting_frames_split_back() -> None:
    messages = [formatter().message(make_record(n, path="/\u00fc" * n)) for n in range(3)]
    stream = b"".join(octet_counted(m) for m in messages)
    assert stream.startswith(b"%d <134>1 " % len(messages[0]))
    frames, rest = split_octet_counted(stream + b"12 <13")
    assert frames == messages
    assert rest == b"12 <13"


def test_udp_messages_are_cut_to_the_cap_at_a_character_boundary() -> None:
    f = formatter()
    record = make_record(1, path="/" + "\u00e9" * 2000)
    head = f.head(record)
    whole, cut = fit(head, b'{"a":1}', 2048)
    assert not cut
    assert whole == head + BOM + b'{"a":1}'
    msg = ('{"path":"/' + "\u00e9" * 2000 + '"}').encode()
    datagram, cut = fit(head, msg, 500)
    assert cut
    assert len(datagram) <= 500
    assert len(datagram) >= 498
    datagram.decode("utf-8")  # no torn character
    assert SyslogMessage.parse(datagram.decode()).appname == "portcullis"


@pytest.mark.parametrize(
    "seconds", [0.5, 1_700_000_000.25, 1_700_000_000.9999996, 1.0000004, 1_765_145_600.123456]
)
def test_rfc3339_matches_datetime_across_second_boundaries(seconds: float) -> None:
    expected = datetime.fromtimestamp(round(seconds, 6), UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert rfc3339(seconds) == expected
    assert rfc3339(seconds + 3600) != expected  # the cached second moves on


def test_custom_fields_are_added_and_cannot_replace_the_records_own() -> None:
    assert set(log_fields(make_record(0))) == RECORD_FIELDS
    encoder = LineEncoder({"env": "prod", "shard": 3})
    line = json.loads(encoder.line(make_record(0)))
    assert (line["env"], line["shard"], line["request_id"]) == ("prod", 3, "req-0")
    message = formatter(encoder=encoder).message(make_record(1))
    assert parse_syslog(message.decode())[1]["env"] == "prod"
    errors = validate_plugin("file-log", {"path": "/l", "custom_fields": {"status": "x"}})
    assert errors == ["config.custom_fields: Value error, 'status' is a field of the record itself"]
