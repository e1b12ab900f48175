from __future__ import annotations

import enum

__all__ = ("Priority",)


class Priority(enum.IntEnum):
    """How urgent a piece of work is: lower values are served first.

    The named classes are ten units apart, so any int is a finer priority:
    ``Priority.HIGH + 5`` sits between HIGH and MEDIUM, a negative value is more urgent
    than HIGH. Aging moves a waiting item up one class (ten units) every ``aging`` seconds.
    """

    HIGH = 0
    MEDIUM = 10
    LOW = 20


def check_priority(value: object, name: str = "priority") -> int:
    """An int priority (a `Priority` or any finer int; not a bool), returned unchanged."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int (a brace.Priority or a finer int), got {value!r}")
    return value
