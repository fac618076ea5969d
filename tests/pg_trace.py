"""What a Django connection sends PostgreSQL, from libpq's own trace (psycopg 3's ``PGconn.trace``)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection


@contextmanager
def protocol_trace() -> Iterator[list[str]]:
    """The frontend messages sent inside the block, filled in at its end.

    Each is libpq's line without the direction and length: ``Query "BEGIN"``,
    ``Parse "_pg3_0" "WITH ..."``, ``Bind ...``, ``Execute "" 0``, ``Sync``.
    """
    connection.ensure_connection()
    from psycopg.pq import Trace

    pgconn = connection.connection.pgconn
    sent: list[str] = []
    with tempfile.TemporaryFile("w+") as trace:
        pgconn.trace(trace.fileno())
        pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS | Trace.REGRESS_MODE)
        try:
            yield sent
        finally:
            pgconn.untrace()  # flushes libpq's buffer
            trace.seek(0)
            sent += [line.split("\t", 2)[2] for line in trace.read().splitlines() if line.startswith("F\t")]


def simple_queries(sent: list[str]) -> list[str]:
    """The simple-protocol queries among them (``BEGIN``, ``COMMIT``, ``ROLLBACK``, ``DEALLOCATE ALL``)."""
    return [message.split(None, 1)[1].strip('"') for message in sent if message.startswith("Query")]
