"""Users in the admin: read from the projection, changed only by commands."""

from django.contrib import admin

from django_fluvius.admin import AggregateAdmin

from .models import User


@admin.register(User)
class UserAdmin(AggregateAdmin):
    list_display = ("name", "email", "active", "version", "updated_at")
    list_filter = ("active",)
    search_fields = ("name", "email")
    commands = ["create-user", "rename-user", "deactivate-user"]
