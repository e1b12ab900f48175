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
