from __future__ import annotations

from dataclasses import dataclass

__all__ = ("Decision",)


@dataclass(frozen=True, slots=True)
class Decision:
    """A rate limiter's answer to one request.

    ``allowed``: whether the request was admitted (and its cost consumed).
    ``limit``: the most the limiter admits at once (a bucket's burst, a window's limit).
    ``remaining``: how much more could be admitted right now, after this request.
    ``retry_after``: seconds until a request of the same cost would be admitted (0 if allowed).
    ``reset_after``: seconds until the limiter is back to its full, at-rest state.
    """

    allowed: bool
    limit: int
    remaining: int
    retry_after: float
    reset_after: float

    def __bool__(self) -> bool:
        return self.allowed
