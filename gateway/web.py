"""The upload page (placeholder until the page is written)."""

from __future__ import annotations


def handlers() -> list:
    return []
