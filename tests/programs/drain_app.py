"""A plain anyio program with work in flight that drains on SIGTERM.

Usage: ``python drain_app.py BACKEND WORK_SECONDS DRAIN_TIMEOUT``. Three jobs of
WORK_SECONDS each go to an executor with two slots, so one waits in the queue. Once the
signal arrives, a late job is refused. The program prints what happened and exits.
"""

from __future__ import annotations

import sys

import anyio
import anyio.abc

import brace

backend, work, timeout = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])


async def main() -> None:
    """Run the jobs, wait for the signal, drain, report."""
    shutdown = brace.GracefulShutdown(timeout=timeout)
    executor = shutdown.register(brace.PriorityExecutor(concurrency=2, max_queue=10))
    completed: list[int] = []

    async def job(number: int) -> None:
        await anyio.sleep(work)
        completed.append(number)

    async def submit(number: int) -> None:
        try:
            await executor.run(job, number)
        except brace.ShuttingDown:
            print("cancelled", number, flush=True)

    async def late_job() -> None:
        # a client arriving once the drain began (readiness turns off a moment earlier)
        while not executor.draining:  # noqa: ASYNC110 - polling, as a client would
            await anyio.sleep(0.01)
        assert not shutdown.ready
        try:
            await executor.run(job, 99)
        except brace.ShuttingDown:
            print("rejected late job", flush=True)

    async with anyio.create_task_group() as tg:
        for number in range(3):
            tg.start_soon(submit, number)
        tg.start_soon(late_job)
        reports: list[brace.ShutdownReport] = []

        async def watch(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            reports.append(await shutdown.wait(task_status=task_status))

        await tg.start(watch)
        await anyio.sleep(0.05)
        print("ready", flush=True)
    (report,) = reports
    print("completed", len(completed), flush=True)
    print("timed out", report.timed_out, flush=True)
    print("signal", report.signal, flush=True)


anyio.run(main, backend=backend)
