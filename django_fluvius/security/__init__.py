"""Security: who may run which command (permissions and policies) and tenancy.

``permissions`` (run_<command> permissions, ``@action(permission=...)`` policies,
the ``AuthorizationMiddleware`` of the command bus and its object guards) and
``tenancy`` (tenant resolution and scoping of aggregates, rows and reads).

Invariant: above write and read, below the domain, which applies tenancy to
every load and read; the request middleware (``django_fluvius.middleware``)
resolves a request's tenant through it.
"""
