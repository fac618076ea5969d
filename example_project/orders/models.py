from django.db import models

from django_fluvius.models import Projection


class Order(Projection):
    """Read model of the order aggregate."""

    class Status(models.TextChoices):
        PLACED = "placed"
        PAID = "paid"
        SHIPPED = "shipped"
        CANCELLED = "cancelled"

    customer_id = models.UUIDField(db_index=True)
    items = models.JSONField(default=list)
    total = models.DecimalField(max_digits=12, decimal_places=2, default=0)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PLACED)
    # Metadata of attached files (media entries), as the order-document-attached events carry it.
    documents = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"order {self.pk} ({self.status})"
