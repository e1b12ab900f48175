"""Issue 19, items 1 (memory half) and 6 (keys): key text is data, and no key is large.

Any ``str`` is a key of the memory store (lone surrogates, NUL, a megabyte of text); a
key that is no ``str`` is a ``TypeError`` for that one call; a long key is held as a
fixed-size digest. After any of them, a normal key's decisions are exactly as without
them. The fuzz runs each example on asyncio and on trio (``anyio.run``; the memory store
decides synchronously, so no time passes on the loop: a ``FakeClock`` is the limiter's
clock).
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import brace
from brace._keys import MAX_KEY_LENGTH, bound_key
from brace.testing import FakeClock

BACKENDS = ("asyncio", "trio")

POLICIES: dict[str, Callable[[], Any]] = {
    "bucket": lambda: brace.TokenBucket(3, per=60.0),
    "window": lambda: brace.SlidingWindow(3, 60.0),
    "log": lambda: brace.SlidingWindow(3, 60.0, exact=True),
}

HOSTILE_TEXTS = [
    "\ud800",  # a lone surrogate, what json.loads('"\\ud800"') returns
    "\udfff\ud800",
    "\x00",
    "bob\x00",
    "",
    "\U0010ffff",
    "x" * (MAX_KEY_LENGTH - 1),
    "x" * MAX_KEY_LENGTH,
    "\ud800" * (MAX_KEY_LENGTH + 1),
    "y" * 2**20,
]
NOT_STR: list[object] = [b"bob", bytearray(b"bob"), memoryview(b"bob"), 42, None, ("bob",), ["bob"]]


def held_keys(limiter: brace.RateLimiter) -> list[str]:
    """The keys held by the limiter's memory table, as stored."""
    table = limiter._table
    assert table is not None
    return list(table.order)


@pytest.mark.parametrize("kind", POLICIES)
async def test_item1_any_text_is_a_key_and_leaves_others_alone(kind: str) -> None:
    """Surrogates, NUL, empty and huge keys are counted as keys; "bob" keeps exactly his limit."""
    clock = FakeClock()
    limiter = brace.RateLimiter(POLICIES[kind](), clock=clock)
    for key in HOSTILE_TEXTS:
        decisions = [(await limiter.hit(key)).allowed for _ in range(4)]
        assert decisions == [True, True, True, False], repr(key[:20])
        assert not (await limiter.peek(key)).allowed
    assert [(await limiter.hit("bob")).allowed for _ in range(6)] == [True] * 3 + [False] * 3
    for key in HOSTILE_TEXTS:
        await limiter.reset(key)
        assert (await limiter.hit(key)).allowed, repr(key[:20])
    assert all(len(key) <= MAX_KEY_LENGTH for key in held_keys(limiter))


@pytest.mark.parametrize("kind", POLICIES)
@pytest.mark.parametrize("key", NOT_STR, ids=lambda key: type(key).__name__)
async def test_item1_a_key_that_is_no_str_is_a_type_error_for_that_call(
    kind: str, key: object
) -> None:
    """A bytes, int, None, tuple or list key raises TypeError from every call; others unaffected."""
    limiter = brace.RateLimiter(POLICIES[kind](), clock=FakeClock())
    assert (await limiter.hit("bob")).allowed
    calls: list[Callable[[], Any]] = [
        lambda: limiter.hit(key),  # type: ignore[arg-type]
        lambda: limiter.peek(key),  # type: ignore[arg-type]
        lambda: limiter.reset(key),  # type: ignore[arg-type]
        lambda: limiter.acquire(key),  # type: ignore[arg-type]
    ]
    for call in calls:
        with pytest.raises(TypeError, match="key must be a str"):
            await call()
    with pytest.raises(TypeError, match="key must be a str"):
        limiter.try_hit(key)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key must be a str"):
        limiter.limit(key)  # type: ignore[arg-type]
    assert [(await limiter.hit("bob")).allowed for _ in range(3)] == [True, True, False]


async def test_item1_bytes_keys_are_refused_with_a_hint() -> None:
    """A bytes key's TypeError says how to decode it into a distinct str key."""
    limiter = brace.RateLimiter("3/minute")
    with pytest.raises(TypeError, match="surrogateescape"):
        await limiter.hit(b"\xff")  # type: ignore[arg-type]


