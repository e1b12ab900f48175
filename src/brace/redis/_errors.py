"""The errors `brace.redis` raises, and how the store sorts the errors of a client.

A decision never raises a client's error: it follows the store's ``on_error``. But which
errors count as Redis being *down* matters: an error that belongs to one call (a bad
argument, a script error on one key) is that call's alone and must not make the store
treat every other key as if Redis were gone (a key an attacker chose could otherwise lift
or impose every limit). So the store sorts each error:

- ``"call"``: a ``TypeError`` or ``ValueError`` (an encoding error too), an error reply
  that is not about the server's state (``WRONGTYPE``, a script error), or a cluster
  client's retries for one slot run out (while it migrates): that decision alone follows
  ``on_error``;
- anything else (the transport: connection, timeout, TLS; the server's state: ``LOADING``,
  ``BUSY``, ``OOM``, ``READONLY``, ``CLUSTERDOWN``, authentication; a client that does not
  run on this event loop): the store treats Redis as down for ``recovery_time``.

`RedisStore.check` turns a client's error into one of the errors below, whose message
names the cause.
"""

from __future__ import annotations

from typing import Literal

__all__ = (
    "RedisAuthenticationError",
    "RedisBackendError",
    "RedisConnectionError",
    "RedisError",
    "ResponseError",
    "check_error",
    "error_scope",
)


class RedisError(Exception):
    """Base of the errors of `brace.redis` (raised by `RedisStore.check`)."""


class RedisConnectionError(RedisError, ConnectionError):
    """The server cannot be reached: refused, unknown host, TLS failure, no answer in time."""


class RedisAuthenticationError(RedisError):
    """The server refused the credentials (``WRONGPASS``, ``NOAUTH``, ``NOPERM``)."""


class RedisBackendError(RedisError):
    """The client does not run on the running async backend (redis-py under trio), or
    needs to be opened first (``async with store:``)."""


class ResponseError(RedisError):
    """The server answered a command with an error reply."""


# First words of error replies that are about the server, not about one call.
_SERVER_STATES = frozenset(
    {
        "LOADING",
        "BUSY",
        "NOAUTH",
        "WRONGPASS",
        "NOPERM",
        "OOM",
        "READONLY",
        "MASTERDOWN",
        "CLUSTERDOWN",
        "TRYAGAIN",
        "MOVED",
        "ASK",
        "MISCONF",
        "NOREPLICAS",
        "NOSCRIPT",
        "CROSSSLOT",
    }
)
_AUTH_STATES = frozenset({"NOAUTH", "WRONGPASS", "NOPERM"})


def _names(exc: BaseException) -> list[str]:
    return [cls.__name__ for cls in type(exc).__mro__]


# Error replies the clients turn into their own classes, whose message then lacks the
# reply's first word (redis-py's and coredis' parsers strip it: a ``READONLY`` reply
# becomes ``ReadOnlyError("You can't write against a read only replica.")``).
_CODES = {
    "AskError": "ASK",
    "AuthenticationFailureError": "WRONGPASS",
    "AuthenticationRequiredError": "NOAUTH",
    "AuthorizationError": "NOPERM",
    "BusyLoadingError": "LOADING",
    "ClusterCrossSlotError": "CROSSSLOT",
    "ClusterDownError": "CLUSTERDOWN",
    "ExecAbortError": "EXECABORT",
    "MasterDownError": "MASTERDOWN",
    "MovedError": "MOVED",
    "NoPermissionError": "NOPERM",
    "NoScriptError": "NOSCRIPT",
    "OutOfMemoryError": "OOM",
    "ReadOnlyError": "READONLY",
    "TryAgainError": "TRYAGAIN",
    "WrongTypeError": "WRONGTYPE",
}


def reply_code(exc: BaseException) -> str:
    """The first word of the error reply ``exc`` stands for (``"WRONGTYPE"``, ``"OOM"``),
    whether the client kept it in the message or turned it into a class; ``""`` if none."""
    code = getattr(exc, "status_code", None)  # redis-py 6.2+
    if isinstance(code, str) and code:
        return code
    for name in _names(exc):
        if name in _CODES:
            return _CODES[name]
    words = str(exc).split(maxsplit=1)
    if words and words[0].isupper():
        return words[0]
    # coredis strips the generic ``ERR`` too, and keeps its plain ResponseError for it.
    return "ERR" if type(exc).__name__ == "ResponseError" else ""


def slot_retries_ran_out(exc: BaseException) -> bool:
    """Whether ``exc`` is a cluster client giving up on one slot: its redirects or
    ``TRYAGAIN`` retries ran out (redis-py: "TTL exhausted", coredis: "Maximum retries
    exhausted"), as while that slot migrates. Nodes down raise their connection errors."""
    return type(exc).__name__ == "ClusterError"


def describe_error(exc: BaseException) -> str:
    """``Type: message``, with the reply's first word put back when the client took it out
    (``WrongTypeError: WRONGTYPE Operation against a key...``)."""
    message = str(exc)
    code = reply_code(exc)
    if code and not message.startswith(code):
        message = f"{code} {message}" if message else code
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _is_reply(exc: BaseException) -> bool:
    return any(name in ("ResponseError", "DataError") for name in _names(exc))


def _is_auth(exc: BaseException, code: str) -> bool:
    """Whether ``exc`` (whose `reply_code` is ``code``) is a refusal of the credentials."""
    if any(
        "Authentication" in name or "Authorization" in name or name == "NoPermissionError"
        for name in _names(exc)
    ):
        return True
    if code in _AUTH_STATES:
        return True
    message = str(exc).lower()
    return "invalid password" in message or "invalid username-password" in message


def error_scope(exc: BaseException) -> Literal["call", "server"]:
    """``"call"`` for an error of one call, ``"server"`` for one about Redis itself."""
    if isinstance(exc, (TypeError, ValueError)):
        return "call"
    if slot_retries_ran_out(exc):  # one slot's trouble: the other slots answer
        return "call"
    if _is_reply(exc):
        code = reply_code(exc)
        if not _is_auth(exc, code) and code not in _SERVER_STATES:
            return "call"
    return "server"


def check_error(exc: BaseException, *, backend: str) -> RedisError:
    """The `RedisError` that `RedisStore.check` raises for a client's ``exc``."""
    if isinstance(exc, RedisError) and type(exc).__module__.startswith("brace."):
        return exc
    cause = describe_error(exc)
    if _is_auth(exc, reply_code(exc)):
        return RedisAuthenticationError(f"Redis refused the credentials ({cause})")
    names = _names(exc)
    if isinstance(exc, (OSError, TimeoutError)) or any(
        name.endswith(("ConnectionError", "TimeoutError")) or name == "BusyLoadingError"
        for name in names
    ):
        return RedisConnectionError(f"Redis cannot be reached ({cause})")
    if isinstance(exc, RuntimeError) and "event loop" in str(exc):
        return RedisBackendError(
            f"the Redis client does not run on {backend} ({cause}); redis-py's asyncio "
            "client needs asyncio, coredis runs on asyncio and trio"
        )
    if _is_reply(exc):
        return ResponseError(f"Redis answered with an error ({cause})")
    return RedisError(f"the Redis client failed ({cause})")
