"""Client addresses: forwarding headers believed only from trusted proxies, right to left."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from brace._client_ip import (
    MAX_HEADER_BYTES,
    MAX_HOPS,
    ClientAddress,
    TrustedProxies,
    parse_address,
    parse_forwarded_for,
    parse_x_forwarded_for,
)
from brace.asgi import BraceMiddleware, Rule


def scope(peer: str | None, *headers: tuple[str, str]) -> dict[str, Any]:
    return {
        "type": "http",
        "client": None if peer is None else (peer, 5000),
        "headers": [(name.lower().encode(), value.encode("latin-1")) for name, value in headers],
    }


PROXIES = ["10.0.0.0/8", "fd00::/8"]


def test_peer_is_the_client_when_nobody_is_trusted() -> None:
    """By default forwarding headers are ignored whatever they say."""
    client = ClientAddress()
    assert client(scope("203.0.113.5", ("X-Forwarded-For", "1.1.1.1"))) == "203.0.113.5"
    assert client(scope("203.0.113.5", ("Forwarded", "for=1.1.1.1"))) == "203.0.113.5"


def test_untrusted_peer_cannot_forward() -> None:
    """A peer outside the trusted networks is the client even with a forwarding header."""
    client = ClientAddress(PROXIES)
    assert client(scope("203.0.113.5", ("X-Forwarded-For", "10.0.0.1"))) == "203.0.113.5"


def test_rightmost_untrusted_entry_wins() -> None:
    """Walking right to left, trusted hops are skipped and the first other address is the client;
    whatever the client put further left is ignored."""
    client = ClientAddress(PROXIES)
    header = ("X-Forwarded-For", "6.6.6.6, 198.51.100.7, 10.1.1.1")
    assert client(scope("10.0.0.2", header)) == "198.51.100.7"
    # several field lines are one list, in order
    lines = scope("10.0.0.2", ("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "198.51.100.7"))
    assert client(lines) == "198.51.100.7"


def test_forwarded_header_rfc7239() -> None:
    """The Forwarded header's for= values are used (quoted, bracketed IPv6, ports) when chosen."""
    client = ClientAddress(PROXIES, header="forwarded", ipv6_prefix=128)
    header = ("Forwarded", 'for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https, for=10.2.2.2')
    assert client(scope("10.0.0.2", header)) == "2001:db8:cafe::17"
    # the X-Forwarded-For header is not read when Forwarded is configured
    assert client(scope("10.0.0.2", ("X-Forwarded-For", "198.51.100.7"))) == "10.0.0.2"


@pytest.mark.parametrize(
    "value",
    [
        "not-an-ip",
        "198.51.100.7, garbage",
        "198.51.100.7,,",
        "unknown",
        "_hidden",
        "999.1.1.1",
        "[::1",
        "1.2.3.4:port",
        "\x00\xff",
        "x" * 10_000,
        ", , ,",
        "1.2.3.4/8",
    ],
)
def test_malformed_forwarding_stops_at_the_proxy(value: str) -> None:
    """A malformed rightmost entry leaves the key at the trusted proxy: never a chosen key."""
    client = ClientAddress(PROXIES)
    assert client(scope("10.0.0.2", ("X-Forwarded-For", value))) == "10.0.0.2"


def test_all_trusted_chain_ends_at_leftmost() -> None:
    """When every hop is a trusted proxy, the leftmost one is the client."""
    client = ClientAddress(PROXIES)
    assert client(scope("10.0.0.2", ("X-Forwarded-For", "10.9.9.9, 10.8.8.8"))) == "10.9.9.9"


def test_ipv6_grouped_by_prefix_and_mapped_ipv4() -> None:
    """IPv6 clients are keyed by their /64; IPv4-mapped IPv6 is the IPv4 address."""
    client = ClientAddress()
    assert client(scope("2001:db8::1")) == "2001:db8::/64"
    assert client(scope("2001:db8::ffff:1")) == "2001:db8::/64"
    assert client(scope("::ffff:192.0.2.1")) == "192.0.2.1"
    assert ClientAddress(ipv6_prefix=128)(scope("2001:db8::1")) == "2001:db8::1"


def test_missing_or_odd_peer() -> None:
    """No peer (a Unix socket) is 'unknown'; odd scopes never raise."""
    client = ClientAddress(PROXIES)
    assert client(scope(None)) == "unknown"
    assert client({"type": "http"}) == "unknown"
    assert client({"client": ("10.0.0.1", 1), "headers": [("bad",), None, (b"x", 1)]}) == "10.0.0.1"
    assert client({"client": ("not an ip", 1), "headers": []}) == "not an ip"


