"""The benchmark suite still runs: every case sets up and does a few operations.

No timing is asserted here (benchmarks are never run in tests); each case runs ``op(3)``
once on a fresh, real-time loop of each backend it supports. Cases whose peer library is
not installed, or whose brace class does not exist yet, are skipped.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the benchmarks package lives beside src/, not inside it
    sys.path.insert(0, str(ROOT))

from benchmarks import run as bench_run  # noqa: E402
from benchmarks._harness import (  # noqa: E402
    BACKENDS,
    Case,
    CaseResult,
    Target,
    brace_has,
    check_targets,
    pair_batch,
    paired_ratio,
    run_once,
    unavailable_reason,
)

CASES = bench_run.all_cases()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=[case.key for case in CASES])
def test_case_runs(case: Case, backend: str) -> None:
    """Each benchmark case sets up and performs three operations without error."""
    reason = unavailable_reason(case, backend)
    if reason is not None:
        pytest.skip(f"{case.key} on {backend}: {reason}")
    run_once(case, backend, n=3)


def test_case_keys_are_unique_and_targets_refer_to_cases() -> None:
    """Every case key is unique and every target names existing cases."""
    keys = [case.key for case in CASES]
    assert len(keys) == len(set(keys))
    for target in bench_run.all_targets():
        assert target.brace_key in keys
        assert set(target.against) <= set(keys)


def test_targets_compare_medians() -> None:
    """A target is met when brace's medians on both clocks are within limit x the reference."""
    brace_case = CASES[0]
    peer_case = CASES[1]
    samples = [100.0, 90.0, 110.0]
    results = [
        CaseResult(brace_case, "asyncio", samples=samples, cpu_samples=[60.0, 60.0, 60.0]),
        CaseResult(peer_case, "asyncio", samples=[4 * s for s in samples], cpu_samples=samples),
    ]
    met = Target("g", "t", brace_case.key, (peer_case.key,), 0.7)
    borderline = Target("g", "t", brace_case.key, (peer_case.key,), 0.3)
    missed = Target("g", "t", brace_case.key, (peer_case.key,), 0.2)
    [ok], [unclear], [ko] = (check_targets([t], results) for t in (met, borderline, missed))
    assert ok.status == "met"
    assert unclear.status == "borderline"  # met on the wall clock (0.25), not the CPU (0.6)
    assert ko.status == "MISSED"
    assert ok.ratio == pytest.approx(0.25)
    assert ok.cpu_ratio == pytest.approx(0.6)


def test_targets_judge_each_round_against_its_pair() -> None:
    """The verdict is the median of the per-round ratios: rounds timed on a slow moment
    slow both of a pair, which the ratio of the two medians (shown too) does not see."""
    brace_case, peer_case = CASES[0], CASES[1]
    brace_samples = [200.0, 100.0, 100.0, 200.0, 100.0]
    peer_samples = [190.0, 95.0, 190.0, 190.0, 95.0]  # round 3: brace fast, peer slow
    results = [
        CaseResult(brace_case, "asyncio", samples=brace_samples, cpu_samples=brace_samples),
        CaseResult(peer_case, "asyncio", samples=peer_samples, cpu_samples=peer_samples),
    ]
    [judged] = check_targets([Target("g", "t", brace_case.key, (peer_case.key,), 1.0)], results)
    assert judged.ratio == pytest.approx(200 / 190)  # four rounds of five at 1.053
    assert judged.cpu_ratio == pytest.approx(200 / 190)
    assert judged.median_ratio == pytest.approx(100 / 190)  # the medians' ratio: 0.526
    assert judged.status == "MISSED"
    assert paired_ratio([1.0, 2.0], [1.0]) == pytest.approx(1.5)  # unpaired: the medians'


