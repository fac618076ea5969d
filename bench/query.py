"""The read side (issue 4): QueryBuilder against a hand-written QuerySet, and deep pages.

1. The same filtered, sorted, paginated query (active users created since a date,
   newest first, 50 rows from offset 20) built and run through ``QueryBuilder``,
   through ``QueryBuilder.from_params`` (every parameter checked, as the REST list
   does), and as a hand-written ``QuerySet``: the baseline. Target: QueryBuilder
   <= 1.1x the QuerySet.
2. A page deep in a 1,000,000-row projection table (the example ``app_user_user``
   in a benchmark database of its own): by keyset cursor and by offset, against
   the first page as the baseline. Target: the cursor page at depth 1,000,000
   within 2x the first page.

Rows are loaded with PostgreSQL ``COPY`` (psycopg) or, with ``--sqlite``, one
``executemany`` per 50,000 rows. ``--quick`` loads 20,000 rows for a smoke run.
"""

from __future__ import annotations

import datetime
import statistics
import time
import uuid

from bench.common import arg_parser, dsn, interleaved, report, setup_django

T0 = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
PAGE = 50
COLUMNS = ("id", "version", "created_at", "updated_at", "name", "email", "active")


def rows(n: int):
    for i in range(n):
        at = T0 + datetime.timedelta(seconds=i)
        yield (uuid.uuid4(), 1, at, at, f"user {i}", f"user{i}@example.com", i % 10 != 0)


def load_postgres(url: str, n: int) -> None:
    import psycopg

    with psycopg.connect(dsn(url), autocommit=True) as conn:
        # The GIN search index is built once after the load: cheaper than row by row.
        conn.execute("DROP INDEX IF EXISTS app_user_search")
        conn.execute("TRUNCATE app_user_user")
        with conn.cursor() as cur, cur.copy(f"COPY app_user_user ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for row in rows(n):
                copy.write_row(row)
        conn.execute("CREATE INDEX app_user_search ON app_user_user USING gin "
                     "((to_tsvector('simple'::regconfig, COALESCE(name, '') || ' ' || COALESCE(email, ''))))")
        conn.execute("VACUUM ANALYZE app_user_user")


def load_sqlite(n: int) -> None:
    from django.db import connection, transaction

    ops = connection.ops
    sql = f"INSERT INTO app_user_user ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))})"
    batch = []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM app_user_user")
        for pk, version, created, _updated, name, email, active in rows(n):
            at = ops.adapt_datetimefield_value(created)
            batch.append((pk.hex, version, at, at, name, email, active))
            if len(batch) == 50_000:
                cursor.executemany(sql, batch)
                batch.clear()
        if batch:
            cursor.executemany(sql, batch)
        cursor.execute("ANALYZE")


def per_query(func, reps: int):
    """A measurement: ``func`` run ``reps`` times; returns milliseconds per run."""
    def measure() -> float:
        start = time.perf_counter()
        for _ in range(reps):
            func()
        return (time.perf_counter() - start) * 1000 / reps
    return measure


def main(argv=None) -> dict:
    parser = arg_parser(__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=60, help="queries per measurement (builder vs QuerySet)")
    args = parser.parse_args(argv)
    n = 20_000 if args.quick else args.rows
    runs = 1 if args.quick else args.runs
    reps = 10 if args.quick else args.reps
    url = setup_django("fluvius_bench_query", sqlite=args.sqlite)

    from django.db import connection

    from django_fluvius import QueryBuilder
    from example_project.users.models import User

    start = time.perf_counter()
    if connection.vendor == "postgresql":
        load_postgres(url, n)
    else:
        load_sqlite(n)
    load_seconds = time.perf_counter() - start
    assert User.objects.count() == n

    # 1. The same query three ways. "since" keeps most rows in range: the index walk
    # and the row decoding dominate, as on a real list endpoint.
    since = T0 + datetime.timedelta(seconds=n // 2)
    params = {"active": "true", "created_at__gte": since.isoformat(), "ordering": "-created_at",
              "offset": "20", "limit": str(PAGE)}

    def builder():
        return QueryBuilder("user").filter(active=True, created_at__gte=since) \
            .sort("created_at", desc=True).offset(20).limit(PAGE).execute()

    def from_params():
        return QueryBuilder.from_params("user", params).execute()

    def queryset():
        return list(User.objects.filter(active=True, created_at__gte=since)
                    .order_by("-created_at", "-id")[20:20 + PAGE])

    same = [u.pk for u in builder()]
    assert same == [u.pk for u in queryset()] == [u.pk for u in from_params()] and len(same) == PAGE
    for func in (builder, from_params, queryset):  # warm up: imports, caches, plans
        per_query(func, max(1, reps // 10))()
    # Many short interleaved measurements: a burst of load from a neighbour hits both
    # sides alike and moves the medians less than a few long ones would.
    rounds = 3 * runs
    versus_qs = interleaved(per_query(builder, reps), per_query(queryset, reps), rounds)
    params_vs_qs = interleaved(per_query(from_params, reps), per_query(queryset, reps), rounds)

    # 2. Deep pages: the last page of the table, newest first.
    newest_first = QueryBuilder("user").sort("created_at", desc=True).limit(PAGE)
    depth = n - PAGE
    before = list(User.objects.order_by("-created_at", "-id")[depth - 1:depth])[0]
    cursor = newest_first.cursor_for(before)
    first_ids = [u.pk for u in newest_first.page().items]
    deep_by_cursor = [u.pk for u in newest_first.page(cursor).items]
    deep_by_offset = [u.pk for u in newest_first.offset(depth).page().items]
    assert deep_by_cursor == deep_by_offset and len(deep_by_cursor) == PAGE and first_ids != deep_by_cursor
    deep_reps = 2 if args.quick else 5
    offset_reps = 1 if args.quick else 3
    first = per_query(lambda: newest_first.page(), deep_reps)
    by_cursor = per_query(lambda: newest_first.page(cursor), deep_reps)
    by_offset = per_query(lambda: newest_first.offset(depth).page(), offset_reps)
    first(), by_cursor()  # warm up
    pages = interleaved(by_cursor, first, max(runs, 3))
    offset_ms = statistics.median(by_offset() for _ in range(max(runs, 3) if not args.quick else 1))
    connection.close()

    return report("query", {
        "rows in the projection table": n,
        "load seconds (COPY / executemany)": load_seconds,
        "QuerySet page ms (median)": versus_qs["baseline"],
        "QueryBuilder page ms (median)": versus_qs["subject"],
        "QueryBuilder / QuerySet (target <= 1.1)": versus_qs["subject"] / versus_qs["baseline"],
        "from_params page ms (median)": params_vs_qs["subject"],
        "from_params / QuerySet": params_vs_qs["subject"] / params_vs_qs["baseline"],
        "first page ms (median)": pages["baseline"],
        f"cursor page at depth {depth} ms (median)": pages["subject"],
        "cursor deep / first page (target <= 2)": pages["subject"] / pages["baseline"],
        f"offset page at depth {depth} ms (median)": offset_ms,
        "offset deep / first page": offset_ms / pages["baseline"],
    }, lines=[f"{connection.vendor}, {n} rows, pages of {PAGE}; builder vs QuerySet: {rounds} interleaved "
              f"measurements of {reps} queries each; pages: {max(runs, 3)} interleaved runs"])


if __name__ == "__main__":
    main()
