from django.db import models

from django_fluvius.models import Projection


class Note(Projection):
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    tags = models.JSONField(default=list)
    priority = models.IntegerField(default=0)
    archived = models.BooleanField(default=False)
    edits = models.IntegerField(default=0)
    due = models.DateField(null=True, blank=True)


class Folder(Projection):
    name = models.CharField(max_length=200)


class Effect(models.Model):
    """What the dispatch tests' handlers do: one row per run (no unique key, so a
    second run of the same (handler, event) would show as a second row)."""

    handler = models.CharField(max_length=100)
    position = models.BigIntegerField()
    aggregate_id = models.UUIDField(null=True)
    version = models.IntegerField(null=True)
    detail = models.CharField(max_length=200, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.handler} @ {self.position}"


class NoteActivity(models.Model):
    """Read model of the async projections in the tests and benchmarks."""

    id = models.UUIDField(primary_key=True)
    title = models.CharField(max_length=200, blank=True)
    events = models.IntegerField(default=0)
    last_version = models.IntegerField(default=0)
    last_position = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.title}: {self.events} events"
