"""The outbox goes: the event log is the outbox now (0004 turned its rows into checkpoints)."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("django_fluvius", "0004_subscriptions"),
    ]

    operations = [
        migrations.DeleteModel(
            name="Outbox",
        ),
    ]
