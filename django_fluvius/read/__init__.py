"""The read side: projection rows, the state manager, the query builder and its surface.

``projections`` writes each resource's row (with the command, or in a rebuild);
``state`` (``statemgr.fetch/find``), ``query`` (``QueryBuilder``), ``surface``
(what a resource may be filtered, sorted and searched by), ``keyset`` (cursor
pages), ``search`` (full-text backends) and ``replicas`` (the read-replica
database router) read them.

Invariant: above ``events`` only; never imports the write side, delivery or
security. Tenant scoping is asked of the domain (``state.ScopingDomain``).
"""
