"""Delivery: how committed events reach handlers, async projections and process managers.

``handlers`` (``@event_handler``), ``dispatch`` (the outbox, inline or Celery
hand-over, receipts, retries, dead letters), ``projections`` (async projections
with checkpoints on the feed), ``process`` (handlers that issue commands) and
``checks`` (their system checks).

Invariant: above the domain; nothing below imports it. The bus learns of it only
through the ``events_appending`` signal this package connects to.
"""
