"""Issue 16, item by item: safe defaults, DRF's list conventions, and the hostile inputs that
answered 500 or lost a command-log row. Each test fails without the change it covers; all run
on SQLite and PostgreSQL (the fuzzing is in test_fuzz_endpoints.py, the gunicorn runs in
test_live_gunicorn.py)."""

import copy
import datetime
import decimal
import enum
import io
import json
import os
import time
import typing
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core import signing
from django.core.management import call_command
from django.test import RequestFactory
from django.urls import include, path
from rest_framework.test import APIClient

from django_fluvius import Aggregate, Domain, DomainContext, DomainError, action
from django_fluvius.checks import check_projection_fields
from django_fluvius.exceptions import CommandValidationError, RequestTooLarge
from django_fluvius.media.storage import STAGE_PREFIX, StagedMedia, sweep_stages
from django_fluvius.models import CommandLog, Event, IdempotencyRecord, MediaEntry
from django_fluvius.read.keyset import SALT
from django_fluvius.registry import domains
from django_fluvius.rest import DomainRouter
from django_fluvius.rest.parsers import read_chunked_body
from django_fluvius.rest.router import media_resources
from django_fluvius.security.permissions import AllowAny, IsAuthenticated, Policy, as_policy, denied
from django_fluvius.tasks import sweep_uploads
from django_fluvius.write.bus import Command
from django_fluvius.write.payload import FIELD_FOR_TYPE, build_serializer
from example_project.orders.domain import OrderDomain
from example_project.users.domain import UserDomain
from tests.media_support import files_under, place_order, png
from tests.security_support import api as tenant_api
from tests.testapp.domain import NoteDomain
from tests.testapp.models import Note

pytest_plugins = ["tests.media_fixtures", "tests.security_fixtures"]

router = DomainRouter()
for _domain in (UserDomain, OrderDomain, NoteDomain):
    router.register(_domain)
open_router = DomainRouter()
open_router.register(OrderDomain, media={"order": AllowAny})
no_media = DomainRouter()
no_media.register(OrderDomain, media=[])

urlpatterns = [
    path("api/", include((router.urls, "api"))),
    path("open/", include((open_router.urls, "open"))),
    path("plain/", include((no_media.urls, "plain"))),
]

pytestmark = [pytest.mark.urls("tests.test_ready_for_clients"), pytest.mark.django_db]

NOTES = "/api/test-notes/note/"


@pytest.fixture
def anon():
    return APIClient()


@pytest.fixture
def user():
    return get_user_model().objects.create_user("reader", "reader@example.com", "pw")


