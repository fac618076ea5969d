"""Remove staged uploads that their process left behind (``.upload-*.part`` files).

A worker killed mid-upload (gunicorn's timeout, SIGKILL, the OOM killer) leaves
its stage in the media staging directory. This removes the stages of processes
that are gone (on this host) and those unwritten for ``--max-age`` seconds
(default ``FLUVIUS['MEDIA_STAGE_MAX_AGE']``). Each process sweeps once when it
starts; Celery beat's ``fluvius.sweep_uploads`` task does it periodically.
"""

from django.core.management.base import BaseCommand, CommandError

from django_fluvius.media.storage import sweep_stages


class Command(BaseCommand):
    help = "Remove staged uploads left behind by dead processes or unwritten for --max-age seconds."

    def add_arguments(self, parser):
        parser.add_argument("--max-age", type=float, default=None,
                            help="seconds a stage may go unwritten (default FLUVIUS['MEDIA_STAGE_MAX_AGE'])")
        parser.add_argument("--dir", default=None, help="the staging directory (default: the media storage's)")
        parser.add_argument("--dry-run", action="store_true", help="list what would be removed")

    def handle(self, *args, max_age=None, dir=None, dry_run=False, **options):
        if max_age is not None and max_age < 0:
            raise CommandError("--max-age takes seconds >= 0.")
        kwargs = {} if max_age is None else {"max_age": max_age}
        removed = sweep_stages(dir, dry_run=dry_run, **kwargs)
        if options["verbosity"] >= 2 or (dry_run and options["verbosity"] >= 1):
            for path in removed:
                self.stdout.write(path)
        if options["verbosity"] >= 1:
            verb = "Would remove" if dry_run else "Removed"
            self.stdout.write(f"{verb} {len(removed)} staged upload(s).")
