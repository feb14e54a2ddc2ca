"""Key settings validation, CSV import parsing, consumer checks and export rendering."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from portcullis.identity.key_admin import (
    MAX_SCOPES,
    ImportRejected,
    KeyInfo,
    KeySettings,
    KeySpec,
    KeyState,
    RowError,
    UnknownConsumer,
    check_import_consumers,
    csv_cell,
    export_csv,
    export_jsonl,
    normalize_network,
    normalize_origin,
    normalize_scope,
    parse_import_csv,
    resolve_consumer,
    state_of,
)
from portcullis.identity.key_records import KeyStatus
from portcullis.identity.keys import Environment, generate_key
from portcullis.model.loader import load_config_data

NOW = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://app.example.com", "https://app.example.com"),
        ("HTTPS://App.Example.COM:443", "https://app.example.com"),
        ("http://localhost:80", "http://localhost"),
        ("http://localhost:8080", "http://localhost:8080"),
        ("https://[2001:db8::1]:8443", "https://[2001:db8::1]:8443"),
        ("http://127.0.0.1:3000", "http://127.0.0.1:3000"),
    ],
)
def test_origins_are_normalised_as_browsers_send_them(given: str, expected: str) -> None:
    assert normalize_origin(given) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "https://app.example.com/",
        "https://app.example.com/path",
        "ftp://files.example.com",
        "https://*.example.com",
        "app.example.com",
        "https://-bad-.example.com",
        "https://app.example.com:99999",
        "null",
    ],
)
def test_other_origins_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match=r"not an origin|out of range"):
        normalize_origin(bad)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("192.0.2.7", "192.0.2.7/32"),
        ("2001:DB8::/32", "2001:db8::/32"),
        ("::1", "::1/128"),
        (" 0.0.0.0/0 ", "0.0.0.0/0"),
    ],
)
def test_networks_are_canonical_cidr(given: str, expected: str) -> None:
    assert normalize_network(given) == expected


def test_networks_with_host_bits_or_garbage_are_rejected_helpfully() -> None:
    with pytest.raises(ValueError, match=re.escape("did you mean 10.0.0.0/8")):
        normalize_network("10.0.0.1/8")
    with pytest.raises(ValueError, match=re.escape("did you mean 2001:db8::/32")):
        normalize_network("2001:db8::1/32")
    for bad in ("10.0.0.0/33", "not-an-ip", "::1/129", ""):
        with pytest.raises(ValueError, match="not an IP network"):
            normalize_network(bad)


def test_scopes_are_rfc6749_scope_tokens() -> None:
    assert normalize_scope("orders:read") == "orders:read"
    assert normalize_scope("https://api.example.com/x") == "https://api.example.com/x"
    for bad in ("", "a b", 'a"b', "a\\b", "é", "x" * 129):
        with pytest.raises(ValueError, match="not a scope"):
            normalize_scope(bad)


def test_key_spec_validates_and_deduplicates() -> None:
    spec = KeySpec.model_validate(
        {
            "name": "  ci  ",
            "scopes": ["b", "a", "b"],
            "allowed_origins": ["https://X.example.com", "https://x.example.com:443"],
            "ip_allowlist": ["10.0.0.0/8", "10.0.0.0/8"],
            "expires_at": "2031-01-01T00:00:00+02:00",
        }
    )
    assert spec.name == "ci"
    assert spec.scopes == ["b", "a"]
    assert spec.allowed_origins == ["https://x.example.com"]
    assert spec.ip_allowlist == ["10.0.0.0/8"]
    assert spec.environment is Environment.production
    assert spec.expires_at == datetime(2030, 12, 31, 22, tzinfo=UTC)
    with pytest.raises(ValidationError, match="timezone"):
        KeySpec.model_validate({"name": "x", "expires_at": "2031-01-01T00:00:00"})
    with pytest.raises(ValidationError, match="at most"):
        KeySpec.model_validate({"name": "x", "scopes": [f"s{i}" for i in range(MAX_SCOPES + 1)]})
    with pytest.raises(ValidationError, match="8 KiB"):
        KeySpec.model_validate({"name": "x", "metadata": {f"k{i}": "v" * 200 for i in range(60)}})
    with pytest.raises(ValidationError, match="Extra inputs"):
        KeySettings.model_validate({"name": "x", "environment": "staging"})
    with pytest.raises(ValidationError):
        KeySpec.model_validate({"name": ""})


def test_state_precedence() -> None:
    later, earlier = NOW + timedelta(hours=1), NOW - timedelta(hours=1)
    assert state_of(KeyStatus.active, None, None, NOW) is KeyState.active
    assert state_of(KeyStatus.active, later, later, NOW) is KeyState.grace
    assert state_of(KeyStatus.active, later, earlier, NOW) is KeyState.replaced
    assert state_of(KeyStatus.active, NOW, later, NOW) is KeyState.expired
    assert state_of(KeyStatus.suspended, earlier, earlier, NOW) is KeyState.suspended
    assert state_of(KeyStatus.revoked, earlier, None, NOW) is KeyState.revoked


def test_import_csv_parses_every_column() -> None:
    _, key = generate_key(Environment.staging)
    rows = parse_import_csv(
        "\ufeffConsumer, name ,environment,scopes,expires_at,allowed_origins,ip_allowlist,"
        "plan,metadata,key\r\n"
        'acme,one,development,a  b,2031-01-01T00:00:00Z,https://a.example,10.0.0.0/8 ::1,gold,"{""t"": 1}",\r\n'  # noqa: E501
        "\r\n"
        f"acme,two,,,,,,,,{key}\r\n"
        f"globex,three,,,,,,,,{'L' * 40}\r\n"
    )
    one, two, three = rows
    assert (one.row, one.consumer, one.key) == (1, "acme", None)
    assert one.spec.environment is Environment.development
    assert one.spec.scopes == ["a", "b"]
    assert one.spec.ip_allowlist == ["10.0.0.0/8", "::1/128"]
    assert one.spec.metadata == {"t": 1}
    assert one.spec.plan == "gold"
    assert (two.row, two.key, two.spec.environment) == (2, key, Environment.staging)
    assert two.key_id == key.split("_")[2]
    assert (three.key_id, three.key) == (None, "L" * 40)
    assert key not in repr(two)


def rejected(document: str, **kwargs: int) -> list[tuple[int, str | None]]:
    with pytest.raises(ImportRejected) as caught:
        parse_import_csv(document, **kwargs)
    return [(e.row, e.column) for e in caught.value.errors]


def test_import_header_problems_are_reported_together() -> None:
    assert rejected("") == [(0, None)]
    assert rejected("consumer,name\n") == [(0, None)]
    assert rejected("consumer,nam,name,name\nacme,x,y,z\n") == [(0, "nam"), (0, "name")]
    assert rejected("name\nx\n") == [(0, "consumer")]


def test_import_row_problems_name_row_and_column_and_never_the_key() -> None:
    _, key = generate_key(Environment.production)
    broken = key[:-1] + ("A" if key[-1] != "A" else "B")
    document = (
        "consumer,name,environment,scopes,expires_at,ip_allowlist,metadata,key\n"
        "acme,ok,,,,,,\n"  # 1
        ",noconsumer,,,,,,\n"  # 2
        "acme,,,,,,,\n"  # 3
        "acme,x,prod,,,,,\n"  # 4
        "acme,x,,,tomorrow,,,\n"  # 5
        "acme,x,,,,10.0.0.1/8,,\n"  # 6
        "acme,x,,,,,{not json,\n"  # 7
        f"acme,x,,,,,,{broken}\n"  # 8
        "acme,x,,,,,,short\n"  # 9
        f"acme,x,development,,,,,{key}\n"  # 10: the key says production
        f"acme,x,,,,,,{'Z' * 40}\n"  # 11
        f"acme,x,,,,,,{'Z' * 40}\n"  # 12: same key again
        'acme,x,,a"b,,,,\n'  # 13
        "acme,too,many,cells,,,,,\n"  # 14
    )
    with pytest.raises(ImportRejected) as caught:
        parse_import_csv(document)
    errors = caught.value.errors
    assert [(e.row, e.column) for e in errors] == [
        (2, "consumer"),
        (3, "name"),
        (4, "environment"),
        (5, "expires_at"),
        (6, "ip_allowlist"),
        (7, "metadata"),
        (8, "key"),
        (9, "key"),
        (10, "environment"),
        (12, "key"),
        (13, "scopes"),
        (14, None),
    ]
    text = " ".join(e.detail for e in errors)
    assert key not in text
    assert broken not in text
    assert "Z" * 40 not in text
    assert errors[7].detail == "row 9: key: must have 32 to 512 characters (has 5)"
    assert (
        errors[4].detail
        == "row 6: ip_allowlist: '10.0.0.1/8' has host bits set; did you mean 10.0.0.0/8?"
    )
    assert errors[4].pointer == "#/rows/6/ip_allowlist"
    assert errors[9].detail == "row 12: key: the same key is already in row 11"


def test_import_row_limit() -> None:
    document = "consumer,name\n" + "acme,x\n" * 4
    assert rejected(document, max_rows=3) == [(4, None)]
    assert len(parse_import_csv(document, max_rows=4)) == 4


def test_row_error_pointer_and_detail() -> None:
    assert RowError(0, "nam", "unknown").pointer == "#/rows/0/nam"
    assert RowError(0, "nam", "unknown").detail == "header: nam: unknown"
    assert RowError(3, None, "bad").pointer == "#/rows/3"
    assert RowError(3, None, "bad").detail == "row 3: bad"


CONFIG = load_config_data(
    {
        "consumers": [
            {"username": "acme", "organization": "org-a"},
            {"username": "globex"},
        ]
    }
)


def test_consumers_are_resolved_from_the_config_and_scoped_by_organization() -> None:
    assert resolve_consumer(CONFIG, "acme").organization == "org-a"
    assert resolve_consumer(CONFIG, "acme", organization="org-a").username == "acme"
    with pytest.raises(UnknownConsumer, match="unknown consumer 'acme'"):
        resolve_consumer(CONFIG, "acme", organization="org-b")
    with pytest.raises(UnknownConsumer):
        resolve_consumer(CONFIG, "globex", organization="org-a")
    with pytest.raises(UnknownConsumer):
        resolve_consumer(CONFIG, "ghost")


def test_import_consumers_are_checked_per_row() -> None:
    rows = parse_import_csv("consumer,name\nacme,a\nglobex,b\nghost,c\nacme,d\n")
    with pytest.raises(ImportRejected) as caught:
        check_import_consumers(rows, CONFIG)
    assert [(e.row, e.column) for e in caught.value.errors] == [(3, "consumer")]
    assert check_import_consumers(rows[:2], CONFIG) == {"acme": "org-a", "globex": None}
    with pytest.raises(ImportRejected) as caught:
        check_import_consumers(rows[:2], CONFIG, organization="org-a")
    assert [e.row for e in caught.value.errors] == [2]


def test_csv_cells_cannot_become_formulas() -> None:
    assert csv_cell("=SUM(A1)") == "'=SUM(A1)"
    assert csv_cell("@x") == "'@x"
    assert csv_cell(["a", "b"]) == "a b"
    assert csv_cell({"k": 1}) == '{"k":1}'
    assert csv_cell({}) == ""
    assert csv_cell(None) == ""


def info(**overrides: object) -> KeyInfo:
    fields: dict[str, object] = {
        "id": "AAAAAAAAAAAA",
        "consumer": "acme",
        "organization": None,
        "organization_id": None,
        "name": "=cmd",
        "environment": Environment.production,
        "scopes": ("a", "b"),
        "allowed_origins": (),
        "ip_allowlist": ("10.0.0.0/8",),
        "plan": None,
        "metadata": {"team": "x"},
        "status": KeyStatus.active,
        "status_reason": None,
        "expires_at": None,
        "rotated_from": None,
        "replaced_by": None,
        "grace_until": None,
        "created_by": "t",
        "created_at": NOW,
        "updated_at": NOW,
        "last_used_at": None,
    }
    fields.update(overrides)
    return KeyInfo(**fields)  # type: ignore[arg-type]


async def stream(*items: KeyInfo) -> AsyncIterator[KeyInfo]:
    for item in items:
        yield item


async def test_export_renders_csv_and_jsonl() -> None:
    one, two = info(), info(id="imp_BBBBBBBBBBBB", name="two")
    csv_text = "".join([c async for c in export_csv(stream(one, two), NOW)])
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert rows[0]["prefix"] == "pc_live_AAAAAAAAAAAA"
    assert rows[0]["name"] == "'=cmd"
    assert rows[0]["scopes"] == "a b"
    assert rows[0]["created_at"] == "2030-01-01T00:00:00Z"
    assert rows[1]["prefix"] == ""
    lines = [json.loads(line) async for line in export_jsonl(stream(one), NOW)]
    assert lines == [one.as_json(NOW)]
    assert lines[0]["state"] == "active"
    assert lines[0]["metadata"] == {"team": "x"}
