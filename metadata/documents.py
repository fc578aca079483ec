"""Frozen dataclasses stored as MongoDB documents (`id` is `_id`)."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T", bound="Document")


class Document:
    """Mixin for frozen dataclasses with an `id` field: to and from MongoDB documents."""

    def to_document(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)  # type: ignore[call-overload]
        doc["_id"] = doc.pop("id")
        return doc

    @classmethod
    def from_document(cls: type[T], doc: dict[str, Any]) -> T:
        """Unknown fields are ignored, missing ones take their defaults."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        values = {k: v for k, v in doc.items() if k in names}
        values["id"] = doc["_id"]
        return cls(**values)

    def evolve(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]
