"""A read-only domain over a model an async projection keeps (read-your-writes tests).

``NoteActivity`` rows are written by ``tests.dispatch_handlers.NoteActivityProjection``
from the note events, after commit (a Celery worker, or a catch-up in the test):
a read of ``test-activity/activity/`` can lag behind the command that made the note.
"""

from django_fluvius import Aggregate, Domain


class ActivityAggregate(Aggregate):
    """No commands: the resource is kept by an async projection only."""


class ActivityDomain(Domain):
    __aggregate__ = ActivityAggregate
    __namespace__ = "test-activity"
    __resources__ = {"activity": "testapp.NoteActivity"}
