"""Private key material as a file path for Python's `ssl`, which loads keys only from files.

On Linux the material goes into an anonymous in-memory file (`memfd_create`) opened as
`/proc/self/fd/N`: it never has a name on any file system. Elsewhere it goes into a
temporary file created 0600 and removed as soon as the caller is done.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def key_file(material: bytes) -> Iterator[str]:
    """A path holding `material` while the context lasts."""
    memfd = getattr(os, "memfd_create", None)
    if memfd is not None and os.path.isdir("/proc/self/fd"):
        fd = memfd("portcullis-key", getattr(os, "MFD_CLOEXEC", 0))
        try:
            os.write(fd, material)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    fd, path = tempfile.mkstemp(prefix="portcullis-", suffix=".pem")  # created 0600
    try:
        os.write(fd, material)
        os.close(fd)
        fd = -1
        yield path
    finally:
        if fd >= 0:
            os.close(fd)
        os.unlink(path)