def test_bad_configuration() -> None:
    """Invalid networks, a lone string, a wrong header name or prefix raise at construction."""
    with pytest.raises(ValueError, match="trusted proxy"):
        TrustedProxies(["10.0.0.0/33"])
    with pytest.raises(TypeError, match="iterable"):
        TrustedProxies("10.0.0.0/8")
    with pytest.raises(ValueError, match="header"):
        ClientAddress(header="x-real-ip")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ipv6_prefix"):
        ClientAddress(ipv6_prefix=0)


def test_parse_helpers() -> None:
    """Entries with ports and brackets parse; Forwarded quoting is honoured."""
    assert str(parse_address("[2001:db8::1]:80")) == "2001:db8::1"
    assert str(parse_address("192.0.2.1:8080")) == "192.0.2.1"
    assert parse_address("[2001:db8::1]x") is None
    assert parse_forwarded_for(['for="a,b";by=x, proto=http']) == ["a,b", ""]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.text(max_size=40), max_size=4), st.sampled_from(["x-forwarded-for", "forwarded"])
)
def test_untrusted_client_always_keyed_by_peer(values: list[str], header: str) -> None:
    """Whatever forwarding headers an untrusted client sends, its key is its own address."""
    client = ClientAddress(PROXIES, header=header)  # type: ignore[arg-type]
    headers = [(header, value.encode("latin-1", "replace").decode("latin-1")) for value in values]
    assert client(scope("203.0.113.5", *headers)) == "203.0.113.5"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.text(max_size=40), max_size=4), st.sampled_from(["x-forwarded-for", "forwarded"])
)
def test_behind_proxy_key_is_an_address_never_an_error(values: list[str], header: str) -> None:
    """Behind a trusted proxy, any header yields a parseable address (or the proxy's) and
    never raises."""
    client = ClientAddress(PROXIES, header=header, ipv6_prefix=128)  # type: ignore[arg-type]
    headers = [(header, value.encode("latin-1", "replace").decode("latin-1")) for value in values]
    key = client(scope("10.0.0.2", *headers))
    assert parse_address(key) is not None


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


@pytest.mark.parametrize(
    "spoof",
    [
        {"x-forwarded-for": "198.51.100.{n}"},
        {"forwarded": "for=198.51.100.{n}"},
        {"x-real-ip": "198.51.100.{n}"},
        {"true-client-ip": "198.51.100.{n}"},
        {"cf-connecting-ip": "198.51.100.{n}"},
        {"x-forwarded-for": "not-an-ip-{n}"},
    ],
)
async def test_spoofing_client_cannot_change_its_key(spoof: dict[str, str]) -> None:
    """Through the middleware, an untrusted client rotating any header shares one quota."""
    inner = Starlette(routes=[Route("/", hello)])
    app = BraceMiddleware(
        inner,
        default=Rule(limits=["3/minute"]),
        trusted_proxies=PROXIES,
        clock=anyio.current_time,
    )
    transport = httpx.ASGITransport(app=app, client=("203.0.113.5", 4000))
    codes = []
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        for n in range(5):
            headers = {name: value.format(n=n) for name, value in spoof.items()}
            codes.append((await http.get("/", headers=headers)).status_code)
    assert codes == [200, 200, 200, 429, 429]


