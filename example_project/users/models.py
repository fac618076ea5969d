from django.db import models

from django_fluvius.models import Projection
from django_fluvius.read.search import SearchIndex


class User(Projection):
    """Read model of the user aggregate, kept inline by the command bus."""

    name = models.CharField(max_length=200)
    email = models.EmailField()
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["-created_at"]
        # Full-text search over name and email (GIN on PostgreSQL; nothing on SQLite).
        # Same fields and config as UserQuery.search in domain.py, so searches use it.
        indexes = [SearchIndex(fields=["name", "email"], config="simple", name="app_user_search")]

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>"
