"""Bearer tokens with `read` and `write` scopes, the dashboard's session cookie and CSRF.

A token is never compared as a plain string: each configured token's SHA-256 digest
is compared with the presented one's by `hmac.compare_digest`, against every
configured token (no early exit), so the time taken says nothing about a near miss.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from tasker.errors import ConfigurationError

READ, WRITE = "read", "write"
SCOPES = (READ, WRITE)

#: The dashboard's session cookie (its value is the token's digest, never the token).
SESSION_COOKIE = "tasker_session"


@dataclass(frozen=True)
class Principal:
    """Who made a request: the scope of the token, and a digest naming the token."""

    scope: str
    credential: str

    @property
    def can_write(self) -> bool:
        """The token has the `write` scope."""
        return self.scope == WRITE


def parse_tokens(text: str) -> dict[str, str]:
    """Parse `TASKER_API_TOKENS`: comma-separated `token:scope` pairs.

    Raises:
        ConfigurationError: an entry has no token, or a scope other than read or write.
    """
    tokens: dict[str, str] = {}
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        token, sep, scope = entry.rpartition(":")
        if not sep or not token:
            raise ConfigurationError(
                "TASKER_API_TOKENS: each entry must be token:scope (scope read or write)"
            )
        tokens[token] = scope
    return tokens


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class TokenBook:
    """The configured tokens, looked up in constant time.

    Args:
        tokens: token -> scope; None reads `TASKER_API_TOKENS`.
        insecure: no tokens at all: every request acts with the `write` scope (for
            `tasker serve --insecure-no-auth`, which binds to 127.0.0.1 only).

    Raises:
        ConfigurationError: a scope is neither read nor write, or a token is empty.
    """

    def __init__(self, tokens: Mapping[str, str] | None, insecure: bool = False) -> None:
        if tokens is None:
            tokens = parse_tokens(os.environ.get("TASKER_API_TOKENS", ""))
        for token, scope in tokens.items():
            if not isinstance(token, str) or not token:
                raise ConfigurationError("an API token must be a non-empty string")
            if scope not in SCOPES:
                raise ConfigurationError(
                    f"API token scope must be 'read' or 'write', got {scope!r}"
                )
        self._digests = [(_digest(t), s) for t, s in tokens.items()]
        self.insecure = insecure
        # The CSRF key is derived from the tokens, so every server process given the
        # same tokens accepts the same CSRF tokens; without tokens it is per process.
        seed = "\n".join(sorted(d for d, _ in self._digests)) if self._digests else None
        self._csrf_key = (
            hashlib.sha256(b"tasker-csrf\n" + seed.encode()).digest()
            if seed
            else secrets.token_bytes(32)
        )

    @property
    def empty(self) -> bool:
        """No token is configured."""
        return not self._digests

    def _match(self, digest: str) -> Principal | None:
        found: Principal | None = None
        for known, scope in self._digests:  # every entry, no early exit
            if hmac.compare_digest(known, digest):
                found = Principal(scope, known)
        return found

    def from_token(self, token: str | None) -> Principal | None:
        """The principal of a bearer token, or None for a missing or unknown one."""
        if self.insecure:
            return Principal(WRITE, "insecure")
        if not token:
            return None
        return self._match(_digest(token))

    def from_cookie(self, value: str | None) -> Principal | None:
        """The principal of a dashboard session cookie, or None."""
        if self.insecure:
            return Principal(WRITE, "insecure")
        if not value or len(value) != 64:
            return None
        return self._match(value)

    @staticmethod
    def cookie_value(token: str) -> str:
        """What the session cookie holds for a token: its digest."""
        return _digest(token)

    def csrf_token(self, principal: Principal) -> str:
        """The CSRF token that the dashboard's forms carry for this principal."""
        return hmac.new(self._csrf_key, principal.credential.encode(), "sha256").hexdigest()

    def csrf_ok(self, principal: Principal, presented: str | None) -> bool:
        """The presented CSRF token is this principal's."""
        return bool(presented) and hmac.compare_digest(self.csrf_token(principal), str(presented))


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not header:
        return None
    kind, _, token = header.partition(" ")
    return token.strip() or None if kind.lower() == "bearer" else None
