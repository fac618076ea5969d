"""Personal data (issue 20): sealed in every copy, forgotten by destroying a key, exported on request.

The proof is a raw SQL scan of every column of every table: a member's distinctive email
appears in plaintext only in the projection row, and after ``forget`` nowhere at all —
with snapshots, the command log, an idempotent REST request and a dead-lettered handler
among the copies. Run on SQLite, and on PostgreSQL with DATABASE_URL.
"""

from __future__ import annotations

import base64
import json
import os
import uuid

import pytest
from django.conf import settings
from django.contrib.auth.models import User as AuthUser
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings
from rest_framework.test import APIClient

from django_fluvius import DomainError
from django_fluvius.checks import check_personal_data, check_subject_keys
from django_fluvius.delivery.dispatch import deliver_pending
from django_fluvius.delivery.handlers import HandlerRegistry, event_handler, handlers
from django_fluvius.domain import Domain, register
from django_fluvius.exceptions import EventDecodeError, KeyEncryptionKeyError, UnknownSubject
from django_fluvius.models import (
    CommandLog,
    DeadLetter,
    Event,
    IdempotencyRecord,
    Snapshot,
    SubjectKey,
)
from django_fluvius.privacy import declarations, keys
from django_fluvius.registry import domains
from django_fluvius.write.cache import aggregate_cache
from tests.testapp.members import MemberAggregate, MemberDomain
from tests.testapp.models import Card, Member

KEK = base64.urlsafe_b64encode(b"k" * 32).decode()
OTHER_KEK = base64.urlsafe_b64encode(b"o" * 32).decode()
EMAIL = "zq-unique-7781@privacy.example"
NAME = "Wilhelmina Quarterstaff"
ADDRESS = "Distinct Street 991"

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls("tests.privacy_urls")]


def privacy_settings(**overrides):
    values = {"PRIVACY_KEK": KEK, "SNAPSHOT_EVERY": 2, "DISPATCH": "inline",
              "DOMAINS": [*settings.FLUVIUS["DOMAINS"], "tests.testapp.members.MemberDomain"], **overrides}
    return {**settings.FLUVIUS, **values}


@pytest.fixture
def members():
    with override_settings(FLUVIUS=privacy_settings()):
        register(MemberDomain)
        aggregate_cache.clear()
        try:
            yield MemberDomain()
        finally:
            domains.unregister(MemberDomain.__namespace__)
            aggregate_cache.clear()


# A handler that fails, quoting the member's personal data in its error and traceback.
failing = HandlerRegistry()


@event_handler("member-joined", namespace="test-members", name="tests.privacy.failing", start="beginning",
               registry=failing)
def welcome(event):
    payload = event.payload
    raise RuntimeError(f"could not welcome {payload['email']} ({payload!r})")


@pytest.fixture
def failing_handler(members):
    for spec in failing:
        handlers.register(spec)
    yield
    for spec in failing:
        handlers.unregister(spec.name)


def scan(*needles: str) -> set[tuple[str, str]]:
    """(table, column) of every value holding one of ``needles``: every column of every table, raw SQL."""
    hits = set()
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            for column in connection.introspection.get_table_description(cursor, table):
                cursor.execute(f"SELECT {quote(column.name)} FROM {quote(table)}")
                for (value,) in cursor.fetchall():
                    if value is None:
                        continue
                    if isinstance(value, memoryview | bytes):
                        data = bytes(value)
                        found = any(n.encode() in data for n in needles)
                    else:
                        text = value if isinstance(value, str) else json.dumps(value, default=str)
                        found = any(n in text for n in needles)
                    if found:
                        hits.add((table, column.name))
    return hits


def api_client() -> APIClient:
    client = APIClient()
    client.force_authenticate(AuthUser.objects.create_user("privacy-tester"))
    return client


def join(domain, name=NAME, email=EMAIL):
    return domain.process_command(domain.create_command("join", {"name": name, "email": email}))


# -- item 5: the proof ---------------------------------------------------------------------


