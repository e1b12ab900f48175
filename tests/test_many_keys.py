"""A million distinct keys through a 100,000-key limiter: bounded, prompt and never lax.

Each run drives ``await limiter.hit`` from one task with a ``FakeClock`` as the limiter's
clock: virtual time barely moves, so every key stays live, the store is full of live keys
and each admitted new key evicts one into the sketch (the worst case). It measures the
bytes held per key (``sys.getsizeof`` over the store's structures) and re-hits earlier
keys, long evicted, checking that none is ever admitted above its limit.

*Prompt* is counted, never timed (a timed bound flakes on a shared machine and says
nothing about its cause). The table's containers are replaced, before the first hit, by
subclasses that keep the point operations of ``dict`` and ``deque`` (a lookup, a store, a
delete, an append, ``popleft``: O(1), C code as before) and count every element that a
traversal would visit: iterating a dict or its views, copying or clearing one, iterating
the deque, searching it (``in``, ``index``, ``remove``), indexing into its middle,
rotating it. Per call, the test requires:

- at most ``MAX_VISITED_PER_CALL`` elements visited (the store looks at its two oldest
  keys and may rotate them to the back: a pass over the keys visits thousands);
- at most two keys dropped or evicted (the same two oldest keys);
- the sketch (``max_keys`` slots) allocated at most once in the whole run;
- every dict holding at most ``MAX_SHARD_KEYS`` keys (checked every 4,096 calls): a
  dict rebuilds its whole table in one go now and then, which for one dict of 100,000
  keys is a pause of milliseconds.

The million keys run once, on asyncio, with the token bucket; the other runs take
160,000 keys (which already evict 60,000 live ones): the store is synchronous code, the
same under both backends.
"""

from __future__ import annotations

import random
import sys
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, SupportsIndex

import pytest

import brace
from brace._core.gcra import GCRA
from brace._core.window import SlidingLog, SlidingLogCore, SlidingWindowCounter
from brace._store import Policy, _AnyTable
from brace.testing import FakeClock

MAX_KEYS = 100_000
# Generous: a key costs about 150 bytes (its str, its state, a dict entry, a deque slot).
MAX_BYTES_PER_KEY = 600
# A SlidingLogCore holds a deque, whose first block alone is about 600 bytes.
MAX_LOG_BYTES_PER_KEY = 2000
# A constant, whatever the number of keys: a new key rotates at most its two oldest.
MAX_VISITED_PER_CALL = 8
# The store splits its keys into dicts of about 8,192 keys (hash-spread: 100,000 keys in
# 16 dicts is about 6,250 each); twice that is never reached by chance.
MAX_SHARD_KEYS = 16_384


class Visits:
    """Elements visited by traversals of the table's containers, in total."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


class CountingDict(dict[str, Any]):
    """A dict whose O(1) operations are the dict's own and whose traversals count every
    key they visit (counted when the traversal starts, the whole dict: an upper bound)."""

    __slots__ = ("visits",)

    def __init__(self, visits: Visits) -> None:
        super().__init__()
        self.visits = visits

    def _visit(self) -> None:
        self.visits.count += len(self)

    def __iter__(self) -> Iterator[str]:
        self._visit()
        return super().__iter__()

    def __reversed__(self) -> Iterator[str]:
        self._visit()
        return super().__reversed__()

    def keys(self) -> Any:
        self._visit()
        return super().keys()

    def values(self) -> Any:
        self._visit()
        return super().values()

    def items(self) -> Any:
        self._visit()
        return super().items()

    def copy(self) -> dict[str, Any]:
        self._visit()
        return super().copy()

    def clear(self) -> None:
        self._visit()
        super().clear()

    def __or__(self, other: Any) -> Any:
        self._visit()
        return super().__or__(other)

    def __eq__(self, other: object) -> bool:
        self._visit()
        return super().__eq__(other)


class CountingDeque(deque[str]):
    """A deque whose O(1) operations are the deque's own and whose traversals count the
    elements they visit (a search counts the whole deque: an upper bound)."""

    def __init__(self, visits: Visits) -> None:
        super().__init__()
        self.visits = visits

    def _visit(self, count: int | None = None) -> None:
        self.visits.count += len(self) if count is None else count

    def __iter__(self) -> Iterator[str]:
        self._visit()
        return super().__iter__()

    def __reversed__(self) -> Iterator[str]:
        self._visit()
        return super().__reversed__()

    def __contains__(self, item: object) -> bool:
        self._visit()
        return super().__contains__(item)

    def __getitem__(self, index: SupportsIndex) -> str:  # type: ignore[override]
        position = index.__index__() % max(len(self), 1)
        self._visit(min(position, len(self) - 1 - position))  # 0 at either end
        return super().__getitem__(index)

    def index(self, item: str, start: int = 0, stop: int = sys.maxsize) -> int:
        self._visit()
        return super().index(item, start, stop)

    def count(self, item: str) -> int:
        self._visit()
        return super().count(item)

    def remove(self, item: str) -> None:
        self._visit()
        super().remove(item)

    def rotate(self, n: int = 1) -> None:
        steps = abs(n) % max(len(self), 1)
        self._visit(min(steps, len(self) - steps))
        super().rotate(n)

    def reverse(self) -> None:
        self._visit()
        super().reverse()

    def copy(self) -> Any:
        self._visit()
        return deque(super().__iter__())

    def __copy__(self) -> Any:
        return self.copy()

    def clear(self) -> None:
        self._visit()
        super().clear()

    def extend(self, iterable: Iterable[str]) -> None:
        items = list(iterable)
        self._visit(len(items))
        super().extend(items)


def count_visits(table: _AnyTable) -> Visits:
    """Replace the (still empty) table's dicts and deque by counting ones, in place."""
    assert not table.order
    visits = Visits()
    for shards in (table.shards, table.long_shards):
        for index in range(len(shards)):
            shards[index] = CountingDict(visits)  # the hit closure holds this very list
    table.order = CountingDeque(visits)
    return visits


