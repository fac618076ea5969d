"""Option types shared by the management commands."""

import argparse

from django.db import connections


def database_alias(value: str) -> str:
    """``--database``: an alias of ``settings.DATABASES``; any other is a usage error naming them."""
    known = list(connections.settings)
    if value not in known:
        raise argparse.ArgumentTypeError(f"{value!r} is no alias of DATABASES (known: {', '.join(known)})")
    return value
