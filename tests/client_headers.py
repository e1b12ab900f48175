"""Hypothesis strategies of hostile response headers, for the client fuzz tests."""

from __future__ import annotations

from hypothesis import strategies as st

import brace

NAMES = [
    b"retry-after",
    b"Retry-After",
    b"RETRY-AFTER",
    b"content-type",
    b"x-anything",
    b"ratelimit",
    b"set-cookie",
    b"location",
]
HOSTILE_VALUES = [
    b"\xc2\xb2",  # "²" in UTF-8
    b"\xb2",  # "²" in Latin-1
    "\u0661".encode(),
    b"-1",
    b"1e3",
    b"1.5",
    b" 1 ",
    b"0",
    b"120",
    b"99999999999999999999999999",
    b"Wed, 21 Oct 2015 07:28:00 GMT",
    b"Fri, 31 Dec 9999 23:59:59 GMT",
    b"Mon, 32 Foo 0000 99:99:99 XYZ",
    b"",
]
# the framing headers: a bare client fails on lies in them, the fuzz says the truth
FRAMING = {b"content-length", b"transfer-encoding", b"content-encoding", b"connection"}


def header_value() -> st.SearchStrategy[bytes]:
    big = st.builds(
        lambda unit, count: unit * count,
        st.sampled_from([b"9", b"\xb2", b" ", b"a", b"\xff", b"1,"]),
        st.integers(0, 65536),
    )
    return st.sampled_from(HOSTILE_VALUES) | st.binary(max_size=80) | big


def header_name() -> st.SearchStrategy[bytes]:
    token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-!#$%&'*+.^_`|~0123456789", min_size=1)
    return st.sampled_from(NAMES) | token.map(str.encode)


HEADERS = st.lists(st.tuples(header_name(), header_value()), max_size=6).map(
    lambda pairs: [(name, value) for name, value in pairs if name.lower() not in FRAMING]
)
STATUSES = st.sampled_from([200, 204, 404, 429, 500, 502, 503, 504]) | st.integers(200, 599)


def fast_retry() -> brace.Retry:
    return brace.Retry(3, backoff=brace.Backoff.exponential(base=0.001, cap=0.002))
