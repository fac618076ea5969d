"""Projections at a glance: where each one is, how far behind, and a rebuild button.

One page (the changelist of ``Checkpoint``) lists

* every inline resource projection (a domain resource with a model): written in
  the command's own transaction, so never behind; its last rebuild run;
* every async projection: its checkpoint position, the head of the event feed,
  its lag (committed events still to read), failed tries and last error;
* checkpoints no registered projection owns any more.

Seeing the page needs ``django_fluvius.view_checkpoint``. Rebuilding (after a
confirmation page) needs ``django_fluvius.add_rebuildrun`` and goes through
``django_fluvius.ops.rebuild.rebuild`` (what ``fluvius_rebuild`` runs: batched, resumable,
readers never see an empty table), in a background thread, so the page returns
at once and shows the run's progress on the next visit.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db import connections
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.translation import gettext as _

from django_fluvius.admin.base import ReadOnlyAdmin, admin_url, error_response, time_column
from django_fluvius.conf import fluvius_settings
from django_fluvius.events.store import EventStore
from django_fluvius.exceptions import UnknownProjection
from django_fluvius.models import Checkpoint, RebuildRun

logger = logging.getLogger("django_fluvius.admin")

REBUILD_PERMISSION = "django_fluvius.add_rebuildrun"
# A run that has not reported progress for this long is taken for dead (resumable).
STALE_AFTER_SECONDS = 300


@dataclass
class ProjectionRow:
    name: str
    kind: str  # "inline", "async", "handler" or "orphan"
    detail: str
    head: int
    position: int | None = None
    lag: int | None = None
    failures: int = 0
    last_error: str = ""
    updated: Any = None
    run: RebuildRun | None = None
    rebuild: Any = None  # a callable that rebuilds it, or None

    @property
    def short_name(self) -> str:
        """Dotted handler names are long: the end of it (the whole name is the tooltip)."""
        return self.name if len(self.name) <= 22 else "…" + self.name[-21:]

    @property
    def progress(self) -> int | None:
        if self.run is None or not self.run.total_events:
            return None
        return min(100, int(100 * self.run.events_done / self.run.total_events))


def _rebuild(name: str) -> None:
    from django_fluvius.ops import rebuild as rebuilding

    rebuilding.rebuild([name], progress=False)


def _inline_rows(head: int) -> list[ProjectionRow]:
    from django_fluvius.ops import rebuild as rebuilding
    from django_fluvius.registry import domains

    rows = []
    for domain in domains:
        for target in rebuilding.resource_targets(domain):
            if not isinstance(target, rebuilding.ResourceTarget):
                continue
            rows.append(ProjectionRow(
                name=target.name, kind="inline", detail=target.model._meta.label, head=head,
                position=head, lag=0,
                rebuild=lambda name=target.name: _rebuild(name),
            ))
    return rows


def _async_rows(head: int, checkpoints: dict[str, Checkpoint]) -> list[ProjectionRow]:
    try:
        from django_fluvius.delivery.projections import async_projections
    except ImportError:  # a version without async projections
        return []
    rows = []
    for cls in async_projections:
        checkpoint = checkpoints.pop(cls.name, None)
        try:
            lag = cls().lag()
        except Exception as exc:  # noqa: BLE001 - one broken projection must not hide the others
            lag = None
            logger.warning("Could not compute the lag of %s: %r", cls.name, exc)
        keys = ", ".join(cls.keys())
        rows.append(ProjectionRow(
            name=cls.name, kind="async",
            detail=(f"{cls.namespace}: {keys}" if cls.namespace else keys), head=head,
            position=checkpoint.position if checkpoint else None, lag=lag,
            failures=checkpoint.failures if checkpoint else 0,
            last_error=checkpoint.last_error if checkpoint else "",
            updated=checkpoint.updated if checkpoint else None,
            rebuild=lambda name=cls.name: _rebuild(name),
        ))
    return rows


def _handler_rows(head: int, checkpoints: dict[str, Checkpoint]) -> list[ProjectionRow]:
    """Event handlers are subscriptions too: their checkpoint, lag, pending deliveries, dead letters."""
    from django_fluvius.delivery import subscriptions
    from django_fluvius.delivery.dispatch import declared
    from django_fluvius.models import DeadLetter

    rows = []
    handler_subs = [sub for sub in declared() if sub.kind == subscriptions.HANDLER]
    statuses = {st.name: st for st in subscriptions.status(handler_subs, fluvius_settings.DATABASE)
                if st.declared}
    for sub in handler_subs:
        checkpoint = checkpoints.pop(sub.name, None)
        st = statuses.get(sub.name)
        keys = ", ".join(sub.evt_keys or ("*",))
        dead = st.dead_letters if st else 0
        last = DeadLetter.objects.filter(handler=sub.name).order_by("-created").first() if dead else None
        notes = []
        if st and st.pending:
            notes.append(_("%(n)d pending") % {"n": st.pending})
        if dead:
            notes.append(_("%(n)d dead letters") % {"n": dead})
        rows.append(ProjectionRow(
            name=sub.name, kind="handler",
            detail=(f"{sub.namespace}: {keys}" if sub.namespace else keys) + (f" ({', '.join(notes)})"
                                                                             if notes else ""),
            head=head, position=checkpoint.position if checkpoint else None,
            lag=st.lag if st else None, failures=dead,
            last_error=last.error_message if last else "",
            updated=checkpoint.updated if checkpoint else None,
        ))
    return rows


def projection_rows() -> list[ProjectionRow]:
    head = EventStore().last_position()
    checkpoints = {cp.name: cp for cp in Checkpoint.objects.all()}
    rows = _inline_rows(head) + _async_rows(head, checkpoints) + _handler_rows(head, checkpoints)
    from django_fluvius.ops.rebuild import SHADOW_SUFFIX

    for checkpoint in checkpoints.values():  # what is left has no projection class any more
        if checkpoint.name.endswith(SHADOW_SUFFIX):  # the twin of a rebuild under way
            continue
        rows.append(ProjectionRow(
            name=checkpoint.name, kind="orphan",
            detail=_("no code declares this subscription; nothing is delivered to it"),
            head=head, position=checkpoint.position, lag=None, failures=checkpoint.failures,
            last_error=checkpoint.last_error, updated=checkpoint.updated,
        ))
    runs = {run.name: run for run in RebuildRun.objects.filter(name__in=[r.name for r in rows])}
    for row in rows:
        row.run = runs.get(row.name)
    return rows


def run_is_live(run: RebuildRun | None) -> bool:
    return (run is not None and run.status == RebuildRun.Status.RUNNING
            and (timezone.now() - run.updated).total_seconds() < STALE_AFTER_SECONDS)


class ProjectionAdmin(ReadOnlyAdmin):
    """The checkpoint model's admin page, shown as the status of every projection."""

    status_template = "admin/django_fluvius/projections.html"
    confirm_template = "admin/django_fluvius/rebuild_confirm.html"
    # Run rebuilds in a thread (the page returns at once); False runs them in the request.
    rebuild_in_background = True

    def has_rebuild_permission(self, request) -> bool:
        return request.user.is_active and request.user.has_perm(REBUILD_PERMISSION)

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path("rebuild/<path:name>/", self.admin_site.admin_view(self.rebuild_view),
                 name="{}_{}_rebuild".format(*info)),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        request.current_app = self.admin_site.name
        can_rebuild = self.has_rebuild_permission(request)
        rows = projection_rows()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Projections"),
            "rows": [(row, admin_url(self.admin_site, "django_fluvius_checkpoint_rebuild", row.name)
                      if can_rebuild and row.rebuild is not None else None) for row in rows],
            "head": rows[0].head if rows else EventStore().last_position(),
            **(extra_context or {}),
        }
        return TemplateResponse(request, self.status_template, context)

    def rebuild_view(self, request, name):
        if not self.has_rebuild_permission(request):
            raise PermissionDenied
        request.current_app = self.admin_site.name
        back = admin_url(self.admin_site, "django_fluvius_checkpoint_changelist") or "../../"
        row = next((r for r in projection_rows() if r.name == name and r.rebuild is not None), None)
        if row is None:
            known = ", ".join(r.name for r in projection_rows() if r.rebuild is not None) or "none"
            return error_response(request, self.admin_site, UnknownProjection(
                f"Nothing to rebuild is called {name!r} (known: {known})."), title=_("Rebuild"),
                back_url=back)
        if request.method == "POST" and request.POST.get("post") == "yes":
            if run_is_live(row.run):
                self.message_user(request, _("A rebuild of %(name)s is already running.") % {"name": name},
                                  messages.WARNING)
                return HttpResponseRedirect(back)
            self.start(row, request)
            return HttpResponseRedirect(back)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Rebuild %(name)s?") % {"name": name},
            "row": row,
            "changelist_url": back,
        }
        return TemplateResponse(request, self.confirm_template, context)

    def start(self, row: ProjectionRow, request) -> None:
        def job():
            try:
                row.rebuild()
            except Exception:
                logger.exception("The rebuild of %s started from the admin failed.", row.name)
                raise
            finally:
                if self.rebuild_in_background:
                    connections.close_all()  # this thread's connections only

        if self.rebuild_in_background:
            threading.Thread(target=_quietly(job), name=f"fluvius-rebuild-{row.name}", daemon=True).start()
            self.message_user(request, _("The rebuild of %(name)s started; this page shows its progress.")
                              % {"name": row.name}, messages.SUCCESS)
            return
        try:
            job()
        except Exception as exc:  # noqa: BLE001 - reported on the page, recorded on the run
            self.message_user(request, _("The rebuild of %(name)s failed: %(error)s")
                              % {"name": row.name, "error": f"{type(exc).__name__}: {exc}"}, messages.ERROR)
            return
        self.message_user(request, _("%(name)s was rebuilt.") % {"name": row.name}, messages.SUCCESS)


def _quietly(job):
    def run():
        try:
            job()
        except Exception:  # noqa: BLE001 - already logged; a thread has no one to raise to
            pass

    return run


class RebuildRunAdmin(ReadOnlyAdmin):
    list_display = ("name", "status", "events_done", "total_events", "aggregates_done", "rows_written",
                    "started_time", "updated_time", "finished_time")
    list_filter = ("status",)
    ordering = ("-updated",)
    readonly_fields = ()
    started_time = time_column("started", _("started"))
    updated_time = time_column("updated", _("updated"))
    finished_time = time_column("finished", _("finished"))
