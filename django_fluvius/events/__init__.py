"""The ground: the event store and everything about stored events.

``store`` appends and reads streams; ``sql`` holds the hand-built statements of
the hot path; ``upcasting`` turns stored events of older shapes into today's;
``snapshots`` caches folded state; ``feed`` reads every committed event in commit
order without gaps.

Invariant: this package imports nothing from the other sides (write, read,
delivery, security, media, ops, the faces) — only the ground modules (conf,
exceptions, models, registry, context). Where it must name a higher type (an
aggregate, a domain) it names a ``typing.Protocol`` defined here
(``protocols.py``). ``tests/test_layers.py`` keeps it so.
"""
