"""The one exception type for client mistakes: the API turns it into a 4xx with a JSON body."""

from __future__ import annotations


class ClientError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
