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