@pytest.fixture
def signed_in(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def grant(user, codename, app_label):
    user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return get_user_model().objects.get(pk=user.pk)


def post(client, url, body, **headers):
    return client.post(url, body, format="json", headers=headers or None)


def multipart(data, filename="a.png", content_type="image/png", extra_files=0):
    boundary = "b0undary"
    parts = [(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
              f"Content-Type: {content_type}\r\n\r\n").encode() + data + b"\r\n"]
    for i in range(extra_files):
        parts.append((f'--{boundary}\r\nContent-Disposition: form-data; name="other{i}"; filename="x{i}.png"\r\n'
                      f"Content-Type: image/png\r\n\r\n").encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def upload(client, url, data, **kw):
    body, ctype = multipart(data, **kw)
    return client.generic("POST", url, body, content_type=ctype)


def log_rows():
    return CommandLog.objects.count()


# -- 1. media endpoints are opt-in, uploads need a write permission -------------------


def test_resources_without_media_opt_in_have_no_media_routes(signed_in, media_root):
    user_id = post(signed_in, "/api/app-user/create-user/", {"name": "A", "email": "a@x.io"}).json()["aggregate_id"]
    response = signed_in.get(f"/api/app-user/user/{user_id}/media/")
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    response = upload(signed_in, f"/api/app-user/user/{user_id}/media/", png())
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    order_id = place_order()
    assert signed_in.get(f"/plain/app-order/order/{order_id}/media/").status_code == 404  # media=[]
    assert MediaEntry.objects.count() == 0 and files_under(media_root) == []


def test_a_readable_resource_refuses_anonymous_uploads(anon, signed_in, media_root):
    order_id = place_order()
    url = f"/api/app-order/order/{order_id}/media/"
    assert anon.get(url).status_code == 200  # reading the public order's files is allowed
    refused = upload(anon, url, png())
    assert refused.status_code == 403 and refused.json()["code"] == "permission_denied"
    assert "signed in" in refused.json()["message"]
    assert MediaEntry.objects.count() == 0 and files_under(media_root) == []
    assert upload(signed_in, url, png()).status_code == 201


def test_with_command_permissions_an_upload_needs_a_run_permission_of_the_resource(settings, user, media_root):
    settings.FLUVIUS = {**settings.FLUVIUS, "COMMAND_PERMISSIONS": True}
    call_command("migrate", verbosity=0)  # makes the run_ permissions, as after any migrate
    order_id = place_order()
    url = f"/api/app-order/order/{order_id}/media/"
    client = APIClient()
    client.force_authenticate(user)
    assert upload(client, url, png()).status_code == 403
    client.force_authenticate(grant(user, "run_attach_document", "app_order"))
    assert upload(client, url, png()).status_code == 201


def test_a_declared_upload_policy_decides(anon, media_root):
    order_id = place_order()
    response = upload(anon, f"/open/app-order/order/{order_id}/media/", png())
    assert response.status_code == 201, response.content  # AllowAny, declared
    assert media_resources(OrderDomain, ["order"]) == {"order": None}
    with pytest.raises(Exception, match="not among its __resources__"):
        media_resources(OrderDomain, ["invoice"])


# -- 2. staged uploads of dead processes are swept ------------------------------------


def _dead_pid():
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


def test_sweep_removes_stages_of_dead_processes_and_old_ones_only(tmp_path):
    live = StagedMedia(str(tmp_path))                  # this process's own, being written
    live.write(b"x")
    host = os.path.basename(live.path).split("@")[1].rsplit("-", 1)[0]
    dead = tmp_path / f"{STAGE_PREFIX}{_dead_pid()}@{host}-abcd1234.part"
    dead.write_bytes(b"left behind")
    old = tmp_path / f"{STAGE_PREFIX}{os.getpid()}@otherhost-zzzz9999.part"
    old.write_bytes(b"old")
    stamp = time.time() - 7200
    os.utime(old, (stamp, stamp))
    unrelated = tmp_path / "keep.part"
    unrelated.write_bytes(b"not a stage")

    assert sorted(sweep_stages(str(tmp_path), max_age=3600, dry_run=True)) == sorted([str(dead), str(old)])
    assert dead.exists()
    assert sorted(sweep_stages(str(tmp_path), max_age=3600)) == sorted([str(dead), str(old)])
    assert not dead.exists() and not old.exists() and unrelated.exists() and os.path.exists(live.path)
    live.discard()


def test_sweep_command_and_task(settings, media_root):
    staging = media_root / ".incoming"
    staging.mkdir(parents=True, exist_ok=True)
    stale = staging / f"{STAGE_PREFIX}{os.getpid()}@elsewhere-aaaa0000.part"
    stale.write_bytes(b"x")
    stamp = time.time() - 600
    os.utime(stale, (stamp, stamp))
    out = io.StringIO()
    call_command("fluvius_sweep_uploads", "--max-age", "3600", stdout=out)
    assert stale.exists() and "Removed 0" in out.getvalue()
    call_command("fluvius_sweep_uploads", "--max-age", "60", stdout=out)
    assert not stale.exists() and "Removed 1" in out.getvalue()
    stale.write_bytes(b"x")
    os.utime(stale, (stamp, stamp))
    settings.FLUVIUS = {**settings.FLUVIUS, "MEDIA_STAGE_MAX_AGE": 60}
    assert sweep_uploads() == {"removed": 1} and not stale.exists()


# -- 3. event metadata: who and where only for those allowed --------------------------


def test_readers_see_only_the_exposed_metadata(signed_in, user, settings):
    created = post(signed_in, "/api/app-user/create-user/", {"name": "A", "email": "a@x.io"}).json()
    metadata = created["events"][0]["metadata"]
    assert set(metadata) <= {"correlation_id", "causation_id", "command_id", "command", "source"}
    assert "correlation_id" in metadata and "user" not in metadata and "client_address" not in metadata
    events = signed_in.get(f"/api/app-user/user/{created['aggregate_id']}/events/").json()["results"]
    assert "user" not in events[0]["metadata"] and "username" not in events[0]["metadata"]
    stored = Event.objects.get().metadata
    assert stored["user"] == str(user.pk) and stored["username"] == "reader"  # the store keeps it all

    signed_in.force_authenticate(grant(user, "view_event", "django_fluvius"))
    events = signed_in.get(f"/api/app-user/user/{created['aggregate_id']}/events/").json()["results"]
    assert events[0]["metadata"]["user"] == str(user.pk) and events[0]["metadata"]["client_address"]

    settings.FLUVIUS = {**settings.FLUVIUS, "EXPOSED_METADATA": None}
    other = APIClient()
    events = other.get(f"/api/app-user/user/{created['aggregate_id']}/events/").json()["results"]
    assert events[0]["metadata"]["username"] == "reader"


# -- 4. the example project requires a signed-in user for commands ---------------------


@pytest.mark.urls("example_project.urls")
def test_example_project_commands_need_a_signed_in_user(anon, signed_in):
    body = {"name": "A", "email": "a@x.io"}
    refused = post(anon, "/api/app-user/create-user/", body)
    assert refused.status_code == 403 and refused.json()["code"] == "not_authenticated"
    assert log_rows() == 0
    assert post(signed_in, "/api/app-user/create-user/", body).status_code == 201
    assert anon.get("/api/app-user/user/").status_code == 200  # reads stay open


# -- 5. unknown parameters, page/page_size --------------------------------------------


def make_notes(n):
    t0 = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    Note.objects.bulk_create([Note(id=uuid.uuid4(), title=f"n{i:02}", version=1,
                                   created_at=t0 + datetime.timedelta(minutes=i)) for i in range(n)])


def titles(response):
    assert response.status_code == 200, response.content
    return [row["title"] for row in response.json()["results"]]


def test_unknown_parameters_are_ignored_unless_strict(anon, settings):
    make_notes(3)
    assert len(titles(anon.get(NOTES, {"_": "1712", "utm_source": "mail", "colour": "red"}))) == 3
    assert titles(anon.get(NOTES, {"title": "n01", "utm_campaign": "x"})) == ["n01"]
    bad_operator = anon.get(NOTES, {"title__gt": "x", "priority": "high"})
    assert bad_operator.status_code == 400 and "priority" in bad_operator.json()["errors"]
    settings.FLUVIUS = {**settings.FLUVIUS, "STRICT_QUERY_PARAMS": True}
    strict = anon.get(NOTES, {"utm_source": "mail"})
    assert strict.status_code == 400 and "utm_source" in strict.json()["errors"]


def test_page_and_page_size(anon):
    make_notes(7)
    first = anon.get(NOTES, {"ordering": "title", "page_size": "3"}).json()
    assert [r["title"] for r in first["results"]] == ["n00", "n01", "n02"] and first["previous"] is None
    assert "page=2" in first["next"]
    second = anon.get(first["next"]).json()
    assert [r["title"] for r in second["results"]] == ["n03", "n04", "n05"]
    assert "page=" not in second["previous"]  # back to page 1
    third = anon.get(NOTES, {"ordering": "title", "page_size": "3", "page": "3"}).json()
    assert [r["title"] for r in third["results"]] == ["n06"] and third["next"] is None
    assert "page=2" in third["previous"]
    beyond = anon.get(NOTES, {"ordering": "title", "page_size": "3", "page": "9"}).json()
    assert beyond["results"] == [] and beyond["count"] == 7  # never page 1 again
    assert titles(anon.get(NOTES, {"ordering": "title", "page": "1"}))[:2] == ["n00", "n01"]
    for params, name in (({"page": "0"}, "page"), ({"page": "x"}, "page"), ({"page_size": "0"}, "page_size"),
                         ({"page": "2", "offset": "1"}, "offset"), ({"page": "2", "cursor": ""}, "cursor"),
                         ({"page_size": "2", "limit": "2"}, "limit")):
        response = anon.get(NOTES, params)
        assert response.status_code == 400 and name in response.json()["errors"], (params, response.content)


# -- 6. count (estimated past a threshold) and each item's url -----------------------------


def test_lists_carry_count_and_item_urls(anon):
    make_notes(4)
    body = anon.get(NOTES, {"limit": "2"}).json()
    assert body["count"] == 4 and body["count_estimated"] is False
    item = body["results"][0]
    assert item["url"] == f"http://testserver{NOTES}{item['id']}/"
    assert anon.get(item["url"]).json()["title"] == item["title"]
    assert anon.get(NOTES, {"title": "n01"}).json()["count"] == 1
    assert "count" not in anon.get(NOTES, {"count": "false"}).json()


def test_past_the_exact_limit_postgresql_estimates_and_says_so(anon, settings, is_postgres):
    make_notes(6)
    settings.FLUVIUS = {**settings.FLUVIUS, "EXACT_COUNT_LIMIT": 3}
    body = anon.get(NOTES).json()
    if is_postgres:
        assert body["count_estimated"] is True and body["count"] >= 4
    else:  # nothing estimates a UUID-keyed table on SQLite: counted exactly
        assert (body["count"], body["count_estimated"]) == (6, False)
    assert anon.get(NOTES, {"title": "n01"}).json()["count_estimated"] is False


# -- 7. blank strings and the field table ----------------------------------------------------


def test_a_blank_default_accepts_blank(signed_in):
    order_id = place_order()
    response = post(signed_in, f"/api/app-order/cancel-order/{order_id}/", {"reason": ""})
    assert response.status_code == 200, response.content
    assert response.json()["state"]["reason"] == ""
    meta = signed_in.get("/api/app-order/_meta/").json()
    schema = next(c for c in meta["commands"] if c["name"] == "cancel-order")["schema"]["properties"]["reason"]
    assert schema.get("default") == "" and "minLength" not in schema


class Colour(enum.Enum):
    RED = "red"
    NONE = ""


def every_kind(
    self,
    text: str = "",
    whole: int = 0,
    real: float = 0.0,
    flag: bool = False,
    money: decimal.Decimal = decimal.Decimal("0"),
    ident: uuid.UUID | None = None,
    moment: datetime.datetime | None = None,
    day: datetime.date | None = None,
    clock: datetime.time | None = None,
    span: datetime.timedelta | None = None,
    mapping: dict | None = None,
    items: list[str] | None = None,
    anything: typing.Any = None,
    choice: typing.Literal["", "a"] = "",
    colour: Colour = Colour.NONE,
    maybe_text: str | None = None,
):
    pass


def test_no_field_loses_an_option_when_drf_copies_it():
    serializer = build_serializer(every_kind, "every-kind")
    declared = serializer._declared_fields
    copied = serializer().fields  # DRF deep-copies declared fields from their constructor arguments
    for name, field in declared.items():
        for attribute in ("required", "allow_null", "allow_blank", "default", "allow_empty"):
            assert getattr(copy.deepcopy(field), attribute, None) == getattr(field, attribute, None), (name, attribute)
            assert getattr(copied[name], attribute, None) == getattr(field, attribute, None), (name, attribute)
    assert copied["text"].allow_blank and copied["choice"].allow_blank
    assert serializer(data={"text": "", "choice": "", "colour": ""}).is_valid()
    # Every type of the table has a case above.
    assert {str, int, float, bool, decimal.Decimal, uuid.UUID, datetime.datetime, datetime.date,
            datetime.time, datetime.timedelta, dict, list, typing.Any} <= set(FIELD_FOR_TYPE)


# -- 8. a typo between the state and the projection model is a warning ------------------------


class TypoAggregate(Aggregate):
    @action(evt_key="typo-note-created", resources=["note"], create=True)
    def create_note(self, title: str):
        return {"titel": title, "body": ""}


class TypoDomain(Domain):
    __aggregate__ = TypoAggregate
    __namespace__ = "test-typo-notes"
    __resources__ = {"note": "testapp.Note"}


def test_a_state_key_with_no_column_beside_an_unwritten_one_is_a_warning():
    assert not [w for w in check_projection_fields() if w.id == "fluvius.W006"]
    domains.register(TypoDomain)
    try:
        warnings = [w for w in check_projection_fields() if w.id == "fluvius.W006"]
    finally:
        domains.unregister(TypoDomain.__namespace__)
    assert len(warnings) == 1
    message = warnings[0].msg
    assert "'titel'" in message and "'title'" in message and "testapp.Note" in message
    assert "create-note" in message


# -- 9. DomainError rule codes ---------------------------------------------------------------


def test_domain_errors_carry_a_rule_code(signed_in):
    derived = post(signed_in, "/api/app-user/create-user/", {"name": "a", "email": "nope"})
    assert derived.status_code == 422 and derived.json()["code"] == "create-user.invalid-email"
    order_id = place_order()
    given = post(signed_in, f"/api/app-order/ship-order/{order_id}/", {})
    assert given.status_code == 422 and given.json() == {"code": "order_not_paid",
                                                         "message": "Only a paid order can be shipped"}
    assert list(CommandLog.objects.filter(status="rejected").order_by("id").values_list("error_code", flat=True)) == [
        "create-user.invalid-email", "order_not_paid"]
    assert DomainError("x", code="mine").code == "mine" and DomainError("x").code == "domain_error"


# -- 10. deep nesting ------------------------------------------------------------------------


def test_deeply_nested_payloads_are_400s(signed_in):
    order_id = place_order()
    url = f"/api/app-order/add-item/{order_id}/"
    for raw in (b"[" * 100_000, b'{"sku": ' + b"[" * 5000 + b"]" * 5000 + b"}"):
        response = signed_in.generic("POST", url, raw, content_type="application/json")
        assert response.status_code == 400 and response.json()["code"] in ("parse_error", "invalid_payload"), \
            response.content[:200]
    nested: typing.Any = "x"
    for _ in range(40):
        nested = {"n": nested}
    response = post(signed_in, "/api/app-order/place-order/",
                    {"customer_id": str(uuid.uuid4()), "items": [nested]})
    assert response.status_code == 400 and response.json()["code"] == "invalid_payload"
    assert any("nested more than 32" in m for ms in response.json()["errors"].values() for m in ms)
    assert Event.objects.filter(evt_key="order-item-added").count() == 0
    with pytest.raises(CommandValidationError):
        OrderDomain().create_command("place-order", {"customer_id": str(uuid.uuid4()), "items": [nested]})


# -- 11. NUL and lone surrogates --------------------------------------------------------------


def test_a_lone_surrogate_in_a_field_name_is_a_json_400(signed_in):
    raw = b'{"name": "A", "email": "a@x.io", "\\ud800": 1}'
    response = signed_in.generic("POST", "/api/app-user/create-user/", raw, content_type="application/json")
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid_payload" and "\\ud800" in body["errors"]
    assert log_rows() == 0


@pytest.mark.parametrize("items", [
    [{"sku": "a\u0000b", "quantity": 1, "price": "1"}],
    [{"sku": "a\ud800", "quantity": 1, "price": "1"}],
    [{"s\u0000ku": "a", "quantity": 1, "price": "1"}],
    [{"sku": "a", "quantity": 1, "price": "1", "note": ["\udfff"]}],
])
def test_nul_and_lone_surrogates_in_free_form_fields_are_refused_naming_the_field(signed_in, items):
    raw = json.dumps({"customer_id": str(uuid.uuid4()), "items": items}).encode()  # ensure_ascii escapes them
    response = signed_in.generic("POST", "/api/app-order/place-order/", raw, content_type="application/json")
    assert response.status_code == 400, response.content
    errors = response.json()["errors"]
    assert any(name.startswith("items.0") for name in errors), errors
    assert Event.objects.count() == 0 and log_rows() == 0


class Refuser(Aggregate):
    @action(evt_key="refused", resources=["note"], create=True)
    def refuse(self, data: typing.Any = None):
        raise DomainError("never", code="never")


class RefuserDomain(Domain):
    __aggregate__ = Refuser
    __namespace__ = "test-refuser"
    __resources__ = {"note": "testapp.Note"}


def test_the_command_log_row_cannot_fail_on_the_payload():
    # A command made by hand, past validation, as code that builds its own Command could.
    domain = RefuserDomain(DomainContext.system(namespace="test-refuser"))
    spec = domain.commands()["refuse"]
    payload = {"data": {"k\u0000": ["\ud800", "ok\u0000"]}}
    command = Command(namespace="test-refuser", key="refuse", payload=payload, spec=spec, context=domain.context)
    with pytest.raises(DomainError):
        domain.process_command(command)
    row = CommandLog.objects.get(command_id=command.id)
    assert row.status == "rejected" and row.error_code == "never"
    assert row.payload == {"data": {"k\ufffd": ["\ufffd", "ok\ufffd"]}}


# -- 12. cursors of a wrong shape --------------------------------------------------------------


@pytest.mark.parametrize("payload", [
    {"o": ["-created_at", "id"], "v": 5, "d": "n"},
    {"o": "-created_at", "v": [1, 2], "d": "n"},
    {"o": ["-created_at", "id"], "v": ["\ud800", "x"], "d": "n"},
    {"o": ["-created_at", "id"], "v": [{"a": 1}, None], "d": "n"},
    {"o": ["-created_at", "id"], "v": ["2024-01-01T00:00:00+00:00", "\u0000"], "d": "n"},
    {"o": ["-created_at", "id"], "v": ["2024-01-01T00:00:00+00:00", "not-a-uuid"], "d": "n"},
    [1, 2, 3],
])
def test_re_signed_cursors_of_a_wrong_shape_are_400s(anon, payload):
    make_notes(2)
    token = signing.dumps(payload, salt=SALT, compress=True)
    response = anon.get(NOTES, {"cursor": token})
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_query" and "cursor" in response.json()["errors"]


# -- 13. idempotency keys are scoped by tenant -------------------------------------------------


@pytest.mark.urls("tests.security_urls")
def test_the_same_key_for_another_tenant_is_another_request(people):
    dave = tenant_api(people["dave"])  # a member of acme and globex
    for tenant in ("acme", "globex"):
        response = dave.post("/api/test-tickets/open-ticket/", {"title": "same"}, format="json",
                             headers={"Idempotency-Key": "k-1", "X-Tenant-ID": tenant})
        assert response.status_code == 201 and "Idempotent-Replayed" not in response
    again = dave.post("/api/test-tickets/open-ticket/", {"title": "same"}, format="json",
                      headers={"Idempotency-Key": "k-1", "X-Tenant-ID": "globex"})
    assert again["Idempotent-Replayed"] == "true"
    assert sorted(Event.objects.values_list("tenant", flat=True)) == ["acme", "globex"]
    assert sorted(IdempotencyRecord.objects.values_list("tenant", flat=True)) == ["acme", "globex"]


# -- 14. AllOf reports the policy that refused -------------------------------------------------


class Editors(Policy):
    message = "Only editors may do this."

    def has_permission(self, context, command):
        return getattr(context.user, "username", "") == "editor"


def test_all_of_reports_the_failing_policys_message(user):
    policy = as_policy([IsAuthenticated, Editors])
    command = UserDomain().create_command("create-user", {"name": "a", "email": "a@x.io"})
    signed = DomainContext.create(namespace="app-user", user=user)
    assert denied(policy, command, signed).message == "Only editors may do this."
    anonymous = DomainContext.create(namespace="app-user", user=None)
    assert denied(policy, command, anonymous).message == "You must be signed in to run this command."
    assert denied(IsAuthenticated() & Editors(), command, signed).message == "Only editors may do this."


# -- 15. If-Match on a create-by-id route ------------------------------------------------------


def test_if_match_on_a_create_with_a_client_id_is_a_400(signed_in):
    for tag in ('"0"', '"1"'):
        response = post(signed_in, f"/api/app-user/create-user/{uuid.uuid4()}/", {"name": "A", "email": "a@x.io"},
                        **{"If-Match": tag})
        assert response.status_code == 400 and response.json()["code"] == "invalid_if_match"
    assert Event.objects.count() == 0


# -- 16. a JSON integer is no UUID; chunked bodies are read --------------------------------------


def test_a_uuid_parameter_refuses_a_json_number(signed_in):
    response = post(signed_in, "/api/app-order/place-order/", {"customer_id": 7, "items": [{"sku": "a"}]})
    assert response.status_code == 400 and "customer_id" in response.json()["errors"]
    assert Event.objects.count() == 0


def chunked_request(body, *, terminated):
    request = RequestFactory().generic("POST", "/api/app-user/create-user/", b"", content_type="application/json")
    request.META.pop("CONTENT_LENGTH", None)
    request.META["HTTP_TRANSFER_ENCODING"] = "chunked"
    request.META["wsgi.input"] = io.BytesIO(body)
    if terminated:
        request.META["wsgi.input_terminated"] = True
    return request


def test_a_chunked_json_body_is_read_where_the_server_decodes_it(settings):
    body = json.dumps({"name": "Chunk", "email": "c@x.io"}).encode()
    request = chunked_request(body, terminated=True)  # gunicorn, uWSGI: the input ends with the body
    read_chunked_body(request)
    assert request.META["CONTENT_LENGTH"] == str(len(body)) and request.body == body
    untold = chunked_request(body, terminated=False)  # runserver: reading would wait for ever
    read_chunked_body(untold)
    assert "CONTENT_LENGTH" not in untold.META
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10
    with pytest.raises(RequestTooLarge):
        read_chunked_body(chunked_request(body, terminated=True))


# -- 17. Django's multipart parser, with Django's limits --------------------------------------


def test_djangos_upload_limits_apply(signed_in, settings, media_root):
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 1
    order_id = place_order()
    response = upload(signed_in, f"/api/app-order/order/{order_id}/media/", png(), extra_files=1)
    assert response.status_code == 400 and response.json()["code"], response.content
    assert MediaEntry.objects.count() == 0 and files_under(media_root) == []

