"""A domain made for the tests: two resources, sync and async actions, @apply."""

import datetime

from django_fluvius import Aggregate, Domain, DomainError, action, apply

# Tests put a callable under "edit" to run code inside edit_note (e.g. wait at a
# barrier so two threads race), shared by every thread.
hooks: dict = {}


class NoteAggregate(Aggregate):
    @action(evt_key="note-created", resources=["note"], create=True)
    def create_note(self, title: str, body: str = "", tags: list[str] | None = None,
                    priority: int = 0, due: datetime.date | None = None):
        return {"title": title, "body": body, "tags": tags or [], "priority": priority,
                "due": due, "archived": False}

    @action(evt_key="folder-created", resources=["folder"], create=True)
    def create_folder(self, name: str):
        return {"name": name}

    @action(evt_key="note-edited", resources=["note"])
    def edit_note(self, body: str):
        hook = hooks.get("edit")
        if hook:
            hook(self)
        return {"body": body}

    @action(evt_key="note-archived", resources=["note"], name="archive")
    async def archive_note(self):
        if self.state.get("archived"):
            raise DomainError("Note is already archived")
        return {"archived": True}

    @action(evt_key="item-touched")
    def touch(self):
        return None

    @apply("note-edited")
    def _edited(self, state, event):
        return {**state, "body": event.payload["body"], "edits": state.get("edits", 0) + 1}


class NoteDomain(Domain):
    __aggregate__ = NoteAggregate
    __namespace__ = "test-notes"
    __resources__ = {"note": "testapp.Note", "folder": "testapp.Folder"}