def test_personal_data_is_plaintext_only_in_the_projection_and_nowhere_after_forget(members, failing_handler):
    api = api_client()
    response = api.post("/api/test-members/join/", {"name": NAME, "email": EMAIL}, format="json",
                        headers={"Idempotency-Key": "join-1"})
    assert response.status_code == 201, response.content
    member_id = uuid.UUID(response.json()["aggregate_id"])
    assert response.json()["state"]["email"] == EMAIL
    # More copies: snapshots (every 2 events), the command log, the aggregate cache, a rejected
    # command quoting the data, a card whose address is the member's, a dead-lettered handler.
    members.process_command(members.create_command("rename", {"name": NAME + " II"}, aggregate_id=member_id))
    members.process_command(members.create_command("rename", {"name": NAME}, aggregate_id=member_id))
    with pytest.raises(DomainError):
        members.process_command(members.create_command("join", {"name": NAME, "email": EMAIL.replace("@", "")}))
    card = members.process_command(members.create_command("issue-card", {"member_id": str(member_id),
                                                                          "address": ADDRESS}))
    deliver_pending()
    assert Snapshot.objects.filter(aggregate_id=member_id).exists()
    assert CommandLog.objects.filter(namespace="test-members").count() >= 5
    assert IdempotencyRecord.objects.exists()
    letter = DeadLetter.objects.get(handler="tests.privacy.failing")
    assert letter.error_message and EMAIL not in letter.error_message

    hits = scan(EMAIL, NAME, ADDRESS)
    assert hits == {("testapp_member", "email"), ("testapp_member", "name"), ("testapp_card", "address")}, hits

    # Everything reads back in plaintext while the key lives.
    aggregate_cache.clear()
    member = members.load(member_id)
    assert (member.state["name"], member.state["email"]) == (NAME, EMAIL)
    assert members.load(member_id, version=1).state["email"] == EMAIL  # time travel, past the snapshot
    assert members.load(card.aggregate_id).state["address"] == ADDRESS
    replay = api.post("/api/test-members/join/", {"name": NAME, "email": EMAIL}, format="json",
                      headers={"Idempotency-Key": "join-1"})
    assert replay["Idempotent-Replayed"] == "true" and replay.json() == response.json()
    events = api.get(f"/api/test-members/member/{member_id}/events/").json()
    assert events["results"][0]["payload"]["email"] == EMAIL

    erasure = members.forget(member_id)
    assert {h.aggregate_id for h in erasure.aggregates} == {member_id, card.aggregate_id}
    assert scan(EMAIL, NAME, ADDRESS) == set()

    # Afterwards every reader sees the fields erased; the streams are intact.
    member = members.load(member_id)
    assert member.state["email"] is None and member.state["name"] is None and member.state["active"] is True
    assert members.load(member_id, version=1).state["email"] is None
    assert members.load(card.aggregate_id).state["address"] is None
    assert Event.objects.filter(aggregate_id=member_id).last().evt_key == "personal-data-erased"
    row = Member.objects.get(pk=member_id)
    assert (row.name, row.email, row.nickname) == ("", "", None)
    assert Card.objects.get(pk=card.aggregate_id).address == ""
    assert not Snapshot.objects.filter(aggregate_id=member_id).exists()
    item = api.get(f"/api/test-members/member/{member_id}/").json()
    assert item["email"] == "" and item["version"] == member.version
    events = api.get(f"/api/test-members/member/{member_id}/events/").json()
    assert events["results"][0]["payload"]["email"] is None
    replay = api.post("/api/test-members/join/", {"name": NAME, "email": EMAIL}, format="json",
                      headers={"Idempotency-Key": "join-1"})
    assert replay.json()["state"]["email"] is None
    # Commands still work; what they say of the forgotten subject is not kept.
    left = members.process_command(members.create_command("leave", {}, aggregate_id=member_id))
    assert left.state["active"] is False
    renamed = members.process_command(members.create_command("rename", {"name": "Again"}, aggregate_id=member_id))
    assert renamed.state["name"] is None
    upgraded = members.process_command(members.create_command("upgrade-card", {},
                                                              aggregate_id=card.aggregate_id))
    assert upgraded.state["level"] == 2
    assert scan("Again") == set()
    # A rebuild from the events shows them erased as well.
    call_command("fluvius_rebuild", "test-members", verbosity=0)
    assert Member.objects.get(pk=member_id).email == ""


def test_forget_from_the_command_line_and_the_export(members, tmp_path):
    member = join(members)
    members.process_command(members.create_command("issue-card", {"member_id": str(member.aggregate_id),
                                                                  "address": ADDRESS}))
    out = tmp_path / "export.json"
    call_command("fluvius_export_subject", str(member.aggregate_id), output=str(out), verbosity=0)
    exported = json.loads(out.read_text())
    found = {(v["field"], v["value"], v["event"]["evt_key"]) for v in exported["values"]}
    assert {("email", EMAIL, "member-joined"), ("name", NAME, "member-joined"),
            ("address", ADDRESS, "card-issued")} <= found
    assert exported["subject"] == str(member.aggregate_id) and exported["forgotten"] is None
    assert members.export_subject(member.aggregate_id)["values"] == exported["values"]

    call_command("fluvius_forget", str(member.aggregate_id), verbosity=0)
    assert scan(EMAIL, ADDRESS) == set()
    assert members.export_subject(member.aggregate_id)["values"][0]["value"] is None
    with pytest.raises(CommandError, match="already forgotten"):
        call_command("fluvius_forget", str(member.aggregate_id), verbosity=0)