async def test_item1_a_str_subclass_is_the_same_key_as_its_text() -> None:
    """A str subclass is stored as plain text: it shares the budget of the equal str."""

    class Name(str):
        pass

    limiter = brace.RateLimiter("2/minute", clock=FakeClock())
    assert (await limiter.hit(Name("bob"))).allowed
    assert (await limiter.hit("bob")).allowed
    assert not (await limiter.hit(Name("bob"))).allowed
    assert all(type(key) is str for key in held_keys(limiter))


@pytest.mark.parametrize("kind", POLICIES)
async def test_item6_a_long_key_has_its_own_budget_and_no_alias(kind: str) -> None:
    """A long key is limited as itself: its digest's text, prefixes, other long keys are not it."""
    limiter = brace.RateLimiter(POLICIES[kind](), clock=FakeClock())
    long = "k" * 10_000
    assert [(await limiter.hit(long)).allowed for _ in range(4)] == [True] * 3 + [False]
    for other in (bound_key(long), long[: MAX_KEY_LENGTH - 1], long[:MAX_KEY_LENGTH], long + "k"):
        assert (await limiter.hit(other)).allowed, len(other)
    assert not (await limiter.peek(long)).allowed
    await limiter.reset(long)
    assert (await limiter.hit(long)).allowed


@pytest.mark.parametrize("kind", POLICIES)
def test_item6_a_hundred_megabyte_keys_are_not_held(kind: str) -> None:
    """100 keys of 1 MB through the limiter leave at most a few hundred KB held (was +98 MB)."""
    limiter = brace.RateLimiter(POLICIES[kind](), clock=FakeClock())
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(100):
            key = f"{i:03}" + "m" * 2**20
            assert limiter.try_hit(key).allowed
            del key
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    print(f"{kind}: {held / 1024:.0f} KiB held after 100 keys of 1 MiB")
    assert held < 512 * 1024  # measured about 40-100 KiB: 100 digests and their states
    assert len(held_keys(limiter)) == 100
    assert all(len(key) == MAX_KEY_LENGTH for key in held_keys(limiter))


# --- fuzz ------------------------------------------------------------------------------

any_char = st.characters(exclude_categories=())  # surrogates included
short_text = st.text(any_char, max_size=20)
long_text = st.builds(
    lambda text, times: (text or "z") * times,
    st.text(any_char, min_size=1, max_size=8),
    st.sampled_from([MAX_KEY_LENGTH, 2 * MAX_KEY_LENGTH, 2**20]),
)
hostile_key = st.one_of(
    short_text,
    long_text,
    st.sampled_from(HOSTILE_TEXTS),
    st.binary(max_size=8),
    st.integers(),
    st.none(),
    st.tuples(st.text(max_size=3)),
)
# (hostile key or None for "bob", seconds to advance before the call)
steps = st.lists(
    st.tuples(st.one_of(st.none(), hostile_key), st.sampled_from([0.0, 0.0, 1.0, 7.5, 30.0])),
    max_size=40,
)


def replay(
    backend: str, kind: str, script: list[tuple[object, float]], *, with_hostile: bool
) -> list[bool]:
    """Bob's decisions over ``script`` (the hostile calls made too, or left out)."""
    clock = FakeClock(1000.0)
    limiter = brace.RateLimiter(POLICIES[kind](), clock=clock)
    bob: list[bool] = []

    async def main() -> None:
        for key, advance in script:
            clock.advance(advance)
            if key is None:
                bob.append((await limiter.hit("bob")).allowed)
            elif with_hostile:
                try:
                    decision = await limiter.hit(key)  # type: ignore[arg-type]
                except TypeError:
                    assert not isinstance(key, str)
                else:
                    assert isinstance(key, str)
                    assert decision.remaining >= 0
                    assert decision.limit == 3

    anyio.run(main, backend=backend)
    return bob


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", POLICIES)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=steps)
def test_hostile_keys_fuzz_normal_key_unaffected(
    backend: str, kind: str, script: list[tuple[object, float]]
) -> None:
    """After any mix of hostile keys, "bob" gets exactly the decisions he gets without them."""
    script = [(key, advance) for key, advance in script if key != "bob"]
    hostile = replay(backend, kind, script, with_hostile=True)
    assert hostile == replay(backend, kind, script, with_hostile=False)
