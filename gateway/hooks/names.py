"""User names for event bodies, read from the accounts and kept briefly."""

from __future__ import annotations

import time
from collections import OrderedDict

from metadata.errors import MetadataError
from metadata.users import UserRepository

CACHE_SIZE = 1024
CACHE_SECONDS = 60.0


class UserNames:
    """The name of a user id (None when the account is not stored here), cached for a minute."""

    def __init__(self, users: UserRepository) -> None:
        self._users = users
        self._cache: OrderedDict[str, tuple[float, str | None]] = OrderedDict()

    async def __call__(self, user_id: str | None) -> str | None:
        if user_id is None:
            return None
        hit = self._cache.get(user_id)
        now = time.monotonic()
        if hit is not None and now - hit[0] < CACHE_SECONDS:
            return hit[1]
        try:
            user = await self._users.get(user_id)
        except MetadataError:
            return hit[1] if hit else None
        name = user.name if user is not None else None
        self._cache[user_id] = (now, name)
        self._cache.move_to_end(user_id)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return name
