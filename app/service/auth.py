"""Token authentication: with a token, every endpoint but health needs it, either as
`Authorization: Bearer TOKEN` (API clients) or as the HttpOnly, SameSite=Strict cookie the web
page's login form sets (a browser cannot add a header to an <img> request). Both compared in
constant time."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import HTTPException, Request

COOKIE = "copytrace_token"


def same_token(given: str, token: str) -> bool:
    """Constant-time comparison of a token typed into the login form."""
    return hmac.compare_digest(given.encode(), token.encode())


def token_ok(request: Request, token: str | None) -> bool:
    """Whether the request carries the token (always true without one)."""
    if token is None:
        return True
    header = request.headers.get("authorization", "")
    cookie = request.cookies.get(COOKIE, "")
    return (hmac.compare_digest(header.encode(), f"Bearer {token}".encode())
            | hmac.compare_digest(cookie.encode(), token.encode()))


def bearer_guard(token: str | None) -> Callable[[Request], None]:
    """A FastAPI dependency that refuses (401) a request without the token; None: allow all."""

    def authorized(request: Request) -> None:
        if not token_ok(request, token):
            raise HTTPException(401, "missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    return authorized
