"""Django forms for command payloads, built from the action's DRF serializer.

The serializer (``ActionSpec.serializer_class``, itself built from the action's
signature) stays the one judge of a payload: the form only gives each field a
fitting widget and turns what was typed into Python values, and the serializer's
errors are put back on the form's fields. ``FORM_FIELD_FOR`` maps DRF field
classes to form fields (walked along the MRO, so subclasses inherit a mapping),
each with the widget Django's admin gives a model field of that type (the calendar
and clock for dates and times, the admin's text, number and UUID inputs), so a
command form looks and works like any other admin form.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib.admin import widgets as admin_widgets
from rest_framework import fields as drf
from rest_framework.fields import empty

from django_fluvius.write.aggregate import ActionSpec


def _choice(field: drf.ChoiceField, **kwargs: Any) -> forms.Field:
    choices = [(str(key), label) for key, label in field.choices.items()]
    if not kwargs.get("required"):
        choices = [("", "---------"), *choices]
    return forms.ChoiceField(choices=choices, **kwargs)


class JSONTextField(forms.JSONField):
    """JSON typed into a text area; an empty box is "no value", not the text ``null``."""

    def prepare_value(self, value):
        return "" if value is None else super().prepare_value(value)


def _json(field: drf.Field, **kwargs: Any) -> forms.Field:
    kwargs["help_text"] = kwargs.get("help_text") or "JSON"
    return JSONTextField(widget=admin_widgets.AdminTextareaWidget(attrs={"rows": 4}), **kwargs)


def _text(field: drf.CharField, **kwargs: Any) -> forms.Field:
    # An explicitly blank-allowed text is not required in the form: "" is a value.
    if getattr(field, "allow_blank", False):
        kwargs["required"] = False
    return forms.CharField(max_length=getattr(field, "max_length", None), strip=False,
                           widget=admin_widgets.AdminTextInputWidget, **kwargs)


FORM_FIELD_FOR: dict[type, Callable[..., forms.Field]] = {
    drf.BooleanField: lambda f, **kw: forms.BooleanField(**{**kw, "required": False}),
    drf.ChoiceField: _choice,
    drf.EmailField: lambda f, **kw: forms.EmailField(widget=admin_widgets.AdminEmailInputWidget, **kw),
    drf.UUIDField: lambda f, **kw: forms.UUIDField(widget=admin_widgets.AdminUUIDInputWidget, **kw),
    drf.CharField: _text,
    drf.IntegerField: lambda f, **kw: forms.IntegerField(min_value=f.min_value, max_value=f.max_value,
                                                         widget=admin_widgets.AdminIntegerFieldWidget, **kw),
    drf.FloatField: lambda f, **kw: forms.FloatField(**kw),
    drf.DecimalField: lambda f, **kw: forms.DecimalField(**kw),
    drf.DateTimeField: lambda f, **kw: forms.SplitDateTimeField(widget=admin_widgets.AdminSplitDateTime, **kw),
    drf.DateField: lambda f, **kw: forms.DateField(widget=admin_widgets.AdminDateWidget, **kw),
    drf.TimeField: lambda f, **kw: forms.TimeField(widget=admin_widgets.AdminTimeWidget, **kw),
    drf.DurationField: lambda f, **kw: forms.DurationField(widget=admin_widgets.AdminTextInputWidget, **kw),
    drf.ListField: _json,
    drf.DictField: _json,
    drf.JSONField: _json,
}


def form_field(field: drf.Field) -> forms.Field:
    kwargs: dict[str, Any] = {"required": field.required, "label": field.label or None,
                              "help_text": field.help_text or ""}
    default = getattr(field, "default", empty)
    if default is not empty and not callable(default):
        kwargs["initial"] = default
    for klass in type(field).__mro__:
        factory = FORM_FIELD_FOR.get(klass)
        if factory is not None:
            return factory(field, **kwargs)
    return _json(field, **kwargs)


class CommandForm(forms.Form):
    """The payload of one command; ``payload()`` gives what to pass to ``create_command``."""

    spec: ActionSpec

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._sources: dict[str, drf.Field] = {}
        for name, field in self.spec.serializer_class().fields.items():
            if field.read_only:
                continue
            self.fields[name] = form_field(field)
            self._sources[name] = field

    def payload(self) -> dict[str, Any]:
        """The cleaned values, leaving out blank optional fields so the action's defaults apply."""
        data: dict[str, Any] = {}
        for name, value in self.cleaned_data.items():
            source = self._sources[name]
            if isinstance(source, drf.BooleanField):
                data[name] = bool(value)
                continue
            if value in (None, "") and not source.required:
                continue
            data[name] = value
        return data

    def add_command_errors(self, errors: dict[str, list[str]]) -> None:
        """Put a ``CommandValidationError``'s messages on the fields they name."""
        for name, messages in errors.items():
            field = name.split(".", 1)[0]
            for message in messages:
                self.add_error(field if field in self.fields else None,
                               message if field in self.fields else f"{name}: {message}")


def command_form_class(spec: ActionSpec) -> type[CommandForm]:
    return type(f"{spec.serializer_class.__name__}Form", (CommandForm,), {"spec": spec})
