"""Last-known-good snapshots: atomic writes, two generations, corruption falls back."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from portcullis.hybrid.lkg import MAX_HEADER_DELTAS, CorruptSnapshot, LkgStore


def body(n: int) -> bytes:
    return json.dumps({"routes": [{"name": f"r{n}"}]}, separators=(",", ":")).encode()


def test_save_and_read_back(tmp_path: Path) -> None:
    store = LkgStore(tmp_path / "lkg", clock=lambda: 1000.0)
    saved = store.save(7, body(7))
    newest = store.newest()
    assert newest is not None
    assert (newest.version, newest.body, newest.received_at) == (7, body(7), 1000.0)
    assert newest.checksum == hashlib.sha256(body(7)).hexdigest() == saved.checksum
    assert newest.document() == {"routes": [{"name": "r7"}]}


def test_empty_or_missing_directory_has_nothing(tmp_path: Path) -> None:
    assert LkgStore(tmp_path / "absent").newest() is None
    assert LkgStore(tmp_path / "absent").listing() == ()


def test_keeps_two_generations(tmp_path: Path) -> None:
    store = LkgStore(tmp_path)
    for version in (1, 2, 3, 4):
        store.save(version, body(version))
    assert [p.name for _, p in store.generations()] == [
        "snapshot-000000000004.lkg",
        "snapshot-000000000003.lkg",
    ]
    newest = store.newest()
    assert newest is not None
    assert newest.version == 4


def corrupt_newest(store: LkgStore, how: str) -> None:
    _, path = store.generations()[0]
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "flip":
        data[-3] ^= 0x20
        path.write_bytes(bytes(data))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "header":
        path.write_bytes(b"not json\n" + bytes(data))


@pytest.mark.parametrize("how", ["truncate", "flip", "empty", "header"])
def test_a_corrupt_newest_falls_back_to_the_older(tmp_path: Path, how: str) -> None:
    store = LkgStore(tmp_path)
    store.save(1, body(1))
    store.save(2, body(2))
    corrupt_newest(store, how)
    newest = store.newest()
    assert newest is not None
    assert newest.version == 1
    generation, path = store.generations()[0]
    with pytest.raises(CorruptSnapshot):
        store.read(generation, path)


def test_both_corrupt_is_nothing(tmp_path: Path) -> None:
    store = LkgStore(tmp_path, keep=2)
    store.save(1, body(1))
    corrupt_newest(store, "flip")
    store.save(2, body(2))
    corrupt_newest(store, "truncate")
    assert store.newest() is None


def test_sweep_sets_corrupt_files_aside_and_removes_temporaries(tmp_path: Path) -> None:
    store = LkgStore(tmp_path)
    store.save(1, body(1))
    store.save(2, body(2))
    corrupt_newest(store, "truncate")
    (tmp_path / ".snapshot-000000000003.99.tmp").write_bytes(b"half")
    moved = store.sweep()
    assert [p.name for p in moved] == ["snapshot-000000000002.lkg.corrupt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "snapshot-000000000001.lkg",
        "snapshot-000000000002.lkg.corrupt",
    ]
    # The next write is a new generation, and the valid older one is kept beside it.
    store.save(3, body(3))
    assert list(store.listing()) == [
        "snapshot-000000000003.lkg",
        "snapshot-000000000001.lkg",
    ]


class Crash(Exception):
    pass


def test_a_crash_before_the_rename_leaves_the_previous_generation(tmp_path: Path) -> None:
    def crash_on_replace(src: Path, dst: Path) -> None:
        raise Crash

    LkgStore(tmp_path).save(1, body(1))
    store = LkgStore(tmp_path, replace=crash_on_replace)
    with pytest.raises(Crash):
        store.save(2, body(2))
    newest = store.newest()
    assert newest is not None
    assert newest.version == 1
    assert store.listing() == ("snapshot-000000000001.lkg",)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_failed_fsync_publishes_nothing(tmp_path: Path) -> None:
    calls: list[int] = []

    def failing_fsync(fd: int) -> None:
        calls.append(fd)
        raise OSError(5, "Input/output error")

    LkgStore(tmp_path).save(1, body(1))
    with pytest.raises(OSError):
        LkgStore(tmp_path, fsync=failing_fsync).save(2, body(2))
    assert calls  # the file was fsynced before any rename
    assert LkgStore(tmp_path).listing() == ("snapshot-000000000001.lkg",)


def test_a_leftover_half_written_temporary_is_never_read(tmp_path: Path) -> None:
    store = LkgStore(tmp_path)
    store.save(1, body(1))
    # What a power cut mid-write leaves: a temporary file, never renamed.
    (tmp_path / ".snapshot-000000000002.1234.tmp").write_bytes(b'{"format":"portcullis-lkg/1"')
    newest = store.newest()
    assert newest is not None
    assert newest.version == 1


def test_the_rename_is_fsynced_with_the_directory(tmp_path: Path) -> None:
    synced: list[str] = []

    def fsync(fd: int) -> None:
        synced.append("dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "file")
        os.fsync(fd)

    LkgStore(tmp_path, fsync=fsync).save(1, body(1))
    assert synced == ["file", "dir"]


def test_a_generation_made_from_deltas_carries_them_in_its_header(tmp_path: Path) -> None:
    store = LkgStore(tmp_path)
    first = store.save(1, body(1))
    deltas = [{"set": {"routes": [{"name": "r2"}]}}]
    store.save(2, body(2), (1, first.checksum, deltas))
    step = store.step(1, first.checksum)
    assert step is not None
    assert (step.version, step.checksum, step.deltas) == (
        2,
        hashlib.sha256(body(2)).hexdigest(),
        deltas,
    )
    # Only from exactly that version and checksum.
    assert store.step(1, "another") is None
    assert store.step(0, first.checksum) is None
    # Still a whole snapshot for whoever reads it whole.
    newest = store.newest()
    assert newest is not None
    assert newest.document() == {"routes": [{"name": "r2"}]}


def test_header_deltas_that_do_not_check_out_are_not_used(tmp_path: Path) -> None:
    store = LkgStore(tmp_path)
    first = store.save(1, body(1))
    store.save(2, body(2), (1, first.checksum, [{"set": {"routes": []}}]))
    _, path = store.generations()[0]
    path.write_bytes(path.read_bytes().replace(b'"routes":[]', b'"routes":[1]', 1))
    assert store.step(1, first.checksum) is None


def test_large_deltas_stay_out_of_the_header(tmp_path: Path) -> None:
    store = LkgStore(tmp_path)
    first = store.save(1, body(1))
    big = [{"set": {"routes": [{"name": "x" * (MAX_HEADER_DELTAS + 1)}]}}]
    store.save(2, body(2), (1, first.checksum, big))
    assert store.step(1, first.checksum) is None
