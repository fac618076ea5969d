"""Uploads and downloads of media bound to aggregates (``DomainRouter`` routes them).

For each resource of a routed domain, e.g. ``app-order`` / ``order``:

| method | path                                                  | action   |
|--------|-------------------------------------------------------|----------|
| GET    | ``app-order/order/<id>/media/``                       | list     |
| POST   | ``app-order/order/<id>/media/`` (multipart ``file``)  | upload   |
| GET    | ``app-order/order/<id>/media/<media_id>/``            | retrieve |
| GET    | ``app-order/order/<id>/media/<media_id>/download/``   | download |

Only resources that opt in get these routes (``Domain.__media__ = ["order"]``, or
``DomainRouter.register(..., media=...)``). Every action first asks the resource's
own viewset whether the request may see the aggregate: its permission classes,
then its (scoped) queryset. A user who cannot read the aggregate gets the same 404
the resource endpoint gives. Reading is not writing: an upload also needs the
resource's upload policy (``__media__ = {"order": policy}``, any value
``@action(permission=...)`` takes). Without one declared, a signed-in user may
upload, and with ``FLUVIUS['COMMAND_PERMISSIONS']`` on only one who holds the run
permission of a command of the resource (``DefaultUploadPolicy``). Anonymous
uploads happen only where a declared policy allows them (``AllowAny``).

The upload streams: ``MediaUploadHandler`` replaces Django's upload handlers for
the request and writes each chunk of the ``file`` part to a stage of the media
storage as it arrives (counting, hashing, stopping at ``MEDIA_MAX_SIZE``), so the
file is never in memory whole; ``store_media`` then checks it and commits it.
A declared ``Content-Length`` over the limit is refused before the body is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from django.http import FileResponse, HttpResponse
from django.http.response import HttpResponseBase
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.viewsets import GenericViewSet

from django_fluvius.conf import fluvius_settings
from django_fluvius.exceptions import (
    InvalidMediaName,
    InvalidUpload,
    MediaNotFound,
    MediaTooLarge,
    PermissionDenied,
)
from django_fluvius.media.entries import get_entry, store_media
from django_fluvius.media.storage import StagedMedia, media_storage
from django_fluvius.models import MediaEntry
from django_fluvius.read.replicas import write_alias
from django_fluvius.read.state import parse_aggregate_id
from django_fluvius.registry import domains
from django_fluvius.rest.schema import (
    AGGREGATE_ID,
    CORRELATION_IN,
    CORRELATION_OUT,
    ERRORS,
    FluviusAutoSchema,
)
from django_fluvius.rest.views import (
    CSRF_FIELD,
    FluviusAPIMixin,
    ResourceViewSet,
    StrictLimitOffsetPagination,
    url_name,
)
from django_fluvius.security.permissions import Policy, as_policy, command_permission

FILE_FIELD = "file"
# Room for the multipart boundaries and part headers around the file itself.
MULTIPART_OVERHEAD = 64 * 1024
# Bytes per read of a download streamed through the application.
DOWNLOAD_BLOCK_SIZE = 256 * 1024


# -- the upload handler --------------------------------------------------------


class StagedUpload(UploadedFile):
    """The ``file`` part of an upload once received: a finished stage, not bytes in memory.

    Closing it (Django closes ``request.FILES`` at the end of the request)
    removes the stage if nothing committed it.
    """

    def __init__(self, staged: StagedMedia, *, name: str, content_type: str | None, charset: str | None):
        super().__init__(None, name=name, content_type=content_type, size=staged.size, charset=charset)
        self.staged = staged

    def open(self, mode: str = "rb") -> Any:  # type: ignore[override]  # a new file object, not self
        return open(self.staged.path, mode)  # noqa: SIM115 - the caller closes it

    def close(self) -> None:
        self.staged.discard()


class MediaUploadHandler(FileUploadHandler):
    """Writes the one ``file`` part of a multipart body to a media stage as it arrives.

    Django's own ``MultiPartParser`` parses the body and hands the file's bytes to
    ``receive_data_chunk`` chunk by chunk (``chunk_size``); memory stays flat
    whatever the file's size, and Django's limits apply (``DATA_UPLOAD_MAX_NUMBER_FILES``,
    ``DATA_UPLOAD_MAX_NUMBER_FIELDS``, ``DATA_UPLOAD_MAX_MEMORY_SIZE`` for the other
    fields). A hand-written parser stood here before; measured with
    ``bench.media_upload`` (docs/benchmarks.md), Django's reading 1 MiB chunks is
    within the noise of it (at Django's default 64 KiB it was ~1.4x slower), so it went.
    """

    # Django's parser reads the body in the smallest chunk_size of the request's handlers.
    chunk_size = 1024 * 1024

    def __init__(self, request: Any = None, *, storage: Any = None, max_size: int | None = None):
        super().__init__(request)
        self.storage = storage or media_storage()
        self.max_size = max_size
        self.staged: StagedMedia | None = None

    @property
    def stage(self) -> StagedMedia:
        """The stage of the file part being received."""
        if self.staged is None:
            raise InvalidUpload("The multipart body sent file data before a file part.")
        return self.staged

    def new_file(self, field_name: str, file_name: str, content_type: str, content_length: int | None,
                 charset: str | None = None, content_type_extra: dict | None = None) -> None:
        super().new_file(field_name, file_name, content_type, content_length, charset, content_type_extra)
        if not file_name:
            raise InvalidMediaName("The file's name is not usable (nothing is left of it).",
                                   errors={FILE_FIELD: ["Give the file a name (not a path)."]})
        if field_name != FILE_FIELD:
            raise InvalidUpload(f"Send the file in the {FILE_FIELD!r} field.",
                                errors={field_name: [f"Unknown file field; use {FILE_FIELD!r}."]})
        if self.staged is not None:
            raise InvalidUpload("Send one file per upload.", errors={FILE_FIELD: ["Only one file is accepted."]})
        if self.max_size is not None and content_length is not None and content_length > self.max_size:
            raise MediaTooLarge(f"The file is larger than {self.max_size} bytes, the most accepted.",
                                max_size=self.max_size)
        self.staged = self.storage.stage(max_size=self.max_size)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        self.stage.write(raw_data)
        return None

    def file_complete(self, file_size: int) -> StagedUpload:
        self.stage.close()
        return StagedUpload(self.stage, name=self.file_name or "", content_type=self.content_type,
                            charset=self.charset)

    def upload_interrupted(self) -> None:
        self.discard()

    def discard(self) -> None:
        if self.staged is not None:
            self.staged.discard()


# -- who may upload ------------------------------------------------------------


class DefaultUploadPolicy(Policy):
    """Upload rights when a resource declares none: a signed-in user; with
    ``COMMAND_PERMISSIONS`` on, one who may run some command of the resource."""

    message = "You must be signed in, and allowed to change this resource, to upload files."

    def has_permission(self, context: Any, command: Any) -> bool:
        user = getattr(context, "user", None)
        if not (user is not None and user.is_authenticated and getattr(user, "is_active", True)):
            return False
        if not fluvius_settings.COMMAND_PERMISSIONS:
            return True
        domain_class = domains.get(command.namespace)
        perms = [command_permission(domain_class, spec) for spec in domain_class.commands().values()
                 if not spec.create and spec.applies_to(command.resource)]
        return any(perm and user.has_perm(perm) for perm in perms)


@dataclass
class UploadCommand:
    """What an upload policy is asked about, in the shape of a ``Command`` (policies
    read ``namespace``, ``key``, ``spec.create``, ``aggregate_id``)."""

    namespace: str
    resource: str
    aggregate_id: Any
    key: str = "upload-media"
    spec: Any = field(default_factory=lambda: SimpleNamespace(name="upload-media", create=False, resources=()))


# -- serializers ---------------------------------------------------------------


class MediaEntrySerializer(serializers.ModelSerializer):
    """A file attached to an aggregate: what it is and where to download it."""

    download_url = serializers.SerializerMethodField()

    class Meta:
        model = MediaEntry
        fields = ["id", "namespace", "resource", "aggregate_id", "filename", "content_type", "size",
                  "sha256", "storage", "uploaded_by", "created", "download_url"]
        read_only_fields = fields
        ref_name = "MediaEntry"

    def get_download_url(self, entry: MediaEntry) -> str | None:
        view = self.context.get("view")
        if view is None:
            return None
        return view.reverse_route(url_name(view.namespace, view.resource, "media-download"),
                                  aggregate_id=entry.aggregate_id, media_id=entry.id)


class MediaUploadResultSerializer(MediaEntrySerializer):
    """The entry an upload made, or found: ``duplicate`` when the bytes were already attached."""

    duplicate = serializers.BooleanField()

    class Meta(MediaEntrySerializer.Meta):
        fields = [*MediaEntrySerializer.Meta.fields, "duplicate"]
        read_only_fields = fields
        ref_name = "MediaUploadResult"


class MediaUploadSerializer(serializers.Serializer):
    """The multipart body of an upload: one file, in the ``file`` field."""

    file = serializers.FileField()


class SignedURLSerializer(serializers.Serializer):
    """Where to fetch the bytes directly (signed, short-lived), as the Location header says."""

    url = serializers.URLField()
    expires_in = serializers.IntegerField()


# -- schema ----------------------------------------------------------------------

MEDIA_ID = OpenApiParameter("media_id", OpenApiTypes.UUID, OpenApiParameter.PATH,
                            description="The media entry's id (a UUID).")
UPLOAD_ERRORS = {
    **{code: ERRORS[code] for code in (400, 401, 403, 404, 429)},
    413: OpenApiResponse(ERRORS[413].response, description="The file is larger than MEDIA_MAX_SIZE."),
    415: OpenApiResponse(ERRORS[415].response, description=(
        "The body is not multipart, or the file's type is not allowed, or its content "
        "does not match its declared type.")),
}


class MediaSchema(FluviusAutoSchema):
    @property
    def view_action(self) -> str:
        return getattr(self.view, "action", None) or "list"

    DESCRIPTIONS = {
        "list": "The files attached to the aggregate, oldest first.",
        "upload": (
            "Attach a file to the aggregate: multipart/form-data with one part, `file`. "
            "Its type is checked against its first bytes and MEDIA_ALLOWED_TYPES, its size "
            "against MEDIA_MAX_SIZE. The same bytes uploaded again to the same aggregate "
            "return the existing entry (200, `duplicate: true`)."
        ),
        "retrieve": "One file attached to the aggregate: name, type, size, SHA-256.",
        "download": (
            "The file's bytes, as an attachment (ETag: its SHA-256); or, from a storage that "
            "signs URLs (S3), a 302 to a short-lived signed URL."
        ),
    }

    def get_operation_id(self) -> str:
        ns = self.view.domain_class.__namespace__
        return f"{ns}_{self.view.resource}_media_{self.view_action}".replace("-", "_")

    def get_summary(self) -> str:
        return f"{self.view.resource} media: {self.view_action}"

    def get_description(self) -> str:  # type: ignore[override]  # drf-spectacular's takes no arguments
        return self.DESCRIPTIONS.get(self.view_action, "")

    def map_parsers(self) -> list[str]:
        return ["multipart/form-data"] if self.view_action == "upload" else super().map_parsers()

    def get_override_parameters(self) -> list[Any]:
        params = [AGGREGATE_ID, CORRELATION_IN, CORRELATION_OUT]
        if self.view_action in ("retrieve", "download"):
            params.insert(1, MEDIA_ID)
        return params

    def get_request_serializer(self) -> Any:
        return MediaUploadSerializer if self.view_action == "upload" else None

    def _is_list_view(self, serializer: Any = None) -> bool:
        return self.view_action == "list"

    def _get_paginator(self) -> Any:
        return self.view.pagination_class() if self.view_action == "list" else None

    def get_filter_backends(self) -> list[Any]:
        return []

    def get_response_serializers(self) -> Any:
        action = self.view_action
        if action == "upload":
            return {201: MediaUploadResultSerializer,
                    200: OpenApiResponse(MediaUploadResultSerializer,
                                         description="The bytes were already attached: the existing entry."),
                    **UPLOAD_ERRORS}
        if action == "download":
            return {200: OpenApiResponse(OpenApiTypes.BINARY, description="The file's bytes."),
                    302: OpenApiResponse(SignedURLSerializer,
                                         description="Redirect to a signed, short-lived URL (S3)."),
                    304: OpenApiResponse(description="Not modified (If-None-Match matched the ETag)."),
                    **self.errors()}
        return {200: MediaEntrySerializer, **self.errors()}


# -- the viewset -----------------------------------------------------------------


class MediaPagination(StrictLimitOffsetPagination):
    default_limit = 100
    max_limit = 1000


class MediaViewSet(FluviusAPIMixin, GenericViewSet):
    """Media of one resource's aggregates; see the module docstring for the routes.

    ``resource_view`` is the viewset serving the resource: its permissions and
    queryset decide who may see (and so upload to, and download from) an
    aggregate. Subclass to change the upload limits per resource
    (``max_size``, ``allowed_types``; None = the FLUVIUS settings).
    """

    resource: str | None = None
    resource_view: type = ResourceViewSet
    serializer_class = MediaEntrySerializer
    pagination_class = MediaPagination
    parser_classes = [MultiPartParser]
    schema = MediaSchema()
    max_size: int | None = None
    allowed_types: list[str] | None = None
    # Who may upload (set by the router from __media__ / media=); None: DefaultUploadPolicy.
    upload_policy: Any = None

    def get_view_name(self) -> str:
        return f"{self.namespace}: {self.resource} media"

    def check_upload_permission(self, aggregate_id: Any) -> None:
        """403 unless the resource's upload policy allows this user to add a file here."""
        policy = as_policy(self.upload_policy) or DefaultUploadPolicy()
        domain = self.get_domain()
        context = domain.context
        # Shaped like a Command for the policies (they read namespace, key, spec.create).
        command: Any = UploadCommand(self.namespace, self.resource or "", aggregate_id)
        allowed = policy.has_permission(context, command)
        aggregate = None
        if allowed and policy.checks_objects:
            aggregate = domain.load(aggregate_id)
            allowed = policy.has_object_permission(context, command, aggregate)
        if not allowed:
            message = policy.refusal(context, command, aggregate) or (
                f"You may not upload files to this {self.resource}.")
            raise PermissionDenied(message)

    # -- limits --

    def get_max_size(self) -> int | None:
        return self.max_size if self.max_size is not None else fluvius_settings.MEDIA_MAX_SIZE

    def get_allowed_types(self) -> list[str] | None:
        return self.allowed_types if self.allowed_types is not None else fluvius_settings.MEDIA_ALLOWED_TYPES

    # -- the request --

    def initialize_request(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        # Before anything reads the body (DRF's CSRF check may): our handler, only ours.
        if request.method == "POST":
            self._upload_handler = MediaUploadHandler(request, max_size=self.get_max_size())
            request.upload_handlers = [self._upload_handler]
        return super().initialize_request(request, *args, **kwargs)

    def perform_content_negotiation(self, request: Any, force: bool = False) -> Any:
        # A download answers bytes whatever Accept says; errors are JSON.
        return super().perform_content_negotiation(request, force=True)

    def finalize_response(self, request: Any, response: Any, *args: Any, **kwargs: Any) -> Any:
        handler = getattr(self, "_upload_handler", None)
        if handler is not None:
            handler.discard()  # committed, refused or broken off: no stage outlives the request
        return super().finalize_response(request, response, *args, **kwargs)

    # -- the aggregate's permissions --

    def get_resource_view(self) -> ResourceViewSet:
        view = getattr(self, "_resource_view", None)
        if view is None:
            view = self.resource_view(domain_class=self.domain_class, resource=self.resource)
            view.request = self.request
            view.args, view.kwargs = self.args, self.kwargs
            view.format_kwarg = None
            view.action = "retrieve"
            view._domain = self.get_domain()
            self._resource_view = view
        return view

    def get_permissions(self) -> list[Any]:
        return list(self.get_resource_view().get_permissions())

    def get_aggregate(self, aggregate_id: Any) -> Any:
        """The aggregate's id once the request may see it (else the resource's own 404)."""
        pk = parse_aggregate_id(aggregate_id)
        self.get_resource_view().get_visible(pk)
        return pk

    def get_queryset(self) -> Any:
        return MediaEntry.objects.using(write_alias()).filter(namespace=self.namespace)

    # -- actions --

    def list(self, request: Any, aggregate_id: str | None = None, **kwargs: Any) -> Response:
        pk = self.get_aggregate(aggregate_id)
        entries = self.get_queryset().filter(aggregate_id=pk).order_by("created", "id")
        page = self.paginate_queryset(entries)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def upload(self, request: Any, aggregate_id: str | None = None, **kwargs: Any) -> Response:
        pk = self.get_aggregate(aggregate_id)
        # Before the body is read: seeing an aggregate is not being allowed to add to it.
        self.check_upload_permission(pk)
        self.check_declared_length(request)
        upload = self.get_upload(request)
        entry, created = store_media(
            upload.staged, namespace=self.namespace, aggregate_id=pk, filename=upload.name or "",
            content_type=upload.content_type, user=self.get_domain().context.user,
            max_size=self.get_max_size(), allowed_types=self.get_allowed_types(),
        )
        entry.duplicate = not created  # type: ignore[attr-defined]  # read by MediaUploadResultSerializer
        body = MediaUploadResultSerializer(entry, context=self.get_serializer_context()).data
        response = Response(body, status=201 if created else 200)
        if body.get("download_url"):
            response["Location"] = body["download_url"]
        return response

    def retrieve(self, request: Any, aggregate_id: str | None = None, media_id: str | None = None,
                 **kwargs: Any) -> Response:
        pk = self.get_aggregate(aggregate_id)
        entry = get_entry(media_id, namespace=self.namespace, aggregate_id=pk)
        return Response(self.get_serializer(entry).data)

    def download(self, request: Any, aggregate_id: str | None = None, media_id: str | None = None,
                 **kwargs: Any) -> Any:
        pk = self.get_aggregate(aggregate_id)
        entry = get_entry(media_id, namespace=self.namespace, aggregate_id=pk)
        strategy = media_storage(entry.storage)
        response: HttpResponseBase  # a DRF Response, a 304 or a streamed file
        if strategy.signed_urls and fluvius_settings.MEDIA_SIGNED_URLS:
            expires = int(fluvius_settings.MEDIA_URL_EXPIRES)
            url = strategy.url(entry.key, expires=expires, filename=entry.filename,
                               content_type=entry.content_type)
            response = Response({"url": url, "expires_in": expires}, status=302)
            response["Location"] = url
            response["Cache-Control"] = "no-store"
            return response
        tag = f'"{entry.sha256}"'
        if tag in request.META.get("HTTP_IF_NONE_MATCH", ""):
            response = HttpResponse(status=304)
        else:
            try:
                stream = strategy.open(entry.key)
            except FileNotFoundError:
                raise MediaNotFound(f"The bytes of media {entry.id} are missing from its storage.",
                                    code="media_content_missing") from None
            response = file_response = FileResponse(stream, as_attachment=True, filename=entry.filename,
                                                    content_type=entry.content_type)
            file_response.block_size = DOWNLOAD_BLOCK_SIZE
            response["Content-Length"] = str(entry.size)
        response["ETag"] = tag
        response["X-Content-Type-Options"] = "nosniff"
        response["Cache-Control"] = "private"
        return response

    # -- upload helpers --

    def check_declared_length(self, request: Any) -> None:
        """413 before reading a body whose declared length cannot fit the limit."""
        limit = self.get_max_size()
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if limit is not None and length > limit + MULTIPART_OVERHEAD:
            raise MediaTooLarge(f"The request has {length} bytes; files of at most {limit} bytes "
                                f"are accepted.", max_size=limit)

    def get_upload(self, request: Any) -> StagedUpload:
        files = request.FILES
        data = request.data
        unknown = sorted(set(data) - {FILE_FIELD, CSRF_FIELD})
        errors = {name: ["Unknown field."] for name in unknown}
        upload = files.get(FILE_FIELD)
        if not isinstance(upload, StagedUpload):
            errors[FILE_FIELD] = ["No file was sent: send it as multipart/form-data in the 'file' field."]
        if errors:
            raise InvalidUpload("The upload is malformed: " + ", ".join(sorted(errors)) + ".", errors=errors)
        return upload