# -- bad input -----------------------------------------------------------------------------


def test_forgetting_an_unknown_subject_says_so_and_changes_nothing(members):
    join(members)
    before = {m._meta.db_table: m.objects.count() for m in (Event, SubjectKey, Member, CommandLog)}
    unknown = uuid.uuid4()
    with pytest.raises(UnknownSubject, match=str(unknown)):
        members.forget(unknown)
    with pytest.raises(CommandError, match="No personal data is held for subject"):
        call_command("fluvius_forget", str(unknown))
    with pytest.raises(CommandError, match="No personal data"):
        call_command("fluvius_export_subject", "nobody")
    assert before == {m._meta.db_table: m.objects.count() for m in (Event, SubjectKey, Member, CommandLog)}


def test_a_tampered_ciphertext_is_a_clear_error_naming_the_event(members):
    member = join(members)
    event = Event.objects.get(aggregate_id=member.aggregate_id)
    token = event.payload["email"]
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    payload = json.dumps({**event.payload, "email": flipped})
    with connection.cursor() as cursor:
        cursor.execute("UPDATE django_fluvius_event SET payload = %s WHERE position = %s",
                       [payload, event.position])
    aggregate_cache.clear()
    with pytest.raises(EventDecodeError) as info:
        members.load(member.aggregate_id)
    message = str(info.value)
    assert "'member-joined'" in message and f"position {event.position}" in message
    assert "does not authenticate" in message
    # A token moved to another field fails too (the field is in its associated data).
    moved = json.dumps({**event.payload, "name": event.payload["email"]})
    with connection.cursor() as cursor:
        cursor.execute("UPDATE django_fluvius_event SET payload = %s WHERE position = %s", [moved, event.position])
    with pytest.raises(EventDecodeError, match="'name'"):
        members.load(member.aggregate_id)


def test_no_kek_is_a_system_check_error_and_nothing_is_written(members):
    with override_settings(FLUVIUS=privacy_settings(PRIVACY_KEK=None)):
        errors = check_personal_data()
        assert [e.id for e in errors] == ["fluvius.E080"]
        assert "PRIVACY_KEK" in errors[0].hint
        with pytest.raises(KeyEncryptionKeyError):
            join(members)
    with override_settings(FLUVIUS=privacy_settings(PRIVACY_KEK="too-short")):
        assert [e.id for e in check_personal_data()] == ["fluvius.E080"]
    assert not Event.objects.filter(namespace="test-members").exists()
    assert not Member.objects.exists()
    assert scan(EMAIL) == set()
    assert check_personal_data() == []


def test_a_wrong_kek_is_a_check_error_and_reads_nothing(members):
    member = join(members)
    assert check_subject_keys() == []
    keys.key_cache.clear()
    with override_settings(FLUVIUS=privacy_settings(PRIVACY_KEK=OTHER_KEK)):
        errors = check_subject_keys()
        assert [e.id for e in errors] == ["fluvius.E082"] and "not configured" in errors[0].msg
        with pytest.raises(KeyEncryptionKeyError, match="wrapped by KEK"):
            members.load(member.aggregate_id)
        with pytest.raises(KeyEncryptionKeyError):
            members.process_command(members.create_command("rename", {"name": "X"},
                                                           aggregate_id=member.aggregate_id))
    assert Event.objects.filter(aggregate_id=member.aggregate_id).count() == 1


def test_rotating_the_kek_rewraps_every_key(members):
    first = join(members)
    second = join(members, email="second@privacy.example")
    with override_settings(FLUVIUS=privacy_settings(PRIVACY_KEK=[OTHER_KEK, KEK])):
        call_command("fluvius_rotate_kek", verbosity=0)
        assert set(SubjectKey.objects.values_list("kek_id", flat=True)) == {keys.wrapper().key_id}
    with override_settings(FLUVIUS=privacy_settings(PRIVACY_KEK=OTHER_KEK)):
        aggregate_cache.clear()
        assert members.load(first.aggregate_id).state["email"] == EMAIL
        assert members.load(second.aggregate_id).state["email"] == "second@privacy.example"
        assert check_subject_keys() == []


