from __future__ import annotations

import enum

from ._core._validate import shown

__all__ = ("MAX_PRIORITY", "Priority", "check_priority")


class Priority(enum.IntEnum):
    """How urgent a piece of work is: lower values are served first.

    The named classes are ten units apart, so any int is a finer priority:
    ``Priority.HIGH + 5`` sits between HIGH and MEDIUM, a negative value is more urgent
    than HIGH. Aging moves a waiting item up one class (ten units) every ``aging`` seconds.
    """

    HIGH = 0
    MEDIUM = 10
    LOW = 20


#: Priorities are kept within ``-MAX_PRIORITY..MAX_PRIORITY`` (2**53): with ``aging`` the
#: queue orders waiters by a float key, ``priority + 10 * waited / aging``, and a float
#: holds every int in that range exactly (a larger int does not convert at all).
MAX_PRIORITY = 2**53


def check_priority(value: object, name: str = "priority") -> int:
    """An int priority (a `Priority` or any finer int; not a bool) within
    ``-MAX_PRIORITY..MAX_PRIORITY``, returned unchanged."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{name} must be an int (a brace.Priority or a finer int), got {type(value).__name__}"
        )
    if not -MAX_PRIORITY <= value <= MAX_PRIORITY:
        raise ValueError(
            f"{name} must be an int between {-MAX_PRIORITY} and {MAX_PRIORITY} (the range a "
            f"float queue key holds exactly), got {shown(value)}"
        )
    return value
