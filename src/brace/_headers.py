"""Rate-limit response fields: the IETF ``RateLimit`` / ``RateLimit-Policy`` pair, the legacy
``X-RateLimit-*`` trio and ``Retry-After``.

The IETF fields follow draft-ietf-httpapi-ratelimit-headers (revision 10): both are
Structured Field Lists (RFC 9651) whose members are policy names as sf-strings with
parameters; ``RateLimit-Policy`` gives each policy's quota ``q`` and window ``w``
(seconds), ``RateLimit`` its remaining quota ``r`` and the seconds ``t`` until it
resets::

    RateLimit-Policy: "default";q=100;w=10
    RateLimit: "default";r=50;t=30

Policies are fixed per rule, so their member text is built once (`PolicyField`); only
``r`` and ``t`` are formatted per response.
"""

from __future__ import annotations

import math

__all__ = (
    "PolicyField",
    "check_policy_name",
    "delay_seconds",
    "ratelimit_item",
    "ratelimit_member",
    "sf_string",
)

# RFC 9651 sf-integer: at most 15 digits
_MAX_SF_INTEGER = 999_999_999_999_999


def sf_string(text: str) -> str:
    """``text`` as a Structured Field string: quoted, ``\\`` and ``"`` escaped; characters
    outside printable ASCII (not allowed in an sf-string) become ``?``."""
    out = ['"']
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif " " <= char <= "~":
            out.append(char)
        else:
            out.append("?")
    out.append('"')
    return "".join(out)


#: The longest policy name accepted (it is sent in every response's fields).
MAX_POLICY_NAME = 64


def check_policy_name(name: object, parameter: str = "name") -> str:
    """``name`` if it can be sent as a Structured Field string unchanged: 1 to
    `MAX_POLICY_NAME` printable ASCII characters (RFC 9651 sf-string). Anything else would
    be altered by the escaping (``"café"`` and ``"cafè"`` would both read ``"caf?"``), so
    it is refused here, naming ``parameter``."""
    if not isinstance(name, str):
        raise TypeError(f"{parameter} must be a str, got {type(name).__name__}")
    if not 1 <= len(name) <= MAX_POLICY_NAME or not all(" " <= char <= "~" for char in name):
        raise ValueError(
            f"{parameter} must be 1 to {MAX_POLICY_NAME} printable ASCII characters (it is "
            f"sent as a Structured Field string in the RateLimit fields), got {name!r}"
        )
    return name


def delay_seconds(seconds: float, *, minimum: int = 0) -> int:
    """Seconds as the non-negative integer of ``Retry-After`` / ``t=``: rounded up (never
    tell a client to come back before it may), at least ``minimum``, at most 15 digits."""
    if not seconds > 0:  # also NaN
        return minimum
    if seconds >= _MAX_SF_INTEGER:
        return _MAX_SF_INTEGER
    whole = math.ceil(seconds - 1e-9)
    # (comparisons, not max/min: on a response's path, where those builtins cost more
    # than the rest of the function on Python 3.11)
    return whole if whole > minimum else minimum


class PolicyField:
    """One quota policy: its name, quota and window, formatted once."""

    __slots__ = ("member", "name", "prefix", "quota", "raw_prefix", "window")

    def __init__(self, name: str, quota: int, window: float) -> None:
        self.name = name
        self.quota = quota
        self.window = window
        quoted = sf_string(name)
        #: the member of RateLimit-Policy, e.g. '"default";q=100;w=10'
        self.member = f"{quoted};q={min(quota, _MAX_SF_INTEGER)};w={delay_seconds(window)}"
        #: the start of this policy's RateLimit member, e.g. '"default";r='
        self.prefix = f"{quoted};r="
        #: the same, encoded (ASCII: `sf_string` escapes nothing outside it)
        self.raw_prefix = self.prefix.encode("ascii")


def ratelimit_member(policy: PolicyField, remaining: int, reset: float) -> bytes:
    """The policy's member of the ``RateLimit`` field, ``"name";r=<remaining>;t=<reset>``,
    encoded as ASGI sends it (`ratelimit_item` is this, decoded: one format for both)."""
    if remaining < 0:
        remaining = 0
    elif remaining > _MAX_SF_INTEGER:
        remaining = _MAX_SF_INTEGER
    return b"%b%d;t=%d" % (policy.raw_prefix, remaining, delay_seconds(reset))


def ratelimit_item(policy: PolicyField, remaining: int, reset: float) -> str:
    """`ratelimit_member` as a str."""
    return ratelimit_member(policy, remaining, reset).decode("ascii")
