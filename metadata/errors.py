"""What can go wrong in the metadata store, without the driver's types.

Every repository method raises these instead of the MongoDB driver's errors, so the
layers above never import the driver to tell "unavailable" from "failed".
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, TypeVar

from pymongo.errors import ConnectionFailure, PyMongoError

C = TypeVar("C", bound=type)


class MetadataError(Exception):
    """The metadata store failed an operation; retrying later may succeed."""


class MetadataUnavailable(MetadataError):
    """The metadata store could not be reached (or did not answer in time)."""


def _translated(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    async def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return await method(*args, **kwargs)
        except ConnectionFailure as exc:
            raise MetadataUnavailable(str(exc)) from exc
        except PyMongoError as exc:
            raise MetadataError(str(exc)) from exc

    return call


def driver_errors_translated(cls: C) -> C:
    """Class decorator: every public coroutine method of `cls` raises MetadataError (or
    MetadataUnavailable) where the driver would raise its own error."""
    for name, member in list(vars(cls).items()):
        if not name.startswith("_") and inspect.iscoroutinefunction(member):
            setattr(cls, name, _translated(member))
    return cls
