from django.db import models

from django_fluvius.models import Projection


class User(Projection):
    """Read model of the user aggregate, kept inline by the command bus."""

    name = models.CharField(max_length=200)
    email = models.EmailField()
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>"
