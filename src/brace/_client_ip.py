"""Which address a request comes from, trusting forwarding headers only from known proxies.

The peer address (``scope["client"]``) is the only thing a client cannot forge. A
forwarding header (``X-Forwarded-For`` or ``Forwarded``) is read only when the peer is one
of the configured trusted proxies, and then from right to left: each proxy appends the
address it saw, so the rightmost entries were written by our own proxies and the first
entry, from the right, that is not a trusted proxy is the client. Whatever lies to its left
was written by the client and is ignored. An entry that is not an IP address stops the walk
at the last address known good (a trusted proxy): a malformed header can never make a
client pick its own key, and never raises.

The work is bounded whatever a header holds: only the last `MAX_HEADER_BYTES` (8 KB) of a
forwarding header are read, at most `MAX_HOPS` (32) entries of them, and only as far as the
walk goes (usually two or three entries); a longer chain stops at the last trusted address.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

__all__ = (
    "MAX_HEADER_BYTES",
    "MAX_HOPS",
    "ClientAddress",
    "TrustedProxies",
    "parse_forwarded_for",
    "parse_x_forwarded_for",
)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ForwardedHeader = Literal["x-forwarded-for", "forwarded"]

_UNKNOWN = "unknown"
# Longest text accepted as one address (a bracketed IPv6 with zone and port fits easily).
_MAX_ENTRY = 100
# Longest Forwarded element read (for=, by=, host=, proto= of one proxy fit easily).
_MAX_ELEMENT = 1024
# Addresses remembered by a ClientAddress (text -> parsed), cleared when full.
_MAX_SEEN = 4096
#: Forwarding entries read, from the right; a longer chain stops at the last trusted address.
MAX_HOPS = 32
#: Characters of a forwarding header read, from its end (the entries our own proxies wrote
#: are last); what lies before is never looked at, so a 1 MB header costs what 8 KB does.
MAX_HEADER_BYTES = 8192


class TrustedProxies:
    """A set of networks (CIDRs) whose forwarding headers are believed.

    ``TrustedProxies(["10.0.0.0/8", "127.0.0.1"])``; an empty set (the default everywhere)
    trusts no one. The entry ``"unix"`` trusts the peer of a Unix socket (which has no
    address: the ASGI ``client`` is ``None``), for a server that listens only on a socket
    its proxy writes to (``uvicorn --uds``, ``hypercorn --bind unix:...``).
    """

    __slots__ = ("_networks", "unix")

    def __init__(self, networks: Iterable[str | IPNetwork] = ()) -> None:
        if isinstance(networks, str):
            raise TypeError("networks must be an iterable of CIDR strings, not one str")
        parsed: list[IPNetwork] = []
        #: whether the peer of a Unix socket is trusted
        self.unix = False
        for network in networks:
            if isinstance(network, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
                parsed.append(network)
                continue
            if not isinstance(network, str):
                raise TypeError(f"trusted proxies must be CIDR strings, got {network!r}")
            if network.strip().lower() == "unix":
                self.unix = True
                continue
            try:
                parsed.append(ipaddress.ip_network(network.strip(), strict=False))
            except ValueError:
                raise ValueError(
                    f"invalid trusted proxy network {network!r}: expected an IP address, "
                    "a CIDR such as '10.0.0.0/8' or 'fd00::/8', or 'unix'"
                ) from None
        self._networks: tuple[IPNetwork, ...] = tuple(parsed)

    def __bool__(self) -> bool:
        return bool(self._networks) or self.unix

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            return False
        return any(address in network for network in self._networks)

    def __repr__(self) -> str:
        names = [str(network) for network in self._networks] + (["unix"] if self.unix else [])
        return f"TrustedProxies({names!r})"


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
    """The last entries (at most `MAX_HOPS`, from the last `MAX_HEADER_BYTES` characters)
    of every ``X-Forwarded-For`` field line, in order (left to right)."""
    entries = list(_x_forwarded_for_from_right(values))
    entries.reverse()
    return entries


def parse_forwarded_for(values: Sequence[str]) -> list[str]:
    """The ``for=`` value of the last elements (at most `MAX_HOPS`, from the last
    `MAX_HEADER_BYTES` characters) of every ``Forwarded`` field line (RFC 7239), left to
    right; an element without ``for=`` (or one that does not parse) gives ``""``."""
    entries = list(_forwarded_for_from_right(values))
    entries.reverse()
    return entries


def _tail(values: Sequence[str]) -> tuple[str, bool]:
    """The field lines joined by ``,``, cut to their last `MAX_HEADER_BYTES` characters, and
    whether anything was cut off."""
    room = MAX_HEADER_BYTES
    parts: list[str] = []
    for value in reversed(values):
        if len(value) >= room:
            parts.append(value[len(value) - room :])
            return ",".join(reversed(parts)), len(value) > room or len(parts) < len(values)
        parts.append(value)
        room -= len(value) + 1
    return ",".join(reversed(parts)), False


def _x_forwarded_for_from_right(values: Sequence[str]) -> Iterator[str]:
    text, cut = _tail(values)
    entries = text.rsplit(",", MAX_HOPS)
    # the leftmost piece is partial (cut) or holds every entry past the cap: never read it
    last = 1 if cut or len(entries) > MAX_HOPS else 0
    for index in range(len(entries) - 1, last - 1, -1):
        yield entries[index]


# One Forwarded element read backwards: plain text or quoted strings, up to a comma. Read
# from the right, the elements our proxies appended are parsed before anything a client
# wrote, so a client's unbalanced quote cannot swallow them.
_ELEMENT_REVERSED = re.compile(r'(?:[^,"]+|"[^"]*(?:"|$))*')


def _forwarded_for_from_right(values: Sequence[str]) -> Iterator[str]:
    text, cut = _tail(values)
    backwards = text[::-1]
    position = 0
    end = len(backwards)
    for _ in range(MAX_HOPS):
        match = _ELEMENT_REVERSED.match(backwards, position)
        assert match is not None  # the pattern matches the empty string
        position = match.end()
        if position >= end and cut:
            return  # the leftmost element was cut: never read it
        yield _for_value(match.group()[::-1])
        if position >= end:
            return
        position += 1  # the comma


def _for_value(element: str) -> str:
    if len(element) > _MAX_ELEMENT:
        return ""  # no proxy writes one this long
    for pair in _split_outside_quotes(element, ";"):
        name, sep, raw = pair.partition("=")
        if sep and name.strip().lower() == "for":
            raw = raw.strip()
            if len(raw) >= 2 and raw[0] == raw[-1] == '"':
                raw = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            return raw
    return ""


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

    __slots__ = ("_anyone", "_header", "_ipv6_prefix", "_seen", "_trusted")

    def __init__(
        self,
        trusted: TrustedProxies | Iterable[str] = (),
        *,
        header: ForwardedHeader = "x-forwarded-for",
        ipv6_prefix: int = 64,
    ) -> None:
        self._trusted = trusted if isinstance(trusted, TrustedProxies) else TrustedProxies(trusted)
        #: any proxy trusted at all (TrustedProxies does not change once made)
        self._anyone = bool(self._trusted)
        if header not in ("x-forwarded-for", "forwarded"):
            raise ValueError(f"header must be 'x-forwarded-for' or 'forwarded', got {header!r}")
        self._header = header.encode("latin-1")
        if isinstance(ipv6_prefix, bool) or not isinstance(ipv6_prefix, int):
            raise TypeError(f"ipv6_prefix must be an int, got {type(ipv6_prefix).__name__}")
        if not 1 <= ipv6_prefix <= 128:
            raise ValueError(f"ipv6_prefix must be an int in [1, 128], got {ipv6_prefix!r}")
        self._ipv6_prefix = ipv6_prefix
        self._seen: dict[str, tuple[IPAddress | None, bool]] = {}

    @property
    def trusted(self) -> TrustedProxies:
        return self._trusted

    def __call__(self, scope: Mapping[str, Any]) -> str:
        """The client's address as a key: an IPv4 address, an IPv6 network, or
        ``"unknown"`` when the server gave no peer address (a Unix socket) and the socket's
        peer is not trusted (or forwarded nothing readable)."""
        client = scope.get("client")
        peer = client[0] if isinstance(client, (tuple, list)) and client else None
        if not isinstance(peer, str):
            if not self._trusted.unix:
                return _UNKNOWN
            peer = _UNKNOWN
            address: IPAddress | None = None
        elif not self._anyone:
            # fast path: nobody is trusted, the peer is the client
            if ":" not in peer:
                return peer
            return self._key(parse_address(peer), peer)
        else:
            address, is_trusted = self._lookup(peer)
            if not is_trusted:
                return self._key(address, peer)
        values = _header_values(scope, self._header)
        if not values:
            return self._key(address, peer)
        entries = (
            _x_forwarded_for_from_right(values)
            if self._header == b"x-forwarded-for"
            else _forwarded_for_from_right(values)
        )
        for entry in entries:
            forwarded, is_trusted = self._lookup(entry)
            if forwarded is None:
                break  # malformed or obfuscated: keep the last address known good
            address = forwarded
            if not is_trusted:
                break
        return self._key(address, peer)

    def _lookup(self, text: str) -> tuple[IPAddress | None, bool]:
        """The address in ``text`` and whether it is a trusted proxy, remembered for the
        few thousand texts seen last (parsing an address costs several microseconds)."""
        seen = self._seen
        found = seen.get(text)
        if found is None:
            address = parse_address(text)
            found = (address, address is not None and address in self._trusted)
            if len(seen) >= _MAX_SEEN:
                seen.clear()  # arbitrary entries must not grow it without bound
            seen[text] = found
        return found

    def _key(self, address: IPAddress | None, peer: str) -> str:
        if address is None:
            return peer if len(peer) <= _MAX_ENTRY else _UNKNOWN
        if isinstance(address, ipaddress.IPv6Address) and self._ipv6_prefix < 128:
            drop = 128 - self._ipv6_prefix
            return f"{ipaddress.IPv6Address(int(address) >> drop << drop)}/{self._ipv6_prefix}"
        return str(address)


def _header_values(scope: Mapping[str, Any], name: bytes) -> list[str]:
    """The field lines of header ``name``, each cut to its last `MAX_HEADER_BYTES` + 1
    bytes (one more than is read, so that `_tail` sees it was cut); items that are not
    pairs of bytes are skipped (ASGI servers never send them)."""
    values: list[str] = []
    headers = scope.get("headers")
    if not isinstance(headers, (list, tuple)):
        return values
    for item in headers:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            continue
        key, value = item
        if isinstance(key, bytes) and isinstance(value, bytes) and key.lower() == name:
            values.append(value[-MAX_HEADER_BYTES - 1 :].decode("latin-1"))
    return values