def test_batches_time_each_group_beside_its_references() -> None:
    """A run is timed group by group: each batch holds the group's cases and every floor
    its table shows or its targets are judged against, and nothing of another group."""
    groups = dict(bench_run.batches(CASES))
    assert [case.group for case in groups["floor"]] == ["floor"] * len(groups["floor"])
    for target in bench_run.all_targets():
        keys = {case.key for case in groups[target.group]}
        assert target.brace_key in keys
        assert set(target.against) <= keys, target.title
    for group, cases in groups.items():
        assert {case.group for case in cases} <= {"floor", group}
    selected = bench_run.batches(bench_run.select(r"breaker\.purgatory"))
    assert [group for group, _ in selected] == ["floor", "breaker"]


def test_targets_read_their_own_batch() -> None:
    """A floor timed in several batches: a target reads the one timed beside its case."""
    brace_case, floor_case = CASES[1], CASES[0]
    mine = CaseResult(brace_case, "asyncio", samples=[50.0], cpu_samples=[50.0], batch="g")
    results = [
        CaseResult(floor_case, "asyncio", samples=[1000.0], cpu_samples=[1000.0], batch="x"),
        mine,
        CaseResult(floor_case, "asyncio", samples=[100.0], cpu_samples=[100.0], batch="g"),
    ]
    [judged] = check_targets([Target("g", "t", brace_case.key, (floor_case.key,), 1.0)], results)
    assert judged.ratio == pytest.approx(0.5)  # against batch g's 100 ns, not x's 1000
    # brace's case was not timed in batch x: no verdict from another batch's timings
    assert check_targets([Target("x", "t", brace_case.key, (floor_case.key,), 1.0)], results) == []


def _result(case: Case, ns: float, batch: str, status: str = "ok") -> CaseResult:
    samples = [ns] if status == "ok" else []
    return CaseResult(case, "asyncio", status, batch, samples=samples, cpu_samples=samples)


def test_pair_batches_hold_brace_and_the_chosen_reference() -> None:
    """After the group batches, each target gets a batch of its brace case beside the
    reference the group's batch chose (the fastest; every one for mode "every")."""
    brace_case, slow, fast = CASES[2], CASES[0], CASES[1]
    group = [_result(brace_case, 50.0, "g"), _result(slow, 900.0, "g"), _result(fast, 100.0, "g")]
    fastest = Target("g", "t", brace_case.key, (slow.key, fast.key), 1.0)
    every = Target("g", "u", brace_case.key, (slow.key, fast.key), 1.0, mode="every")
    other = Target("g", "v", brace_case.key, (slow.key,), 1.0, backends=frozenset({"trio"}))
    same = Target("g", "w", brace_case.key, (slow.key, fast.key), 0.5)
    pairs = bench_run.pair_batches([fastest, every, other, same], group, "asyncio")
    assert pairs == [  # (a target on trio only: none on asyncio; same cases: one batch)
        (pair_batch(fastest), [brace_case, fast]),
        (pair_batch(every), [brace_case, slow, fast]),
    ]
    assert pair_batch(same) == pair_batch(fastest)
    failed = [_result(brace_case, 0.0, "g", status="error: x"), *group[1:]]
    assert bench_run.pair_batches([fastest], failed, "asyncio") == []


def test_the_fastest_reference_is_the_one_with_the_quickest_round() -> None:
    """Slow rounds (a busy moment) cannot make the fastest peer look slower than another:
    the reference chosen is the one whose quickest round is quickest."""
    brace_case, noisy, steady = CASES[2], CASES[0], CASES[1]
    group = [
        CaseResult(brace_case, "asyncio", samples=[50.0] * 3, cpu_samples=[50.0] * 3, batch="g"),
        CaseResult(
            noisy, "asyncio", samples=[100.0, 500.0, 500.0], cpu_samples=[1.0] * 3, batch="g"
        ),
        CaseResult(steady, "asyncio", samples=[300.0] * 3, cpu_samples=[1.0] * 3, batch="g"),
    ]
    target = Target("g", "t", brace_case.key, (steady.key, noisy.key), 1.0)
    assert bench_run.pair_batches([target], group, "asyncio") == [
        (pair_batch(target), [brace_case, noisy])
    ]


