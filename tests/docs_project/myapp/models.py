"""Read models of the documentation's examples (see docs/quickstart.md)."""

from django.db import models

from django_fluvius import Projection


class User(Projection):
    # Projection gives: id (the aggregate id), version, created_at, updated_at.
    name = models.CharField(max_length=200)
    email = models.EmailField()
    active = models.BooleanField(default=True)


class Order(Projection):
    customer = models.CharField(max_length=200)
    items = models.JSONField(default=list)
    total = models.DecimalField(max_digits=10, decimal_places=2, default=0)
    status = models.CharField(max_length=20, default="open")


class CustomerStats(models.Model):
    """Kept by an async projection (docs/handlers.md), not by the command bus."""

    customer_id = models.UUIDField(primary_key=True)
    orders = models.IntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.customer_id}: {self.orders} orders"


class Project(Projection):
    """A tenant-scoped read model (docs/security.md): each row belongs to one tenant."""

    name = models.CharField(max_length=200)
    owner = models.CharField(max_length=150, blank=True)
    archived = models.BooleanField(default=False)
    tenant = models.CharField(max_length=100, blank=True, db_index=True)
