"""Which address a request comes from, trusting forwarding headers only from known proxies.

The peer address (``scope["client"]``) is the only thing a client cannot forge. A
forwarding header (``X-Forwarded-For`` or ``Forwarded``) is read only when the peer is one
of the configured trusted proxies, and then from right to left: each proxy appends the
address it saw, so the rightmost entries were written by our own proxies and the first
entry, from the right, that is not a trusted proxy is the client. Whatever lies to its left
was written by the client and is ignored. An entry that is not an IP address stops the walk
at the last address known good (a trusted proxy): a malformed header can never make a
client pick its own key, and never raises.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

__all__ = ("ClientAddress", "TrustedProxies", "parse_forwarded_for", "parse_x_forwarded_for")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ForwardedHeader = Literal["x-forwarded-for", "forwarded"]

_UNKNOWN = "unknown"
# Longest text accepted as one address (a bracketed IPv6 with zone and port fits easily).
_MAX_ENTRY = 100
# Most forwarding entries looked at; a longer chain stops at the last trusted address.
_MAX_HOPS = 32


class TrustedProxies:
    """A set of networks (CIDRs) whose forwarding headers are believed.

    ``TrustedProxies(["10.0.0.0/8", "127.0.0.1"])``; an empty set (the default everywhere)
    trusts no one.
    """

    __slots__ = ("_networks",)

    def __init__(self, networks: Iterable[str | IPNetwork] = ()) -> None:
        if isinstance(networks, str):
            raise TypeError("networks must be an iterable of CIDR strings, not one str")
        parsed: list[IPNetwork] = []
        for network in networks:
            if isinstance(network, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
                parsed.append(network)
                continue
            if not isinstance(network, str):
                raise TypeError(f"trusted proxies must be CIDR strings, got {network!r}")
            try:
                parsed.append(ipaddress.ip_network(network.strip(), strict=False))
            except ValueError:
                raise ValueError(
                    f"invalid trusted proxy network {network!r}: expected an IP address or "
                    "a CIDR such as '10.0.0.0/8' or 'fd00::/8'"
                ) from None
        self._networks: tuple[IPNetwork, ...] = tuple(parsed)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            return False
        return any(address in network for network in self._networks)

    def __repr__(self) -> str:
        return f"TrustedProxies({[str(network) for network in self._networks]!r})"


def parse_address(text: str) -> IPAddress | None:
    """An IP address from a forwarding entry (``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``,
    ``::1``), or ``None`` when it is not one."""
    text = text.strip().strip('"').strip()
    if not text or len(text) > _MAX_ENTRY:
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        rest = text[end + 1 :]
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # IPv4 with a port
        host, _, port = text.partition(":")
        if not port.isdigit():
            return None
        text = host
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_x_forwarded_for(values: Sequence[str]) -> list[str]:
    """The entries of every ``X-Forwarded-For`` field line, in order (left to right)."""
    entries: list[str] = []
    for value in values:
        entries.extend(value.split(","))
    return entries


def parse_forwarded_for(values: Sequence[str]) -> list[str]:
    """The ``for=`` value of each element of every ``Forwarded`` field line (RFC 7239),
    left to right; an element without ``for=`` (or one that does not parse) gives ``""``."""
    entries: list[str] = []
    for value in values:
        for element in _split_outside_quotes(value, ","):
            found = ""
            for pair in _split_outside_quotes(element, ";"):
                name, sep, raw = pair.partition("=")
                if sep and name.strip().lower() == "for":
                    raw = raw.strip()
                    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
                        raw = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
                    found = raw
                    break
            entries.append(found)
    return entries


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    start = 0
    quoted = False
    escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


class ClientAddress:
    """Finds a request's client address: the peer, or a forwarded one from trusted proxies.

    ``trusted``: the proxies whose forwarding header is believed (none by default).
    ``header``: which header they write, ``"x-forwarded-for"`` or ``"forwarded"`` (only that
    one is read). ``ipv6_prefix``: IPv6 clients are keyed by their network of this length
    (64: a household or a server's whole /64 counts as one client, since a client can pick
    any address in it); 128 keys every address apart.
    """

    __slots__ = ("_header", "_ipv6_prefix", "_trusted")

    def __init__(
        self,
        trusted: TrustedProxies | Iterable[str] = (),
        *,
        header: ForwardedHeader = "x-forwarded-for",
        ipv6_prefix: int = 64,
    ) -> None:
        self._trusted = trusted if isinstance(trusted, TrustedProxies) else TrustedProxies(trusted)
        if header not in ("x-forwarded-for", "forwarded"):
            raise ValueError(f"header must be 'x-forwarded-for' or 'forwarded', got {header!r}")
        self._header = header.encode("latin-1")
        if isinstance(ipv6_prefix, bool) or not isinstance(ipv6_prefix, int):
            raise TypeError(f"ipv6_prefix must be an int, got {type(ipv6_prefix).__name__}")
        if not 1 <= ipv6_prefix <= 128:
            raise ValueError(f"ipv6_prefix must be an int in [1, 128], got {ipv6_prefix!r}")
        self._ipv6_prefix = ipv6_prefix

    @property
    def trusted(self) -> TrustedProxies:
        return self._trusted

    def __call__(self, scope: Mapping[str, Any]) -> str:
        """The client's address as a key: an IPv4 address, an IPv6 network, or
        ``"unknown"`` when the server gave no peer address (a Unix socket)."""
        client = scope.get("client")
        peer = client[0] if isinstance(client, (tuple, list)) and client else None
        if not isinstance(peer, str):
            return _UNKNOWN
        if not self._trusted:
            # fast path: nobody is trusted, the peer is the client
            if ":" not in peer:
                return peer
            return self._key(parse_address(peer), peer)
        address = parse_address(peer)
        if address is None or address not in self._trusted:
            return self._key(address, peer)
        values = _header_values(scope, self._header)
        if not values:
            return self._key(address, peer)
        entries = (
            parse_x_forwarded_for(values)
            if self._header == b"x-forwarded-for"
            else parse_forwarded_for(values)
        )
        for hops, entry in enumerate(reversed(entries)):
            if hops >= _MAX_HOPS:
                break
            forwarded = parse_address(entry)
            if forwarded is None:
                break  # malformed or obfuscated: keep the last address known good
            address = forwarded
            if address not in self._trusted:
                break
        return self._key(address, peer)

    def _key(self, address: IPAddress | None, peer: str) -> str:
        if address is None:
            return peer if len(peer) <= _MAX_ENTRY else _UNKNOWN
        if isinstance(address, ipaddress.IPv6Address) and self._ipv6_prefix < 128:
            network = ipaddress.IPv6Network((int(address), self._ipv6_prefix), strict=False)
            return str(network)
        return str(address)


def _header_values(scope: Mapping[str, Any], name: bytes) -> list[str]:
    values: list[str] = []
    headers = scope.get("headers")
    if not isinstance(headers, (list, tuple)):
        return values
    for item in headers:
        try:
            key, value = item
        except (TypeError, ValueError):
            continue
        if isinstance(key, bytes) and key.lower() == name and isinstance(value, bytes):
            values.append(value.decode("latin-1"))
    return values
