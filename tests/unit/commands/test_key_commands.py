"""Parsing helpers of `portcullis keys` (durations, expiry, metadata, option names)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from portcullis.commands.keys import (
    cli_actor,
    option_errors,
    parse_duration,
    parse_expiry,
    parse_metadata,
)
from portcullis.errors import UserError
from portcullis.identity.key_admin import KeySpec

NOW = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0), ("3600", 3600), ("45s", 45), ("30m", 1800), ("24h", 86400), ("90d", 7776000),
     ("2w", 1209600), (" 1 H ", 3600)],
)  # fmt: skip
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text, "--grace") == seconds


@pytest.mark.parametrize("bad", ["", "-1", "1.5h", "1y", "forever", "h"])
def test_bad_durations_name_the_option(bad: str) -> None:
    with pytest.raises(UserError, match=r"--grace: .* is not a duration"):
        parse_duration(bad, "--grace")


def test_expiry_from_a_time_a_date_or_a_duration() -> None:
    assert parse_expiry(None, None, NOW) is None
    assert parse_expiry("2031-02-03T04:05:06Z", None, NOW) == datetime(
        2031, 2, 3, 4, 5, 6, tzinfo=UTC
    )
    assert parse_expiry("2031-02-03", None, NOW) == datetime(2031, 2, 3, tzinfo=UTC)
    offset = parse_expiry("2031-02-03T04:00:00+02:00", None, NOW)
    assert offset == datetime(2031, 2, 3, 2, tzinfo=UTC)
    assert parse_expiry(None, "7d", NOW) == NOW + timedelta(days=7)
    with pytest.raises(UserError, match="give one, not both"):
        parse_expiry("2031-01-01", "7d", NOW)
    with pytest.raises(UserError, match="--expires-at: 'soon'"):
        parse_expiry("soon", None, NOW)


def test_metadata_pairs_keep_json_scalars() -> None:
    assert parse_metadata(["team=pay", "tier=2", "beta=true", "ratio=0.5", "list=[1]", "e="]) == {
        "team": "pay",
        "tier": 2,
        "beta": True,
        "ratio": 0.5,
        "list": "[1]",
        "e": "",
    }
    for bad in ("novalue", "=x"):
        with pytest.raises(UserError, match="--meta:"):
            parse_metadata([bad])


def test_validation_errors_name_cli_options() -> None:
    with pytest.raises(ValidationError) as caught:
        KeySpec.model_validate({"name": "x", "ip_allowlist": ["nope"], "scopes": ["a b"]})
    message = option_errors(caught.value)
    assert "--allow-ip: 'nope' is not an IP network" in message
    assert "--scope: 'a b' is not a scope" in message


def test_cli_actor_names_the_os_user() -> None:
    assert cli_actor().startswith("cli:")
    assert len(cli_actor()) > len("cli:")