async def test_trusted_proxy_forwards_distinct_clients() -> None:
    """Behind a trusted proxy, each forwarded client gets its own quota."""
    inner = Starlette(routes=[Route("/", hello)])
    app = BraceMiddleware(
        inner,
        default=Rule(limits=["1/minute"]),
        trusted_proxies=PROXIES,
        clock=anyio.current_time,
    )
    transport = httpx.ASGITransport(app=app, client=("10.0.0.2", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        for n in range(3):
            headers = {"x-forwarded-for": f"198.51.100.{n}"}
            assert (await http.get("/", headers=headers)).status_code == 200
        assert (await http.get("/", headers={"x-forwarded-for": "198.51.100.0"})).status_code == 429
        # garbage from behind the proxy counts against the proxy's own key, never a 500
        assert (await http.get("/", headers={"x-forwarded-for": "garbage"})).status_code == 200
        assert (await http.get("/", headers={"x-forwarded-for": "[::1"})).status_code == 429


def test_only_the_tail_of_a_huge_header_is_read() -> None:
    """A 1 MB header from a trusted proxy: the entries at its end decide, the rest is unread."""
    for header, junk, tail in (
        ("x-forwarded-for", "1.1.1.1, " * 120_000, "198.51.100.8, 10.0.0.3"),
        ("forwarded", 'for="1.1.1.1";by=x, ' * 60_000, 'for="[2001:db8::1]:80", for=10.0.0.3'),
        ("forwarded", '"' * 1_000_000, ", for=198.51.100.8;proto=https"),
    ):
        client = ClientAddress(PROXIES, header=header, ipv6_prefix=128)  # type: ignore[arg-type]
        expected = "2001:db8::1" if "2001" in tail else "198.51.100.8"
        assert client(scope("10.0.0.2", (header, junk + tail))) == expected


def test_a_cut_entry_is_never_read() -> None:
    """The entry the 8 KB window cuts in two is dropped, never read as an address."""
    filler = "a" * (MAX_HEADER_BYTES - 17)
    value = "11.2.3.4," + filler + ",10.0.0.5"  # the window starts inside "11.2.3.4"
    assert len(value) == MAX_HEADER_BYTES + 1
    assert parse_x_forwarded_for([value]) == [filler, "10.0.0.5"]
    forwarded = "xfor=1.2.3.4," + filler[8:] + ",for=10.0.0.5"  # window starts at "for=1."
    assert len(forwarded) == MAX_HEADER_BYTES + 1
    assert parse_forwarded_for([forwarded]) == ["", "10.0.0.5"]  # not "1.2.3.4" first
    # a whole field line before the window is dropped too
    assert parse_x_forwarded_for(["1.2.3.4", "b" * MAX_HEADER_BYTES]) == []
    assert parse_x_forwarded_for(["1.2.3.4", "5.6.7.8"]) == ["1.2.3.4", "5.6.7.8"]


def test_at_most_max_hops_entries_are_read() -> None:
    """A chain longer than MAX_HOPS gives its last MAX_HOPS entries."""
    chain = [f"10.0.{n // 250}.{n % 250}" for n in range(100)]
    assert parse_x_forwarded_for([", ".join(chain)]) == [f" {e}" for e in chain[-MAX_HOPS:]]
    forwarded = ", ".join(f"for={e}" for e in chain)
    assert parse_forwarded_for([forwarded]) == chain[-MAX_HOPS:]


_ADDRESS = st.ip_addresses().map(str)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(_ADDRESS, min_size=1, max_size=6), min_size=1, max_size=4))
def test_bounded_parsers_agree_with_a_full_parse(lines: list[list[str]]) -> None:
    """On well-formed headers within the caps, the bounded parsers read every entry."""
    xff = [", ".join(line) for line in lines]
    everything = [address for line in lines for address in line]
    assert [entry.strip() for entry in parse_x_forwarded_for(xff)] == everything[-MAX_HOPS:]
    quoted = [
        ", ".join(f'for="[{a}]:80"' if ":" in a else f"for={a}" for a in line) for line in lines
    ]
    expected = [f"[{a}]:80" if ":" in a else a for a in everything]
    assert parse_forwarded_for(quoted) == expected[-MAX_HOPS:]


def test_unix_socket_peer_can_be_trusted() -> None:
    """With "unix" trusted, a request with no peer address (a Unix socket) is keyed by its
    forwarded address; without it, by "unknown" whatever it forwards (#13 item 4)."""
    trusting = ClientAddress(["unix", *PROXIES])
    assert trusting(scope(None, ("x-forwarded-for", "198.51.100.1"))) == "198.51.100.1"
    assert trusting(scope(None, ("x-forwarded-for", "198.51.100.1, 10.0.0.3"))) == "198.51.100.1"
    assert trusting(scope(None)) == "unknown"
    assert trusting(scope(None, ("x-forwarded-for", "junk"))) == "unknown"
    assert trusting(scope("203.0.113.5", ("x-forwarded-for", "198.51.100.1"))) == "203.0.113.5"
    assert ClientAddress(["unix"])(scope("10.0.0.2", ("x-forwarded-for", "1.2.3.4"))) == "10.0.0.2"
    plain = ClientAddress(PROXIES)
    assert plain(scope(None, ("x-forwarded-for", "198.51.100.1"))) == "unknown"
    assert repr(TrustedProxies(["UNIX", "10.0.0.0/8"])) == "TrustedProxies(['10.0.0.0/8', 'unix'])"
    assert TrustedProxies(["unix"])


async def test_unix_socket_clients_get_distinct_budgets() -> None:
    """Behind a proxy on a Unix socket, six clients with distinct X-Forwarded-For each get
    their own budget once "unix" is trusted (they shared one before)."""
    inner = Starlette(routes=[Route("/", hello)])
    app = BraceMiddleware(
        inner,
        default=Rule(limits=["1/minute"]),
        trusted_proxies=["unix"],
        clock=anyio.current_time,
    )
    statuses = []
    for n in range(6):
        sent: list[int] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any], sent: list[int] = sent) -> None:
            if message["type"] == "http.response.start":
                sent.append(message["status"])

        request = scope(None, ("x-forwarded-for", f"198.51.100.{n}"))
        request.update(method="GET", path="/", raw_path=b"/", query_string=b"", root_path="")
        request.update(scheme="http", http_version="1.1", asgi={"version": "3.0"})
        await app(request, receive, send)
        statuses.extend(sent)
    assert statuses == [200] * 6
