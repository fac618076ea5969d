"""Forget a data subject: destroy their key and erase their personal data everywhere (docs/privacy.md).

    manage.py fluvius_forget <subject-id>

The subject is an aggregate id (a member forgets themself) or whatever id a
``PersonalData(subject=...)`` callable names (an order's customer). An unknown
subject is an error that changes nothing.
"""

from django.core.management.base import BaseCommand, CommandError

from django_fluvius.conf import fluvius_settings
from django_fluvius.exceptions import PrivacyError
from django_fluvius.management.options import database_alias
from django_fluvius.security.erasure import forget


class Command(BaseCommand):
    help = "Destroy a data subject's key and erase their personal fields in every copy."

    def add_arguments(self, parser):
        parser.add_argument("subject", help="the data subject's id (an aggregate id, or a customer id ...)")
        parser.add_argument("--database", default=None, type=database_alias, help="database alias of the event store")

    def handle(self, *args, **options):
        using = options["database"] or fluvius_settings.DATABASE
        try:
            erasure = forget(options["subject"], using)
        except PrivacyError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(
            f"Forgot subject {erasure.subject}: key destroyed; {len(erasure.aggregates)} aggregate(s) "
            f"recorded the erasure, {erasure.rows_erased} projection row(s) erased, "
            f"{erasure.snapshots_purged} snapshot(s) purged.")
