"""Re-wrap every subject key with the current key-encryption key (docs/privacy.md).

Put the new KEK first in ``FLUVIUS['PRIVACY_KEK']`` and keep the old one after it;
run this command; then drop the old KEK from the setting. Personal data itself is
not re-encrypted: only the subject keys are re-wrapped (one short row each).
"""

from django.core.management.base import BaseCommand, CommandError

from django_fluvius.conf import fluvius_settings
from django_fluvius.exceptions import PrivacyError
from django_fluvius.management.options import database_alias
from django_fluvius.privacy import keys


class Command(BaseCommand):
    help = "Re-wrap every subject key with the first KEK of FLUVIUS['PRIVACY_KEK'] (or the KMS's current key)."

    def add_arguments(self, parser):
        parser.add_argument("--database", default=None, type=database_alias, help="database alias of the event store")
        parser.add_argument("--batch-size", type=int, default=500)

    def handle(self, *args, **options):
        using = options["database"] or fluvius_settings.DATABASE
        try:
            done, current = keys.rotate(using, options["batch_size"])
        except PrivacyError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"Re-wrapped {done} subject key(s) with {keys.wrapper().key_id}; "
                          f"{current} already used it.")
