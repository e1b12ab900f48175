"""A route rule bounded fleet-wide: ``Rule(concurrency=DistributedLimit(...))`` through the
ASGI middleware, against the session's real redis-server, on every client and loop."""

from __future__ import annotations

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import brace
from brace.asgi import BraceMiddleware, Rule
from brace.redis import DistributedLimit, RedisStore
from redis_server import COREDIS_LEAK, run

pytestmark = [
    pytest.mark.filterwarnings(COREDIS_LEAK),
    pytest.mark.usefixtures("collect_coredis_garbage"),
]

pytest_plugins = ("redis_fixtures",)


def _app(
    fleet: DistributedLimit, executor: brace.PriorityExecutor | None
) -> tuple[object, dict[str, int]]:
    seen = {"inside": 0, "most": 0}

    async def slow(request: Request) -> PlainTextResponse:
        seen["inside"] += 1
        seen["most"] = max(seen["most"], seen["inside"])
        await anyio.sleep(0.05)
        seen["inside"] -= 1
        return PlainTextResponse("done")

    app = Starlette(routes=[Route("/api/ai", slow), Route("/other", slow)])
    rules = [Rule("/api/ai", concurrency=fleet, name="ai")]
    return BraceMiddleware(app, rules=rules, executor=executor), seen


@pytest.mark.parametrize("backend", ["asyncio", "uvloop", "trio"])
def test_a_rule_bounded_fleet_wide_runs_at_most_its_limit(redis_port: int, backend: str) -> None:
    """Twelve requests at once on a rule with a fleet limit of 3, behind an executor of
    10 slots: never more than 3 in the handler, every request answered 200; another
    route is not bounded by the rule."""

    async def main() -> None:
        url = f"redis://127.0.0.1:{redis_port}/0"
        async with RedisStore.from_url(url, timeout=2.0) as store:
            fleet = DistributedLimit(store, f"rule-{backend}", 3)
            app, seen = _app(fleet, brace.PriorityExecutor(concurrency=10, max_queue=100))
            transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
            statuses: list[int] = []
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

                async def one(path: str) -> None:
                    statuses.append((await client.get(path)).status_code)

                async with anyio.create_task_group() as group:
                    for _ in range(12):
                        group.start_soon(one, "/api/ai")
                assert statuses == [200] * 12
                assert seen["most"] == 3  # contended, and bounded by the fleet's limit
                seen["most"] = 0
                async with anyio.create_task_group() as group:
                    for _ in range(6):
                        group.start_soon(one, "/other")
                assert seen["most"] == 6  # the rule's limit is the rule's alone
            assert fleet.statistics().holding == 0

    run(backend, main)


def test_a_full_fleet_queue_is_a_503_with_retry_after(redis_port: int) -> None:
    """The fleet limit's bounded wait refuses as the executor does: 503 and Retry-After,
    counted as a queue_full refusal of the rule (not a failure of the service)."""

    async def main() -> None:
        url = f"redis://127.0.0.1:{redis_port}/0"
        async with RedisStore.from_url(url, timeout=2.0) as store:
            fleet = DistributedLimit(store, "rule-full", 1, max_wait=0)
            app, _ = _app(fleet, None)
            transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
            responses: list[httpx.Response] = []
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

                async def one() -> None:
                    responses.append(await client.get("/api/ai"))

                async with anyio.create_task_group() as group:
                    for _ in range(4):
                        group.start_soon(one)
            statuses = sorted(r.status_code for r in responses)
            assert statuses[0] == 200
            refused = [r for r in responses if r.status_code == 503]
            assert refused, statuses
            for response in refused:
                assert response.json()["error"] == "queue_full"
                assert int(response.headers["retry-after"]) >= 1
            stats = app.statistics()  # type: ignore[attr-defined]
            assert stats.refusals["queue_full"] == len(refused)

    run("asyncio", main)


def test_concurrency_must_have_a_slot() -> None:
    with pytest.raises(TypeError, match="concurrency must have a slot"):
        Rule("/api", concurrency=3)  # type: ignore[arg-type]
