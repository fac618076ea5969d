"""Orders in the admin: every command of the order aggregate is a button or a list action."""

from django.contrib import admin

from django_fluvius.admin import AggregateAdmin

from .models import Order


@admin.register(Order)
class OrderAdmin(AggregateAdmin):
    list_display = ("id", "status", "total", "customer_id", "version", "updated_at")
    list_filter = ("status",)
    commands = "__all__"
