"""file-log's sink on real files: appends JSON lines, and follows logrotate's `create`
(rename, new file), a removed file, and `copytruncate` (no hole, the truncation counted)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from portcullis.logship.file_sink import FileSink
from portcullis.logship.shipper import ShipError
from support.records import make_record


def ids(path: Path) -> list[str]:
    return [json.loads(line)["request_id"] for line in path.read_text().splitlines()]


async def test_appends_json_lines_and_reopens_after_rename_and_create(tmp_path: Path) -> None:
    log = tmp_path / "requests.log"
    sink = FileSink(str(log))
    await sink.send([make_record(0), make_record(1)])
    assert ids(log) == ["req-0", "req-1"]
    assert oct(log.stat().st_mode & 0o777) == "0o640"

    os.rename(log, tmp_path / "requests.log.1")  # logrotate `create`
    log.touch()
    await sink.send([make_record(2)])
    assert ids(tmp_path / "requests.log.1") == ["req-0", "req-1"]
    assert ids(log) == ["req-2"]
    assert sink.reopened == 1

    os.unlink(log)  # removed without a replacement: created again
    await sink.send([make_record(3)])
    assert ids(log) == ["req-3"]
    assert sink.reopened == 2
    await sink.aclose()


async def test_copytruncate_continues_at_the_new_end(tmp_path: Path) -> None:
    log = tmp_path / "requests.log"
    sink = FileSink(str(log))
    await sink.send([make_record(n) for n in range(3)])
    shutil.copyfile(log, tmp_path / "requests.log.1")  # logrotate `copytruncate`
    with open(log, "r+b") as f:
        f.truncate(0)
    await sink.send([make_record(3)])
    assert ids(log) == ["req-3"]  # at offset 0: no NUL-filled hole before it
    assert not log.read_bytes().startswith(b"\x00")
    assert ids(tmp_path / "requests.log.1") == ["req-0", "req-1", "req-2"]
    assert sink.truncations == 1
    assert sink.reopened == 0
    await sink.aclose()


async def test_a_missing_directory_is_a_retryable_error(tmp_path: Path) -> None:
    sink = FileSink(str(tmp_path / "gone" / "requests.log"))
    with pytest.raises(ShipError) as caught:
        await sink.send([make_record(0)])
    assert caught.value.retryable
    (tmp_path / "gone").mkdir()
    await sink.send([make_record(1)])  # the next attempt finds the directory
    assert ids(tmp_path / "gone" / "requests.log") == ["req-1"]
    await sink.aclose()
