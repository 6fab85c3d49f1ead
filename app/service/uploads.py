"""Reading an uploaded image: streamed, and refused with 413 as soon as it passes the limit."""

from __future__ import annotations

from fastapi import HTTPException, Request


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 once it passes `limit` (before reading the rest)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"image larger than the {limit} byte limit ({declared} bytes)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"image larger than the {limit} byte limit")
        chunks.append(chunk)
    return b"".join(chunks)
