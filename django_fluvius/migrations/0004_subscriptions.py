"""Subscriptions (issue 14): handler checkpoints, pending receipts; outbox rows become checkpoints.

The outbox is drained here: if rows are left (events committed but not yet
handed over by the old relay), every ``start="now"`` event handler of this code
gets a checkpoint just before the earliest of their events, so the new relay
delivers them (receipts keep the ones already handled from running twice).
0005 then drops the outbox table.
"""

import django.utils.timezone
from django.db import migrations, models


def outbox_to_checkpoints(apps, schema_editor):
    Outbox = apps.get_model("django_fluvius", "Outbox")
    Event = apps.get_model("django_fluvius", "Event")
    Checkpoint = apps.get_model("django_fluvius", "Checkpoint")
    using = schema_editor.connection.alias
    rows = list(Outbox.objects.using(using).values_list("aggregate_id", "version"))
    if not rows:
        return
    first = None
    for aggregate_id, version in rows:
        key = (Event.objects.using(using).filter(aggregate_id=aggregate_id, version=version)
               .values_list("txid", "position").first())
        if key is not None:
            key = (key[0] or 0, key[1])
            first = key if first is None or key < first else first
    if first is None:
        return
    # The handlers this code declares, asked of the app (migrations sit below delivery).
    from django.apps import apps as live_apps

    starts = live_apps.get_app_config("django_fluvius").handler_starts()
    for name, start in starts.items():
        if start != "now":  # "beginning" or a position: its own start covers the outbox
            continue
        Checkpoint.objects.using(using).get_or_create(
            name=name,
            defaults={"kind": "handler", "txid": first[0], "position": first[1] - 1,
                      "sent_txid": first[0], "sent_position": first[1] - 1})


class Migration(migrations.Migration):

    dependencies = [
        ('django_fluvius', '0003_idempotency_tenant'),
    ]

    operations = [
        migrations.AddField(
            model_name='checkpoint',
            name='created',
            field=models.DateTimeField(default=django.utils.timezone.now, verbose_name='created'),
        ),
        migrations.AddField(
            model_name='checkpoint',
            name='kind',
            field=models.CharField(choices=[('handler', 'event handler'), ('projection', 'async projection')], default='projection', max_length=10, verbose_name='kind'),
        ),
        migrations.AddField(
            model_name='checkpoint',
            name='lease_owner',
            field=models.CharField(blank=True, max_length=200, verbose_name='led by'),
        ),
        migrations.AddField(
            model_name='checkpoint',
            name='lease_until',
            field=models.DateTimeField(blank=True, null=True, verbose_name='lease until'),
        ),
        migrations.AddField(
            model_name='checkpoint',
            name='sent_position',
            field=models.BigIntegerField(default=0, verbose_name='handed over to (position)'),
        ),
        migrations.AddField(
            model_name='checkpoint',
            name='sent_txid',
            field=models.BigIntegerField(default=0, verbose_name='handed over to (transaction id)'),
        ),
        migrations.AddField(
            model_name='handlerreceipt',
            name='attempts',
            field=models.PositiveIntegerField(default=1, verbose_name='tries'),
        ),
        migrations.AddField(
            model_name='handlerreceipt',
            name='due',
            field=models.DateTimeField(blank=True, null=True, verbose_name='due again'),
        ),
        migrations.AddField(
            model_name='handlerreceipt',
            name='last_error',
            field=models.TextField(blank=True, verbose_name='last error'),
        ),
        migrations.AlterField(
            model_name='checkpoint',
            name='name',
            field=models.CharField(max_length=200, unique=True, verbose_name='subscription'),
        ),
        migrations.AlterField(
            model_name='handlerreceipt',
            name='status',
            field=models.CharField(choices=[('pending', 'pending'), ('done', 'done'), ('failed', 'dead-lettered'), ('discarded', 'discarded')], default='done', max_length=10, verbose_name='status'),
        ),
        migrations.AddIndex(
            model_name='handlerreceipt',
            index=models.Index(condition=models.Q(('status', 'pending')), fields=['handler', 'due'], name='fluvius_receipt_pending'),
        ),
        migrations.RunPython(outbox_to_checkpoints, migrations.RunPython.noop),
    ]
