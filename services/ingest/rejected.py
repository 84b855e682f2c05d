"""The one refusal every decision raises: a command that must not produce events, and why."""

from __future__ import annotations


class Rejected(Exception):
    """``status`` is the HTTP status the gateway answers with; ``message`` goes into its error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
