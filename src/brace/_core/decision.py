from __future__ import annotations

from dataclasses import dataclass

from ._inline import step

__all__ = ("Decision",)


class Draft:
    """`Decision`'s slots, without its frozen ``__setattr__`` or an ``__init__``: the hot
    paths' way to build one, and `Decision`'s base class (which holds its slots).

    Creating a draft (``Draft()``: no Python ``__init__`` frame), filling its five slots and
    retyping it (``draft.__class__ = Decision``) yields a genuine, frozen, equal-comparing
    ``Decision`` for about a third of the cost of calling ``Decision(...)``: plain slot
    stores instead of descriptor calls. Because the slots are the draft's own and
    `Decision` adds none, the retyping finds both classes on the same base at once
    (CPython compares the slot names of two classes that merely share a layout:
    ``python -m benchmarks.breakdown hit``, line 13, 159-188 ns a decision then, 140-142
    now). Used where a decision is built on every call (the keyed store). A draft must be
    filled completely before it is retyped: an unset slot would raise ``AttributeError``
    when read.
    """

    __slots__ = ("allowed", "limit", "remaining", "retry_after", "reset_after")  # noqa: RUF023

    allowed: bool
    limit: int
    remaining: int
    retry_after: float
    reset_after: float


@dataclass(frozen=True)
class Decision(Draft):
    """A rate limiter's answer to one request.

    ``allowed``: whether the request was admitted (and its cost consumed).
    ``limit``: the most the limiter admits at once (a bucket's burst, a window's limit).
    ``remaining``: how much more could be admitted right now, after this request.
    ``retry_after``: seconds until a request of the same cost would be admitted (0 if allowed).
    ``reset_after``: seconds until the limiter is back to its full, at-rest state.
    """

    __slots__ = ()  # (its fields are the slots of its base, `Draft`)

    allowed: bool
    limit: int
    remaining: int
    retry_after: float
    reset_after: float

    def __bool__(self) -> bool:
        return self.allowed

    def __getstate__(self) -> tuple[bool, int, int, float, float]:
        return (self.allowed, self.limit, self.remaining, self.retry_after, self.reset_after)

    def __setstate__(self, state: tuple[bool, int, int, float, float]) -> None:
        # (pickle and copy: frozen, so written through object's own __setattr__)
        for name, value in zip(Draft.__slots__, state, strict=True):
            object.__setattr__(self, name, value)


def _install_fast_init() -> None:
    # A frozen dataclass's generated __init__ goes through object.__setattr__ for each
    # field; writing through the slot descriptors directly halves the cost, which matters
    # because a Decision is built on every limiter call. Same signature, same behaviour.
    slots = vars(Draft)
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
    draft.__class__ = Decision
    return draft  # type: ignore[return-value]
