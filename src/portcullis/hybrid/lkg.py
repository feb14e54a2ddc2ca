"""Last-known-good config on a data-plane node's disk (`PORTCULLIS_LKG_DIR`).

Every snapshot the node applies is written as one file, `snapshot-<generation>.lkg`:
a JSON header line, then the config's canonical JSON text (the body). The header
holds the config version, the body's length and its sha256 — which is the version's
checksum as the control plane stores it (sha256 of the canonical text), so one
number proves both that the file is whole and that it is the control plane's config.

Writing is atomic: a temporary file in the same directory is written and fsynced,
renamed over its final name (rename is atomic within a file system), and the
directory is fsynced so the rename itself survives a power cut. A crash at any step
leaves either the new file complete or no new file; a leftover temporary file is
never read (and `sweep` removes it). The newest `keep` (2) generations are kept.

Reading (`newest`) tries the generations newest first and returns the first that is
whole: a truncated or altered newest file falls back to the one before it. Nothing
here ever yields an empty config while a valid snapshot exists.

A generation made from deltas also carries them in its header (`from`, `from_checksum`,
`deltas`, `deltas_sha256`; only when they are small): a reader that holds exactly the
version and checksum they start from reads that one line (`step`) and applies them to
the document it has, instead of reading and parsing the whole body — O(change) for the
node's workers as on the wire.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

FORMAT = "portcullis-lkg/1"
KEEP = 2
_NAME = re.compile(r"^snapshot-(\d{12})\.lkg$")
# Generations set aside (`sweep`) still count: a new generation is numbered above them.
_ANY_NAME = re.compile(r"^snapshot-(\d{12})\.lkg(\.corrupt)?$")
_TEMP_PREFIX = ".snapshot-"
# A header line holds at most MAX_HEADER_DELTAS bytes of deltas; a longer first line is
# not a header.
MAX_HEADER_DELTAS = 256 * 1024
_MAX_HEADER = MAX_HEADER_DELTAS + 4096


class CorruptSnapshot(Exception):
    """A snapshot file that is not whole (truncated, altered, not ours)."""


@dataclass(frozen=True, slots=True)
class StoredSnapshot:
    """One valid generation: the config `version`, its canonical text and when the node
    received it (epoch seconds)."""

    path: Path
    generation: int
    version: int
    checksum: str
    received_at: float
    body: bytes

    def document(self) -> dict[str, Any]:
        from portcullis.model.bulk import gc_paused

        with gc_paused():
            parsed = json.loads(self.body)
        if not isinstance(parsed, dict):
            raise CorruptSnapshot(f"{self.path.name}: the body is not a config document")
        return parsed


@dataclass(frozen=True, slots=True)
class Step:
    """How a generation follows from the one before it: `deltas` lead from version
    `start` (checksum `start_checksum`) to `version` (`checksum`)."""

    start: int
    start_checksum: str
    version: int
    checksum: str
    deltas: list[dict[str, Any]]


def _deltas_text(deltas: list[dict[str, Any]]) -> str:
    return json.dumps(deltas, sort_keys=True, separators=(",", ":"))


def encode(
    version: int,
    body: bytes,
    received_at: float,
    step: tuple[int, str, list[dict[str, Any]]] | None = None,
) -> bytes:
    """A snapshot file's bytes: header line and body; `step` (version and checksum it
    starts from, deltas) goes into the header when the deltas are small."""
    header: dict[str, Any] = {
        "format": FORMAT,
        "version": version,
        "checksum": hashlib.sha256(body).hexdigest(),
        "length": len(body),
        "received_at": received_at,
    }
    if step is not None:
        start, start_checksum, deltas = step
        text = _deltas_text(deltas)
        if len(text) <= MAX_HEADER_DELTAS:
            header["from"] = start
            header["from_checksum"] = start_checksum
            header["deltas"] = deltas
            header["deltas_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + body


def decode(path: Path, data: bytes, generation: int) -> StoredSnapshot:
    """The snapshot in `data` (a file's bytes); `CorruptSnapshot` unless it is whole."""
    end = data.find(b"\n", 0, _MAX_HEADER)
    if end < 0:
        raise CorruptSnapshot(f"{path.name}: no header line")
    try:
        header = json.loads(data[:end])
    except ValueError:
        raise CorruptSnapshot(f"{path.name}: the header is not JSON") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CorruptSnapshot(f"{path.name}: not a {FORMAT} file")
    body = data[end + 1 :]
    version, checksum, length = header.get("version"), header.get("checksum"), header.get("length")
    received = header.get("received_at")
    if not isinstance(version, int) or not isinstance(checksum, str) or length != len(body):
        raise CorruptSnapshot(f"{path.name}: truncated ({len(body)} of {length} body bytes)")
    if hashlib.sha256(body).hexdigest() != checksum:
        raise CorruptSnapshot(f"{path.name}: checksum mismatch")
    return StoredSnapshot(
        path,
        generation,
        version,
        checksum,
        float(received) if isinstance(received, int | float) else 0.0,
        body,
    )


class LkgStore:
    """The snapshot generations in `directory` (created on first write).

    `fsync` and `replace` are the file system's, replaceable for fault injection."""

    def __init__(
        self,
        directory: Path,
        *,
        keep: int = KEEP,
        fsync: Callable[[int], None] = os.fsync,
        replace: Callable[[Path, Path], None] = os.replace,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.keep = keep
        self._fsync = fsync
        self._replace = replace
        self._clock = clock

    def generations(self, pattern: re.Pattern[str] = _NAME) -> list[tuple[int, Path]]:
        """(generation, path) of every snapshot file, newest first (not read)."""
        found: list[tuple[int, Path]] = []
        try:
            entries = os.scandir(self.directory)
        except FileNotFoundError:
            return []
        with entries:
            for entry in entries:
                match = pattern.match(entry.name)
                if match is not None:
                    found.append((int(match.group(1)), Path(entry.path)))
        found.sort(reverse=True)
        return found

    def listing(self) -> tuple[str, ...]:
        """The snapshot file names, newest first: changes whenever a generation is written."""
        return tuple(path.name for _, path in self.generations())

    def read(self, generation: int, path: Path) -> StoredSnapshot:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CorruptSnapshot(f"{path.name}: unreadable ({exc.strerror})") from None
        return decode(path, data, generation)

    def step(self, version: int, checksum: str) -> Step | None:
        """The deltas from `version` (with `checksum`) to the newest generation, read from
        its header line alone; None when it carries none from exactly there (then read
        the whole snapshot: `newest`)."""
        generations = self.generations()
        if not generations:
            return None
        try:
            with open(generations[0][1], "rb") as stream:
                line = stream.readline(_MAX_HEADER)
            header = json.loads(line)
        except (OSError, ValueError):
            return None
        if (
            not isinstance(header, dict)
            or header.get("format") != FORMAT
            or header.get("from") != version
            or header.get("from_checksum") != checksum
        ):
            return None
        deltas, target, target_checksum = (
            header.get("deltas"),
            header.get("version"),
            header.get("checksum"),
        )
        if (
            not isinstance(deltas, list)
            or not isinstance(target, int)
            or not isinstance(target_checksum, str)
            or hashlib.sha256(_deltas_text(deltas).encode()).hexdigest()
            != header.get("deltas_sha256")
        ):
            return None
        return Step(version, checksum, target, target_checksum, deltas)

    def newest(self) -> StoredSnapshot | None:
        """The newest whole snapshot (older generations when newer ones are corrupt)."""
        for generation, path in self.generations():
            try:
                return self.read(generation, path)
            except CorruptSnapshot as exc:
                log.warning("lkg.snapshot_corrupt", file=str(path), error=str(exc))
        return None

    def save(
        self,
        version: int,
        body: bytes,
        step: tuple[int, str, list[dict[str, Any]]] | None = None,
    ) -> StoredSnapshot:
        """Write `body` (canonical config text of `version`) as the newest generation;
        `step`: the version and checksum it was made from, and the deltas (`encode`)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        generations = self.generations(_ANY_NAME)
        generation = generations[0][0] + 1 if generations else 1
        final = self.directory / f"snapshot-{generation:012d}.lkg"
        temp = self.directory / f"{_TEMP_PREFIX}{generation:012d}.{os.getpid()}.tmp"
        received = self._clock()
        data = encode(version, body, received, step)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with open(fd, "wb", closefd=True) as out:
                out.write(data)
                out.flush()
                self._fsync(out.fileno())
            self._replace(temp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        self._sync_directory()
        self._prune()
        return decode(final, data, generation)

    def sweep(self) -> list[Path]:
        """Move corrupt generations aside (`*.corrupt`, kept for inspection, never read)
        and delete leftover temporary files; the paths moved aside."""
        moved: list[Path] = []
        for generation, path in self.generations():
            try:
                self.read(generation, path)
            except CorruptSnapshot as exc:
                aside = path.with_name(path.name + ".corrupt")
                with contextlib.suppress(OSError):
                    os.replace(path, aside)
                    moved.append(aside)
                    log.warning("lkg.snapshot_set_aside", file=str(aside), error=str(exc))
        with contextlib.suppress(FileNotFoundError), os.scandir(self.directory) as entries:
            for entry in entries:
                if entry.name.startswith(_TEMP_PREFIX) and entry.name.endswith(".tmp"):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
        return moved

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            self._fsync(fd)
        finally:
            os.close(fd)

    def _prune(self) -> None:
        for _, path in self.generations()[self.keep :]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
