from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.cli_process import CliProcesses, cli_processes


@pytest.fixture(scope="session")
def portcullis_processes() -> Iterator[CliProcesses]:
    with cli_processes() as processes:
        yield processes