class FakeKms:
    """Stands in for a KMS client: wraps with a key only it holds."""

    key_id = "fake-kms:1"
    calls: list[str] = []

    def __init__(self):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(b"m" * 32)

    def wrap(self, key: bytes, subject: str) -> bytes:
        FakeKms.calls.append("wrap")
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, key, subject.encode())

    def unwrap(self, wrapped: bytes, key_id: str, subject: str) -> bytes:
        FakeKms.calls.append("unwrap")
        return self._aead.decrypt(wrapped[:12], wrapped[12:], subject.encode())


def test_a_kms_hook_wraps_the_keys(members):
    with override_settings(FLUVIUS=privacy_settings(PRIVACY_KEK=None, PRIVACY_KMS="tests.test_privacy.FakeKms")):
        member = join(members)
        assert SubjectKey.objects.get(subject=str(member.aggregate_id)).kek_id == "fake-kms:1"
        keys.key_cache.clear()
        aggregate_cache.clear()
        assert members.load(member.aggregate_id).state["email"] == EMAIL
        assert FakeKms.calls[-1] == "unwrap"
        assert check_personal_data() == []


def test_a_declared_field_no_action_produces_is_refused():
    class TypoDomain(Domain):
        __aggregate__ = MemberAggregate
        __namespace__ = "test-privacy-typo"
        __resources__ = {"member": "testapp.Member", "card": "testapp.Card"}
        __personal__ = {"member": ["email", "e_mail"], "ghost": ["x"]}

    register(TypoDomain)
    try:
        with override_settings(FLUVIUS=privacy_settings()):
            errors = [e for e in check_personal_data() if "TypoDomain" in e.msg]
        assert [e.id for e in errors] == ["fluvius.E081", "fluvius.E081"]
        messages = " ".join(e.msg for e in errors)
        assert "resource 'ghost'" in messages and "declares 'e_mail'" in messages and "'email'" not in messages
    finally:
        domains.unregister("test-privacy-typo")
        declarations.forget_namespace("test-privacy-typo")


def test_domains_without_personal_data_store_plaintext_as_before(members):
    from tests.testapp.domain import NoteDomain

    notes = NoteDomain()
    note = notes.process_command(notes.create_command("create-note", {"title": "plain title 5521"}))
    assert Event.objects.get(aggregate_id=note.aggregate_id).payload["title"] == "plain title 5521"
    assert not SubjectKey.objects.exists()


@pytest.mark.urls("example_project.urls")
def test_the_admin_shows_personal_data_opened_then_erased(members, failing_handler, client):
    from django.urls import reverse

    client.force_login(AuthUser.objects.create_superuser("privacy-admin", "a@example.com", "x"))
    member = join(members)
    members.process_command(members.create_command("rename", {"name": NAME}, aggregate_id=member.aggregate_id))
    deliver_pending()
    log = CommandLog.objects.filter(aggregate_id=member.aggregate_id).order_by("id").first()
    letter = DeadLetter.objects.get(handler="tests.privacy.failing")
    snapshot = Snapshot.objects.get(aggregate_id=member.aggregate_id)
    event = Event.objects.get(aggregate_id=member.aggregate_id, version=1)
    pages = {
        "log": reverse("admin:django_fluvius_commandlog_change", args=[log.pk]),
        "letter": reverse("admin:django_fluvius_deadletter_change", args=[letter.pk]),
        "snapshot": reverse("admin:django_fluvius_snapshot_change", args=[snapshot.pk]),
        "event": reverse("admin:django_fluvius_event_change", args=[event.pk]),
    }
    for name, url in pages.items():
        html = client.get(url).content.decode()
        assert EMAIL in html, name
        assert "fvpd1:" not in html, name
    members.forget(member.aggregate_id)
    for name in ("log", "letter", "event"):
        html = client.get(pages[name]).content.decode()
        assert EMAIL not in html and "fvpd1:" not in html, name
    assert "[erased: its subject was forgotten]" in client.get(pages["letter"]).content.decode()


recording = HandlerRegistry()
SEEN: list = []


@event_handler("member-joined", namespace="test-members", name="tests.privacy.recording", registry=recording)
def remember(event):
    SEEN.append(event.payload["email"])


def test_handlers_and_replays_see_the_data_then_see_it_erased(members):
    from django_fluvius.ops.replay import replay

    for spec in recording:
        handlers.register(spec)
    SEEN.clear()
    try:
        member = join(members)
        deliver_pending()
        assert SEEN == [EMAIL]  # the handler got the plaintext
        members.forget(member.aggregate_id)
        report = replay(handler_names=["tests.privacy.recording"], namespace="test-members")
        assert report.done == 1 and SEEN == [EMAIL, None]
    finally:
        for spec in recording:
            handlers.unregister(spec.name)
