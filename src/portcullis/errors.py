"""Errors meant for a user: printed without a traceback by the CLI."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix (bad input, missing file, unreachable store).

    The CLI prints `message` and exits with `exit_code`; `--debug` adds the traceback.
    """

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