def test_targets_read_their_pair_batch_alone() -> None:
    """A target with a pair batch is judged on it only: not on the group's timings, and
    not against a reference timed in the group but not in the pair."""
    brace_case, slow, fast = CASES[2], CASES[0], CASES[1]
    target = Target("g", "t", brace_case.key, (slow.key, fast.key), 1.0)
    pair = pair_batch(target)
    results = [
        _result(brace_case, 50.0, "g"),
        _result(slow, 40.0, "g"),
        _result(fast, 100.0, "g"),
        _result(brace_case, 60.0, pair),
        _result(fast, 120.0, pair),
    ]
    [judged] = check_targets([target], results)
    assert judged.ratio == pytest.approx(0.5)  # 60 / 120 in the pair: not 50 / 40
    assert judged.batch == pair
    assert judged.status == "met"
    [by_group] = check_targets([target], results[:3])  # no pair batch: the group's
    assert by_group.ratio == pytest.approx(50 / 40)
    assert by_group.batch == "g"


def test_cli_quick_run_on_floor_only(capsys: pytest.CaptureFixture[str]) -> None:
    """The command line runs end to end and prints a table and the machine."""
    assert (
        bench_run.main(
            ["--filter", "^floor$", "--backend", "asyncio", "--rounds", "1", "--round-ms", "1"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "await noop()" in out
    assert "CPU:" in out


@pytest.mark.parametrize("path", ["hit", "bucket", "breaker", "done", "run"])
def test_breakdown_runs(path: str) -> None:
    """The manual profile of a hot path prints one line per step."""
    from benchmarks.breakdown import PATHS, breakdown

    names = {"hit": ("RateLimiter", "TokenBucket"), "bucket": ("TokenBucket",)}
    if not brace_has(*names.get(path, ("CircuitBreaker",))):
        pytest.skip(f"brace has no {path} primitive yet")
    table = breakdown(path, n=5, rounds=1)
    assert table.count("\n| ") == len(PATHS[path]()) + 1


def test_profile_runs() -> None:
    """cProfile of one case prints a pstats table."""
    from benchmarks.profile import profile_case

    assert "function calls" in profile_case("floor.await", "asyncio", 10, "tottime", 5)


@pytest.mark.parametrize(
    "case", ["bare", "none", "limit", "limit-no-headers", "executor", "full", "floor"]
)
def test_asgi_instruction_cases_run(case: str) -> None:
    """Each case `benchmarks/asgi_instructions.py` measures under callgrind runs (its child
    mode, without valgrind): the app answers 200 to every request."""
    # imported by name: mypy would follow it into asgi_bench's optional peer (slowapi),
    # which the lint environment does not install
    asgi_instructions = importlib.import_module("benchmarks.asgi_instructions")
    asgi_instructions.child(case, 3)


def test_asgi_bytecodes_are_counted() -> None:
    """`asgi_instructions.py --bytecodes` counts every bytecode and call of a request: a
    limit adds some to the bare app, and its own functions are among them."""
    asgi_instructions = importlib.import_module("benchmarks.asgi_instructions")
    bare, bare_calls, _ = asgi_instructions.bytecodes("bare", 20)
    limit, limit_calls, functions = asgi_instructions.bytecodes("limit", 20)
    assert 0 < bare < limit
    assert 0 < bare_calls < limit_calls
    assert any("brace/_pipeline.py" in name and "hit_local" in name for name in functions)
    parts = asgi_instructions.groups(functions)  # every bytecode in one part
    assert parts.total() == functions.total()
    assert parts["the limits: key, decision, recording"] > 0


def test_asgi_bench_reports_every_case_with_its_spread(capsys: pytest.CaptureFixture[str]) -> None:
    """`benchmarks/asgi_bench.py` runs every case and gives each one's overhead and its
    spread over the rounds: the least and the most it cost over the bare app's run of
    the same round."""
    asgi_bench = importlib.import_module("benchmarks.asgi_bench")
    assert asgi_bench.spread([3.0, 7.0, 4.0], [1.0, 2.0, 3.0]) == (1.0, 5.0)
    assert asyncio.run(asgi_bench.main(20, 2)) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| brace")]
    assert len(rows) == sum(name.startswith("brace") for name in asgi_bench.CASES)
    assert all(" to " in row for row in rows)
