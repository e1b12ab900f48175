from __future__ import annotations

from dataclasses import dataclass

from ._inline import step

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


def _install_fast_init() -> None:
    # A frozen dataclass's generated __init__ goes through object.__setattr__ for each
    # field; writing through the slot descriptors directly halves the cost, which matters
    # because a Decision is built on every limiter call. Same signature, same behaviour.
    slots = vars(Decision)
    set_allowed = slots["allowed"].__set__
    set_limit = slots["limit"].__set__
    set_remaining = slots["remaining"].__set__
    set_retry_after = slots["retry_after"].__set__
    set_reset_after = slots["reset_after"].__set__

    def __init__(
        self: Decision,
        allowed: bool,
        limit: int,
        remaining: int,
        retry_after: float,
        reset_after: float,
    ) -> None:
        set_allowed(self, allowed)
        set_limit(self, limit)
        set_remaining(self, remaining)
        set_retry_after(self, retry_after)
        set_reset_after(self, reset_after)

    __init__.__qualname__ = "Decision.__init__"
    __init__.__doc__ = Decision.__init__.__doc__
    Decision.__init__ = __init__  # type: ignore[method-assign]


_install_fast_init()


class Draft:
    """`Decision`'s exact slot layout without its frozen ``__setattr__`` or an ``__init__``:
    the hot paths' way to build one.

    Creating a draft (``Draft()``: no Python ``__init__`` frame), filling its five slots and
    retyping it (``draft.__class__ = Decision``, allowed because the layouts match) yields a
    genuine, frozen, equal-comparing ``Decision`` for about a third of the cost of calling
    ``Decision(...)``: plain slot stores instead of descriptor calls. Used where a decision
    is built on every call (the keyed store). A draft must be filled completely before it
    is retyped: an unset slot would raise ``AttributeError`` when read.
    """

    __slots__ = ("allowed", "limit", "remaining", "retry_after", "reset_after")  # noqa: RUF023

    allowed: bool
    limit: int
    remaining: int
    retry_after: float
    reset_after: float


assert Draft.__slots__ == Decision.__slots__, "Draft must keep Decision's slot layout"


@step
def drafted(
    allowed: bool, limit: int, remaining: int, retry_after: float, reset_after: float
) -> Decision:
    """``Decision(allowed, limit, remaining, retry_after, reset_after)`` made through a
    `Draft`: the keyed stores' way to build one per call, inlined into them (`step`)."""
    draft = Draft()
    draft.allowed = allowed
    draft.limit = limit
    draft.remaining = remaining
    draft.retry_after = retry_after
    draft.reset_after = reset_after
    draft.__class__ = Decision  # type: ignore[assignment]
    return draft  # type: ignore[return-value]
