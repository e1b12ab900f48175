"""brace in two seconds: a rate limit, per-key limits, a circuit breaker and retries.

Run it with ``python examples/quickstart.py`` (asyncio) or
``python examples/quickstart.py trio`` (needs trio installed).
"""

from __future__ import annotations

import sys
import time

import anyio

import brace


async def token_bucket() -> None:
    print("1. TokenBucket(rate=20, per=1.0, burst=5): 5 at once, then one every 50 ms")
    bucket = brace.TokenBucket(20, per=1.0, burst=5)
    start = time.monotonic()
    for number in range(10):
        async with bucket:  # waits its turn once the burst is spent
            elapsed = (time.monotonic() - start) * 1000
            print(f"   request {number} admitted at {elapsed:5.0f} ms")


async def keyed_limits() -> None:
    print("2. RateLimiter('3/second') keyed per user: each user has their own budget")
    limiter = brace.RateLimiter("3/second")
    for user in ("alice", "alice", "alice", "alice", "bob"):
        decision = await limiter.hit(f"user:{user}")
        verdict = "allowed" if decision.allowed else f"429, retry in {decision.retry_after:.2f} s"
        print(f"   {user:5}: {verdict} (remaining {decision.remaining})")


async def breaker_and_retry() -> None:
    print("3. CircuitBreaker(failure_threshold=3) around a failing dependency, with Retry")
    breaker = brace.CircuitBreaker(failure_threshold=3, recovery_time=0.3, name="upstream")
    healthy = False

    @breaker
    async def upstream() -> str:
        if not healthy:
            raise ConnectionError("upstream down")
        return "pong"

    for number in range(5):
        try:
            await upstream()
        except ConnectionError:
            print(f"   call {number}: ConnectionError (breaker {breaker.state.value})")
        except brace.CircuitOpen as error:
            print(f"   call {number}: CircuitOpen, retry after {error.retry_after:.2f} s")

    healthy = True
    retry = brace.Retry(attempts=5, backoff=brace.Backoff.constant(0.1))
    start = time.monotonic()
    answer = await retry.call(upstream)  # waits out the open circuit, then probes
    elapsed = time.monotonic() - start
    print(f"   after recovery: {answer!r} in {elapsed:.2f} s, breaker {breaker.state.value}")


async def main() -> None:
    await token_bucket()
    await keyed_limits()
    await breaker_and_retry()
    print("brace works.")


if __name__ == "__main__":
    anyio.run(main, backend=sys.argv[1] if len(sys.argv) > 1 else "asyncio")
