"""MariaDB / MySQL: the feed's commit-order key (``Event.txid``) comes from a clock row.

InnoDB has no transaction id a reader can compare, and AUTO_INCREMENT positions are
taken at insert and committed out of order. So on these databases every inserted
event takes the next tick of a one-row clock table, in a trigger: the row stays
locked until the writing transaction ends, so ticks are handed out in commit order
and a reader that sees tick N sees every tick below it (events/feed.py). Events
stored before this migration keep their ``txid`` (0) and stay first, in position order;
the clock starts above the highest ``txid`` stored.

Nothing happens on PostgreSQL (``txid`` is the transaction id) or SQLite (one writer).
"""

from django.db import migrations

CLOCK = "django_fluvius_feedclock"
TRIGGER = "django_fluvius_event_feed_tick"


def create_clock(apps, schema_editor):
    if schema_editor.connection.vendor != "mysql":
        return
    quote = schema_editor.connection.ops.quote_name
    events = quote(apps.get_model("django_fluvius", "Event")._meta.db_table)
    schema_editor.execute(
        f"CREATE TABLE {quote(CLOCK)} (id SMALLINT PRIMARY KEY, tick BIGINT NOT NULL) ENGINE=InnoDB"
    )
    # Ticks continue above those already stored (a database migrated back and forth again).
    schema_editor.execute(
        f"INSERT INTO {quote(CLOCK)} (id, tick) SELECT 1, COALESCE(MAX({quote('txid')}), 0) FROM {events}"
    )
    # Upsert, not UPDATE: a clock row deleted by hand comes back instead of leaving txid NULL.
    schema_editor.execute(
        f"CREATE TRIGGER {quote(TRIGGER)} BEFORE INSERT ON {events} FOR EACH ROW BEGIN"
        f" INSERT INTO {quote(CLOCK)} (id, tick) VALUES (1, 1) ON DUPLICATE KEY UPDATE tick = tick + 1;"
        f" SET NEW.txid = (SELECT tick FROM {quote(CLOCK)} WHERE id = 1);"
        " END"
    )


def drop_clock(apps, schema_editor):
    if schema_editor.connection.vendor != "mysql":
        return
    quote = schema_editor.connection.ops.quote_name
    schema_editor.execute(f"DROP TRIGGER IF EXISTS {quote(TRIGGER)}")
    schema_editor.execute(f"DROP TABLE IF EXISTS {quote(CLOCK)}")


class Migration(migrations.Migration):

    dependencies = [
        ("django_fluvius", "0007_privacy"),
    ]

    operations = [
        migrations.RunPython(create_clock, drop_clock, atomic=False, elidable=False),
    ]
