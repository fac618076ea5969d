"""The (namespace, evt_key) index gains the feed's key: (namespace, evt_key, txid, position).

A subscription reads the events of its keys after its checkpoint, in feed order, a
few at a time. With (namespace, evt_key) alone the planner's generic plan (the relay's
statements are prepared) read every event of the keys ever written, then sorted them:
a read grew with the store. Now each key is one index range starting at the
checkpoint, and LIMIT stops it early. Still one index: the admin's key filter uses
its prefix as before.

On a large event table the plain migration blocks appends while it builds the
index. To avoid that on PostgreSQL, build it concurrently first and record the
migration as applied::

    CREATE INDEX CONCURRENTLY fluvius_event_key_feed
        ON django_fluvius_event (namespace, evt_key, txid, position);
    DROP INDEX CONCURRENTLY fluvius_event_ns_key;
    python manage.py migrate django_fluvius 0009 --fake
"""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("django_fluvius", "0008_mysql_feed_clock"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="event",
            index=models.Index(fields=["namespace", "evt_key", "txid", "position"], name="fluvius_event_key_feed"),
        ),
        migrations.RemoveIndex(model_name="event", name="fluvius_event_ns_key"),
    ]
