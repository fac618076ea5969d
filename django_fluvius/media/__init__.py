"""Media: files bound to aggregates, kept in any Django storage.

The names users import from here::

    from django_fluvius.media import LocalStorage, S3Storage      # storage strategies (settings)
    from django_fluvius.media import MediaRef, ensure_attached    # media in action signatures

Strategies live in ``storage.py``, entries and payload references in
``entries.py``, content sniffing in ``filetypes.py``. Names are loaded lazily
(PEP 562) so settings can name a strategy before Django's apps are ready.
"""

from __future__ import annotations

from django_fluvius.lazy import lazy_names

_PUBLIC = {
    "MediaStorage": "storage",
    "LocalStorage": "storage",
    "S3Storage": "storage",
    "media_storage": "storage",
    "MediaRef": "entries",
    "MediaField": "entries",
    "ensure_attached": "entries",
    "store_media": "entries",
    "get_entry": "entries",
    "open_entry": "entries",
    "delete_entry": "entries",
}

__all__ = sorted(_PUBLIC)

__getattr__, __dir__ = lazy_names(__name__, globals(), _PUBLIC)


