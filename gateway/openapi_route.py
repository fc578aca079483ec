"""GET /api/openapi.json (placeholder until the document is written)."""

from __future__ import annotations


def handlers() -> list:
    return []
