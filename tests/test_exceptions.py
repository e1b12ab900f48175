"""The exception hierarchy: every refusal is a Rejected with retry_after."""

from __future__ import annotations

import pickle

import pytest

import brace


@pytest.mark.parametrize(
    "cls",
    [
        brace.RateLimited,
        brace.QueueFull,
        brace.QueueTimeout,
        brace.CircuitOpen,
        brace.MemoryPressure,
        brace.ShuttingDown,
        brace.Overloaded,
    ],
)
def test_refusals_are_rejected(cls: type[brace.Rejected]) -> None:
    """Each refusal is a Rejected and a BraceError carrying the retry_after it was given."""
    error = cls("full", retry_after=1.5)
    assert isinstance(error, brace.Rejected)
    assert isinstance(error, brace.BraceError)
    assert error.retry_after == 1.5
    assert str(error) == "full"


def test_retry_after_defaults_to_none() -> None:
    """Without an estimate, retry_after is None and the message is the class name."""
    error = brace.QueueFull()
    assert error.retry_after is None
    assert str(error) == "QueueFull"


def test_timeout_exceeded_is_a_timeout_error() -> None:
    """TimeoutExceeded is both a BraceError and a TimeoutError, but not a Rejected."""
    error = brace.TimeoutExceeded(timeout=2.0)
    assert isinstance(error, TimeoutError)
    assert isinstance(error, brace.BraceError)
    assert not isinstance(error, brace.Rejected)
    assert error.timeout == 2.0
    assert "2.0" in str(error)


def test_rate_limited_carries_decision_and_key() -> None:
    """RateLimited keeps the limiter's decision and the key that was refused."""
    decision = brace.Decision(False, 10, 0, 3.0, 6.0)
    error = brace.RateLimited("slow down", retry_after=3.0, decision=decision, key="ip:1")
    assert error.decision is decision
    assert error.key == "ip:1"


@pytest.mark.parametrize(
    "error",
    [
        brace.RateLimited("x", retry_after=2.0, key="k"),
        brace.CircuitOpen("open", retry_after=1.0),
        brace.QueueFull(retry_after=0.25),
    ],
)
def test_pickle_round_trip(error: brace.Rejected) -> None:
    """Refusals survive pickling (e.g. across process pools) with their attributes."""
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert copy.retry_after == error.retry_after
    assert str(copy) == str(error)
    assert copy.__dict__ == error.__dict__
