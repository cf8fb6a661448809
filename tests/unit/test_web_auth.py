"""Tokens, scopes, session cookies and CSRF tokens of the HTTP interfaces (pure)."""

from __future__ import annotations

import pytest

from tasker.errors import ConfigurationError
from tasker.web.auth import TokenBook, bearer, parse_tokens


def test_parse_tokens_reads_token_scope_pairs():
    """Given TASKER_API_TOKENS text, then each token maps to its scope (a token may hold
    colons: the scope is after the last one); a missing scope is refused."""
    assert parse_tokens(" a:read, b:c:write ,") == {"a": "read", "b:c": "write"}
    with pytest.raises(ConfigurationError, match="token:scope"):
        parse_tokens("lonely")


def test_token_book_finds_scopes_and_refuses_unknown_tokens():
    """Given a read and a write token, then each is found with its scope, and a missing,
    unknown or prefix-of-a-token value is not; a bad scope is a ConfigurationError."""
    book = TokenBook({"reader-token": "read", "writer-token": "write"})
    assert book.from_token("reader-token").scope == "read"
    assert book.from_token("writer-token").can_write
    for value in (None, "", "writer", "writer-token ", "reader-tokenx"):
        assert book.from_token(value) is None
    with pytest.raises(ConfigurationError, match="scope"):
        TokenBook({"t": "admin"})


def test_cookie_holds_a_digest_and_csrf_is_bound_to_the_token():
    """Given a book, then the session cookie of a token (its digest, not the token) names
    the same principal, and a CSRF token is valid for that principal only, and the same
    in every process configured with the same tokens."""
    book = TokenBook({"reader-token": "read", "writer-token": "write"})
    cookie = TokenBook.cookie_value("writer-token")
    assert "writer-token" not in cookie
    who = book.from_cookie(cookie)
    assert who is not None and who.can_write
    assert book.from_cookie("0" * 64) is None and book.from_cookie("short") is None
    reader = book.from_token("reader-token")
    csrf = book.csrf_token(who)
    assert book.csrf_ok(who, csrf)
    assert not book.csrf_ok(reader, csrf) and not book.csrf_ok(who, None)
    twin = TokenBook({"writer-token": "write", "reader-token": "read"})
    assert twin.csrf_ok(twin.from_token("writer-token"), csrf)


def test_insecure_book_lets_everyone_write_and_bearer_parses_headers():
    """Given --insecure-no-auth, then any caller has the write scope; and the bearer
    parser takes only `Bearer <token>`."""
    book = TokenBook({}, insecure=True)
    assert book.from_token(None).can_write and book.empty
    assert bearer("Bearer abc") == "abc" and bearer("bearer  abc ") == "abc"
    assert bearer("Basic abc") is None and bearer(None) is None and bearer("Bearer ") is None
