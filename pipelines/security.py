"""API keys for the serving API: stored only as hashes, checked in constant time.

A key is a random secret handed to a client; the server's settings hold only its hash, in one of
two self-describing formats:

    sha256$<hex digest>                              fast; right for long random keys
    scrypt$<log2 n>$<r>$<p>$<salt, base64>$<digest, base64>   slow by design; for keys a person chose

`shadowcast hash-key` prints a hash for a new key. Clients send the key as `X-API-Key: <key>` or
`Authorization: Bearer <key>`. This module knows nothing about HTTP frameworks: the FastAPI side
(`pipelines/api/auth.py`) turns its answers into 401/403.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass

SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P = 14, 8, 1  # ~16 MiB and tens of ms per check: the usual interactive cost
SCHEMES = ("sha256", "scrypt")


class KeyHashError(ValueError):
    """A configured key hash is malformed; the message says which one and why."""


@dataclass(frozen=True)
class KeyHash:
    scheme: str
    digest: bytes
    salt: bytes = b""
    log2_n: int = SCRYPT_LOG2_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P

    @classmethod
    def parse(cls, text: str) -> KeyHash:
        parts = text.strip().split("$")
        try:
            if parts[0] == "sha256" and len(parts) == 2:
                digest = bytes.fromhex(parts[1])
                if len(digest) != 32:
                    raise ValueError("a SHA-256 digest is 64 hex digits")
                return cls("sha256", digest)
            if parts[0] == "scrypt" and len(parts) == 6:
                log2_n, r, p = (int(v) for v in parts[1:4])
                if not (1 <= log2_n <= 20 and r >= 1 and p >= 1):
                    raise ValueError("scrypt parameters out of range")
                return cls("scrypt", _b64decode(parts[5]), _b64decode(parts[4]), log2_n, r, p)
        except ValueError as exc:
            raise KeyHashError(f"key hash {_redacted(text)!r}: {exc}") from None
        raise KeyHashError(f"key hash {_redacted(text)!r}: expected 'sha256$<hex>' or "
                           "'scrypt$<log2 n>$<r>$<p>$<salt>$<digest>' (make one with `shadowcast hash-key`)")

    def digest_of(self, key: str) -> bytes:
        raw = key.encode()
        if self.scheme == "sha256":
            return hashlib.sha256(raw).digest()
        return hashlib.scrypt(raw, salt=self.salt, n=2 ** self.log2_n, r=self.r, p=self.p,
                              maxmem=256 * 1024 * 1024, dklen=len(self.digest))

    def matches(self, key: str) -> bool:
        return hmac.compare_digest(self.digest_of(key), self.digest)

    def __str__(self) -> str:
        if self.scheme == "sha256":
            return f"sha256${self.digest.hex()}"
        return f"scrypt${self.log2_n}${self.r}${self.p}${_b64encode(self.salt)}${_b64encode(self.digest)}"


def hash_key(key: str, scheme: str = "sha256") -> str:
    """The text to put in the serve settings' `api_key_hashes` for `key`."""
    if not key:
        raise ValueError("the key is empty")
    if scheme == "sha256":
        return str(KeyHash("sha256", hashlib.sha256(key.encode()).digest()))
    if scheme == "scrypt":
        template = KeyHash("scrypt", b"\0" * 32, salt=secrets.token_bytes(16))
        return str(KeyHash("scrypt", template.digest_of(key), template.salt))
    raise ValueError(f"unknown hash scheme {scheme!r}; use one of {list(SCHEMES)}")


def new_key() -> str:
    """A fresh random key (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


class KeyVerifier:
    """Checks a presented key against every configured hash.

    Every hash is compared (no early exit) so the time taken does not tell which entry matched.
    scrypt is deliberately slow, so keys that already passed are remembered by their SHA-256
    (a digest, never the key itself); the cache only ever holds keys that are valid.
    """

    def __init__(self, hashes: Sequence[str | KeyHash], cache_size: int = 1024) -> None:
        self._hashes = [h if isinstance(h, KeyHash) else KeyHash.parse(h) for h in hashes]
        self._accepted: set[bytes] = set()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @property
    def configured(self) -> bool:
        return bool(self._hashes)

    def verify(self, key: str | None) -> bool:
        if not key or not self._hashes:
            return False
        fingerprint = hashlib.sha256(key.encode()).digest()
        if any(hmac.compare_digest(fingerprint, seen) for seen in self._snapshot()):
            return True
        matched = False
        for stored in self._hashes:
            matched |= stored.matches(key)
        if matched:
            with self._lock:
                if len(self._accepted) >= self._cache_size:
                    self._accepted.clear()
                self._accepted.add(fingerprint)
        return matched

    def _snapshot(self) -> list[bytes]:
        with self._lock:
            return list(self._accepted)


def presented_key(api_key_header: str | None, authorization: str | None) -> str | None:
    """The key a request carries: `X-API-Key`, else an `Authorization: Bearer` token."""
    if api_key_header:
        return api_key_header.strip()
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _b64decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise ValueError("not valid base64") from None


def _redacted(text: str) -> str:
    return text if len(text) <= 16 else f"{text[:12]}…"
