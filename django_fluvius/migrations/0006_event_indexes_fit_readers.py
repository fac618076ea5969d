"""Event indexes fit their readers (issue 15): every append paid for nine b-trees.

Kept plain: the stream (aggregate_id, version), the feed (txid, position), the
position, (namespace, evt_key) and command_id (the admin's search). Made partial
(only rows that have a value; every reader asks for a value, never for ''):
user, tenant, correlation id. ``created``: a BRIN index on PostgreSQL (events are
appended in time order, so block ranges summarise it in a few pages and an
append almost never touches it); a plain b-tree elsewhere. The BRIN index is
made here, not in ``Event.Meta`` (it exists on PostgreSQL only).
"""

import django.utils.timezone
from django.db import migrations, models

CREATED_INDEX = "fluvius_event_created"


def add_created_index(apps, schema_editor):
    table = schema_editor.quote_name("django_fluvius_event")
    kind = " USING brin" if schema_editor.connection.vendor == "postgresql" else ""
    schema_editor.execute(f"CREATE INDEX {schema_editor.quote_name(CREATED_INDEX)} ON {table}{kind} "
                          f"({schema_editor.quote_name('created')})")


def drop_created_index(apps, schema_editor):
    schema_editor.execute(f"DROP INDEX {schema_editor.quote_name(CREATED_INDEX)}"
                          + (" ON " + schema_editor.quote_name("django_fluvius_event")
                             if schema_editor.connection.vendor == "mysql" else ""))


class Migration(migrations.Migration):

    dependencies = [
        ("django_fluvius", "0005_drop_outbox"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="event", name="fluvius_event_correlation"),
        migrations.RemoveIndex(model_name="event", name="fluvius_event_user"),
        migrations.RemoveIndex(model_name="event", name="fluvius_event_tenant"),
        migrations.AlterField(
            model_name="event",
            name="created",
            field=models.DateTimeField(default=django.utils.timezone.now, verbose_name="created"),
        ),
        # atomic=False: MariaDB / MySQL cannot run DDL inside the transaction Django would force.
        migrations.RunPython(add_created_index, drop_created_index, atomic=False),
        migrations.AddIndex(
            model_name="event",
            index=models.Index(condition=models.Q(("correlation_id", ""), _negated=True), fields=["correlation_id"],
                               name="fluvius_event_correlation_set"),
        ),
        migrations.AddIndex(
            model_name="event",
            index=models.Index(condition=models.Q(("user", ""), _negated=True), fields=["user"],
                               name="fluvius_event_user_set"),
        ),
        migrations.AddIndex(
            model_name="event",
            index=models.Index(condition=models.Q(("tenant", ""), _negated=True), fields=["tenant"],
                               name="fluvius_event_tenant_set"),
        ),
    ]
