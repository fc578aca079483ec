"""Opening the MongoDB database the gateway keeps its state in."""

from __future__ import annotations

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.uri_parser import parse_uri


def open_database(uri: str, default_db: str, timeout: float) -> tuple[AsyncMongoClient, AsyncDatabase]:
    """A client for `uri` and the database it names (or `default_db`).

    No I/O happens until first use; every operation fails after about `timeout` seconds
    when the server is unreachable.
    """
    name = parse_uri(uri).get("database") or default_db
    client: AsyncMongoClient = AsyncMongoClient(
        uri,
        serverSelectionTimeoutMS=int(timeout * 1000),
        connectTimeoutMS=int(timeout * 1000),
        socketTimeoutMS=int(max(timeout, 30) * 1000),
        # a request waiting for a pooled connection gives up too (the default waits forever)
        waitQueueTimeoutMS=int(max(timeout, 30) * 1000),
        retryWrites=False,
        tz_aware=True,
        appname="mediaserver",
    )
    return client, client[name]
