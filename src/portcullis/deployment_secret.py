"""The deployment secret's bytes: from `PORTCULLIS_SECRET_KEY`, else its file (created once).

A leaf the identity layer (`identity.secrets`: API-key pepper, signing keys at rest)
and the store (`store.sealing`: certificate keys at rest) both derive their keys from.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import time
from pathlib import Path

from portcullis.errors import UserError


def read_deployment_secret(value: str | None, file: Path) -> bytes:
    """The secret from `value` (base64 or text), else from `file`, created on first use.

    Creation uses O_EXCL, so concurrent first starts (several workers) agree on one
    secret: the losers read the winner's file.
    """
    if value:
        try:
            raw = base64.b64decode(value, validate=True)
        except ValueError:
            raw = value.encode("utf-8")
        return raw
    file.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    for _ in range(50):
        text = file.read_text().strip()
        if text:
            return base64.b64decode(text)
        # Another process created the file and has not written it yet.
        time.sleep(0.01)
    raise UserError(f"secret_key_file: {file} is empty")
