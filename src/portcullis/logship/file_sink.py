"""file-log's sink: JSON lines appended to a file, safe under log rotation.

Each batch is encoded and written in one `os.write` loop on a worker thread
(`asyncio.to_thread`), so the event loop never waits on the disk. Before each batch
the path is checked like Python's `WatchedFileHandler`: when the file there is not
the one held open (logrotate's `create`: renamed and a new file made, or removed),
it is reopened (created when missing). The file is opened with `O_APPEND`, so after
logrotate's `copytruncate` the next line lands at the new end, never after a hole;
a file found shorter than what this sink last saw is counted in `truncations`.
"""

from __future__ import annotations

import asyncio
import os
import threading

from portcullis.analytics.record import RequestRecord
from portcullis.logship.records import LineEncoder
from portcullis.logship.shipper import ShipError

_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


class FileSink:
    def __init__(self, path: str, *, mode: int = 0o640, encoder: LineEncoder | None = None) -> None:
        self.path = path
        self._encode = (encoder or LineEncoder()).lines
        self.mode = mode
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._size = 0
        self._lock = threading.Lock()
        self.reopened = 0
        self.truncations = 0

    def _open(self) -> int:
        fd = os.open(self.path, _FLAGS, self.mode)
        st = os.fstat(fd)
        self._fd, self._identity, self._size = fd, (st.st_dev, st.st_ino), st.st_size
        return fd

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def _current(self) -> int:
        """The descriptor to write to, reopened when the path names another file now."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        fd = self._fd
        if fd is not None and st is not None and (st.st_dev, st.st_ino) == self._identity:
            if st.st_size < self._size:
                self.truncations += 1
            self._size = st.st_size
            return fd
        if fd is not None:
            self.reopened += 1
            self._close_fd()
        return self._open()

    def write_lines(self, data: bytes) -> None:
        """Append `data` (blocking: runs on a worker thread)."""
        with self._lock:
            fd = self._current()
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            self._size += len(data)

    async def send(self, batch: list[RequestRecord]) -> None:
        data = self._encode(batch)
        try:
            await asyncio.to_thread(self.write_lines, data)
        except OSError as exc:
            with self._lock:
                self._close_fd()
            raise ShipError(f"{self.path}: {exc.strerror or exc}", retryable=True) from exc

    async def aclose(self) -> None:
        with self._lock:
            self._close_fd()