def held_bytes(table: _AnyTable) -> int:
    """Bytes held by the table: dicts, deque, sketch, keys and states."""
    total = sys.getsizeof(table.shards) + sys.getsizeof(table.order)
    total += sum(sys.getsizeof(states) for states in table.shards)
    sketch = table.sketch
    if isinstance(sketch, array):
        total += sys.getsizeof(sketch)
    elif sketch is not None:
        total += sys.getsizeof(sketch)
        total += sum(sys.getsizeof(slot) for slot in sketch if slot is not None)
    for key, state in (item for states in table.shards for item in states.items()):
        total += sys.getsizeof(key) + sys.getsizeof(state)
        if isinstance(state, SlidingLogCore):
            total += sys.getsizeof(state.entries)
            total += sum(sys.getsizeof(entry) for entry in state.entries)
    return total


@pytest.mark.anyio
@pytest.mark.parametrize(
    "policy",
    [GCRA(1, 3600.0, burst=2), SlidingWindowCounter(2, 3600.0), SlidingLog(2, 3600.0)],
    ids=["gcra", "counter", "log"],
)
async def test_many_keys(policy: Policy, anyio_backend_name: str) -> None:
    """Memory stays bounded, every call does bounded work, no evicted key exceeds its limit."""
    keys = 1_000_000 if anyio_backend_name == "asyncio" and isinstance(policy, GCRA) else 160_000
    clock = FakeClock(10.0)
    store = brace.MemoryStore(MAX_KEYS, clock=clock)
    table = store.table_for(policy)
    visits = count_visits(table)
    limiter = brace.RateLimiter(policy, store=store, clock=clock)
    most_visited = most_removed = sketches = largest_shard = 0
    sketch = table.sketch

    async def hit(key: str) -> bool:
        nonlocal most_visited, most_removed, sketches, sketch
        visited, removed = visits.count, table.evictions + table.drops
        decision = await limiter.hit(key)
        most_visited = max(most_visited, visits.count - visited)
        most_removed = max(most_removed, table.evictions + table.drops - removed)
        if table.sketch is not sketch:
            sketches += 1
            sketch = table.sketch
        return decision.allowed

    rng = random.Random(7)
    first_allowed = bytearray(keys)  # 1 if key i was admitted on its first hit
    admitted: dict[int, int] = {}  # re-hit keys -> tokens admitted in total
    peak_bytes = 0
    for index in range(keys):
        first_allowed[index] = await hit(f"client:{index}")
        if index % 97 == 0 and index > MAX_KEYS:
            # An earlier key, most likely evicted while live: hit it until refused.
            old = rng.randrange(index - MAX_KEYS // 2) if rng.random() < 0.5 else index - 1
            count = admitted.get(old, first_allowed[old])
            for _ in range(3):
                count += await hit(f"client:{old}")
            admitted[old] = count
        if index % 4096 == 0 or index == keys - 1:
            largest_shard = max(largest_shard, *map(len, table.shards))
        if index in (MAX_KEYS + MAX_KEYS // 2, keys - 1):
            peak_bytes = max(peak_bytes, held_bytes(table))
        clock.advance(1e-6)
    statistics = limiter.statistics()
    per_key = peak_bytes / MAX_KEYS
    print(
        f"\n{anyio_backend_name} {policy!r}: {keys} keys, held {statistics.keys}, "
        f"evictions {statistics.evictions}, {per_key:.0f} bytes per key held; per call at "
        f"most {most_visited} elements visited, {most_removed} keys removed; "
        f"{sketches} sketch allocations; largest dict {largest_shard} keys; "
        f"first hits admitted {sum(first_allowed) / keys:.0%}"
    )
    assert statistics.keys == MAX_KEYS
    assert statistics.evictions > keys // 4
    assert per_key < (
        MAX_LOG_BYTES_PER_KEY if isinstance(policy, SlidingLog) else MAX_BYTES_PER_KEY
    )
    # Bounded work per call, whatever the number of keys held.
    assert most_visited <= MAX_VISITED_PER_CALL
    assert most_removed <= 2
    assert sketches == 1
    assert largest_shard <= MAX_SHARD_KEYS
    # Virtual time moved less than a second: each key may have at most 2 tokens, ever.
    assert len(admitted) > 500
    assert max(admitted.values()) <= 2


def test_counting_containers_count_traversals() -> None:
    """The counting dict and deque see the traversals a sweep would make, not point
    operations: the count above would otherwise pass for want of seeing anything."""
    visits = Visits()
    states = CountingDict(visits)
    order = CountingDeque(visits)
    for index in range(100):
        states[f"k{index}"] = index
        order.append(f"k{index}")
    assert states.get("k1") == 1
    assert order[0] == "k0"
    assert order[-1] == "k99"
    del states["k0"]
    order.popleft()
    order.rotate(-1)
    assert visits.count == 1
    sweeps: list[Callable[[], object]] = [
        lambda: list(states),
        lambda: [key for key, _ in states.items()],
        lambda: max(states.values()),
        lambda: dict(states),
        lambda: {**states},
        lambda: states.copy(),
        lambda: sorted(order),
        lambda: "absent" in order,
        lambda: order[50],
        lambda: order.rotate(40),
    ]
    for sweep in sweeps:
        before = visits.count
        sweep()
        assert visits.count - before >= 40
