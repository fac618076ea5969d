"""Delivery: how committed events reach handlers, async projections and process managers.

``handlers`` (``@event_handler``), ``subscriptions`` (every handler and async
projection keeps a checkpoint on the feed: starts, leases, status, reset),
``dispatch`` (the relay: inline or Celery hand-over, receipts, retries, dead
letters, LISTEN/NOTIFY), ``projections`` (async projections), ``process``
(handlers that issue commands) and ``checks`` (their system checks).

Invariant: above the domain; nothing below imports it. The bus learns of it only
through the ``events_appending`` signal this package connects to.
"""
