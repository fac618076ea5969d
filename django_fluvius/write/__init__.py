"""The write side: aggregates and their actions, payload schemas, the command bus.

``aggregate`` (``Aggregate``, ``@action``, ``@apply``), ``payload`` (serializers
built from action signatures), ``bus`` (one command, one transaction), the bus's
own ``middleware`` (logging, timing, retry) and the per-process aggregate ``cache``.

Invariant: above ``events`` only; it never imports the read side, delivery or
security. What the bus needs from them — the resource's projection row, the
delivery of committed events — it asks of the domain it runs for, through the
``BusDomain`` protocol (``bus.py``), and of whoever connected to
``bus.events_appending``.
"""
