"""Bearer-token authentication: with a token, every endpoint but health needs
`Authorization: Bearer TOKEN` (compared in constant time)."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import HTTPException, Request


def bearer_guard(token: str | None) -> Callable[[Request], None]:
    """A FastAPI dependency that refuses (401) a request without the token; None: allow all."""

    def authorized(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise HTTPException(401, "missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    return authorized
