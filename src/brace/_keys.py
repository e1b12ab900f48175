"""Rate-limit keys are untrusted data: any text is a key, and no key is large.

A key usually comes from a request (a user name, an address, a header), so an attacker
may choose its text. Two rules make any ``str`` safe in every store:

- **Bounded size.** A key of `MAX_KEY_LENGTH` characters or more is replaced by a
  digest of its text (BLAKE2b, 128 bits, from the standard library), padded to exactly
  `MAX_KEY_LENGTH` characters. A key shorter than that is kept as it is. The two sets
  cannot meet: a kept key is shorter than any digest key, so no chosen short key can
  take a long key's place, and two long keys share a budget only if their digests
  collide (2**-128).
- **Any text.** Lone surrogates (what ``json.loads('"\\\\ud800"')`` returns) and NUL are
  ordinary characters; where a store needs bytes it encodes with `encode_key`, which
  maps distinct texts to distinct bytes (UTF-8 with ``surrogatepass``) and never
  raises.

The check costs one ``len`` on the hot path; keys are hashed only when long.
"""

from __future__ import annotations

from hashlib import blake2b

__all__ = ("MAX_KEY_LENGTH", "bound_key", "encode_key")

#: Keys of this many characters or more are stored as a digest of this length.
MAX_KEY_LENGTH = 256

_DIGEST_BYTES = 16
_PAD = "#" * (MAX_KEY_LENGTH - 2 * _DIGEST_BYTES)


def encode_key(key: str) -> bytes:
    """The key's bytes: UTF-8, lone surrogates kept (one text, one byte string)."""
    return key.encode("utf-8", "surrogatepass")


def bound_key(key: str) -> str:
    """``key`` itself when shorter than `MAX_KEY_LENGTH`, else its padded digest."""
    if len(key) < MAX_KEY_LENGTH:
        return key
    digest = blake2b(encode_key(key), digest_size=_DIGEST_BYTES).hexdigest()
    return _PAD + digest
