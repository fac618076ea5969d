"""Export every personal value held for a data subject, decrypted, with its events, as JSON (GDPR art. 15).

    manage.py fluvius_export_subject <subject-id> [--output file.json]
"""

import json

from django.core.management.base import BaseCommand, CommandError
from django.core.serializers.json import DjangoJSONEncoder

from django_fluvius.conf import fluvius_settings
from django_fluvius.exceptions import PrivacyError
from django_fluvius.management.options import database_alias
from django_fluvius.security.erasure import export_subject


class Command(BaseCommand):
    help = "Write every personal field held for a data subject (decrypted, with its events) as JSON."

    def add_arguments(self, parser):
        parser.add_argument("subject", help="the data subject's id")
        parser.add_argument("--output", "-o", default=None, help="write to this file instead of stdout")
        parser.add_argument("--database", default=None, type=database_alias, help="database alias of the event store")

    def handle(self, *args, **options):
        using = options["database"] or fluvius_settings.DATABASE
        try:
            data = export_subject(options["subject"], using)
        except PrivacyError as exc:
            raise CommandError(exc.message) from exc
        text = json.dumps(data, cls=DjangoJSONEncoder, indent=2, ensure_ascii=False)
        if options["output"]:
            with open(options["output"], "w", encoding="utf-8") as out:
                out.write(text + "\n")
            self.stdout.write(f"Wrote {len(data['values'])} value(s) of subject {data['subject']} "
                              f"to {options['output']}.")
        else:
            self.stdout.write(text)
