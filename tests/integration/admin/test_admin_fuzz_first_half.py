"""Schemathesis on the admin API, first half: /admin/v1/a… to /admin/v1/k… (see fuzz_support)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzz_support import FIRST_HALF, fuzz_admin_api


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_schemathesis_finds_no_server_errors_or_schema_violations(tmp_path: Path) -> None:
    assert fuzz_admin_api(tmp_path, ["--include-path-regex", FIRST_HALF]) >= 500
