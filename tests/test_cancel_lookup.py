"""``brace._cancel.running_loop``: asyncio's ``_get_running_loop()`` without, before 3.12,
its ``getpid()`` system call: the loop found last is taken again while it runs in this
thread. It must answer what asyncio answers in every case the cache could get wrong:
sequential loops, loops in two threads at once, a stopped loop, uvloop, trio, a fork.
And ``scope_of``: anyio's innermost scope of a task, read without anyio's frames."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
from typing import Any

import anyio
import pytest

from brace import PriorityExecutor
from brace._cancel import LAST_LOOP, NATIVE, running_loop, scope_of


def _agrees() -> bool:
    return running_loop() is asyncio._get_running_loop()


async def test_the_running_loop_or_none_on_trio(anyio_backend_name: str) -> None:
    if anyio_backend_name == "asyncio":
        assert running_loop() is asyncio.get_running_loop()
        assert running_loop() is asyncio.get_running_loop()  # (from the cache, before 3.12)
    else:
        assert running_loop() is None


def test_sequential_loops_each_their_own() -> None:
    seen: list[Any] = []

    async def main() -> None:
        for _ in range(3):
            seen.append(running_loop())
            assert _agrees()
            await asyncio.sleep(0)

    asyncio.run(main())
    assert running_loop() is None  # the loop stopped: not answered from the cache
    asyncio.run(main())
    assert running_loop() is None
    assert seen[0] is seen[1] is seen[2]
    assert seen[3] is seen[4] is seen[5]
    assert seen[0] is not seen[3]


def test_loops_in_two_threads_at_once() -> None:
    """Two threads run a loop each, taking turns at the GIL: each thread always finds its
    own loop (the cache holds the other thread's loop half of the time)."""
    start = threading.Barrier(2)
    wrong: list[str] = []

    async def main(name: str) -> None:
        start.wait()
        mine = asyncio.get_running_loop()
        for _ in range(2000):
            if running_loop() is not mine:
                wrong.append(name)
            await asyncio.sleep(0)

    threads = [threading.Thread(target=asyncio.run, args=(main(name),)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


def test_a_loop_inside_a_thread_after_the_main_one() -> None:
    """The cache holds the main thread's loop (stopped); a thread's loop is found."""

    async def main() -> Any:
        assert _agrees()
        return asyncio.get_running_loop()

    first = asyncio.run(main())
    found: list[Any] = []
    thread = threading.Thread(target=lambda: found.append(asyncio.run(main())))
    thread.start()
    thread.join()
    assert found
    assert found[0] is not first
    assert running_loop() is None


def test_uvloop_is_looked_up_each_time() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        for _ in range(3):
            assert running_loop() is asyncio.get_running_loop()
            await asyncio.sleep(0)
        # uvloop's loop has no _thread_id to check it by: never kept (nor is any loop
        # from 3.12, where asyncio's own lookup is used)
        assert LAST_LOOP[0] is None

    uvloop.run(main())


def test_trio_after_asyncio_finds_none() -> None:
    pytest.importorskip("trio")

    async def on_asyncio() -> None:
        assert _agrees()

    async def on_trio() -> None:
        assert running_loop() is None
        assert running_loop() is None

    asyncio.run(on_asyncio())
    anyio.run(on_trio, backend="trio")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_finds_no_loop() -> None:
    """asyncio's getpid() is there for this: a child forked inside a running loop's task
    has no running loop. Run in a fresh interpreter (forking pytest is unsafe)."""
    script = textwrap.dedent(
        """
        import asyncio, os, sys
        from brace._cancel import running_loop

        async def main():
            assert running_loop() is asyncio.get_running_loop()
            pid = os.fork()
            if pid == 0:
                ok = running_loop() is None and asyncio._get_running_loop() is None
                os._exit(0 if ok else 3)
            _, status = os.waitpid(pid, 0)
            sys.exit(os.waitstatus_to_exitcode(status))

        asyncio.run(main())
        """
    )
    done = subprocess.run([sys.executable, "-c", script], timeout=60, check=False)
    assert done.returncode == 0


async def test_scope_of_is_anyios_innermost_scope(anyio_backend_name: str) -> None:
    if anyio_backend_name != "asyncio":
        pytest.skip("anyio's task states are asyncio's")
    task = asyncio.current_task()
    assert task is not None
    outer = scope_of(task)
    with anyio.CancelScope() as scope:  # noqa: ASYNC100 (entered to be found)
        assert scope_of(task) is scope
        with anyio.CancelScope(shield=True) as inner:  # noqa: ASYNC100
            assert scope_of(task) is inner
        assert scope_of(task) is scope
    assert scope_of(task) is outer

    async def plain() -> Any:
        current = asyncio.current_task()
        assert current is not None
        return scope_of(current)

    # a task anyio never saw has no state: no scope
    assert await asyncio.get_running_loop().create_task(plain()) is None


async def test_executor_run_after_a_loop_changed_threads() -> None:
    """run() reads the cached lookup inline: a loop run before (in another thread) does
    not mislead it; the job is recorded with this task, and drain finds nothing left."""
    if asyncio._get_running_loop() is None:
        pytest.skip("asyncio only")

    async def other() -> None:
        await asyncio.sleep(0)

    thread = threading.Thread(target=asyncio.run, args=(other(),))
    thread.start()
    thread.join()
    executor = PriorityExecutor(concurrency=2)
    me = asyncio.current_task()

    async def job() -> Any:
        return list(executor._tasks), len(executor._scopes)

    # recorded as its task on 3.11+ (the native path), in a cancel scope on 3.10
    assert await executor.run(job) == (([me], 0) if NATIVE else ([], 1))
    assert (await executor.drain(timeout=1.0)).cancelled == 0
