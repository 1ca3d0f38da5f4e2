"""The provenance API (``/api/governance/``): verify a text, a file or a content id;
export a generated answer as a labelled file; check an uploaded file for AIGC labels.

``verify`` is open to anonymous callers (throttled per address by
``GOVERNANCE_VERIFY_ANON_RATE``, signed-in callers per user by
``GOVERNANCE_VERIFY_USER_RATE``); its answers name the served model and times only, and
the text watermark is tested only against deployments the caller may see.
Every upload is refused past ``GOVERNANCE_UPLOAD_MAX_BYTES`` (413). Views check, call
:mod:`governance.services.provenance`, serialize.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.http import HttpResponse
from django.urls import path
from django.utils.http import content_disposition_header
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle
from rest_framework.views import APIView

from governance.labels.files import KINDS
from governance.labels.implicit import header_value
from governance.services import provenance, render
from portal.api.parsers import SafeJSONParser
from portal.auth import acting_user
from portal.errors import PlatformError

CONTENT_ID = serializers.RegexField(
    r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$",
    required=False,
    help_text="A content id the platform issued (``aigc-…``).",
)
_UPLOAD_OVERHEAD = 64 * 1024  # multipart boundaries and the other fields


class RequestTooLarge(PlatformError):
    status = 413
    code = "request_too_large"


def _max_chars() -> int:
    return int(getattr(settings, "GOVERNANCE_EXPORT_MAX_CHARS", 200_000))


def _max_bytes() -> int:
    return int(getattr(settings, "GOVERNANCE_UPLOAD_MAX_BYTES", 20 * 1024**2))


# --- throttles ---------------------------------------------------------------------------


class VerifyAnonThrottle(AnonRateThrottle):
    """Anonymous callers, per client address (``GOVERNANCE_VERIFY_ANON_RATE``)."""

    scope = "governance_verify_anon"

    def get_rate(self) -> str | None:
        return str(getattr(settings, "GOVERNANCE_VERIFY_ANON_RATE", "20/min"))


class VerifyUserThrottle(UserRateThrottle):
    """Signed-in callers, per user (``GOVERNANCE_VERIFY_USER_RATE``); anonymous ones are
    left to :class:`VerifyAnonThrottle`."""

    scope = "governance_verify_user"

    def get_rate(self) -> str | None:
        return str(getattr(settings, "GOVERNANCE_VERIFY_USER_RATE", "300/min"))

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if not request.user or not request.user.is_authenticated:
            return None
        return super().get_cache_key(request, view)


# --- serializers -------------------------------------------------------------------------


class VerifyJSONSerializer(serializers.Serializer[Any]):
    text = serializers.CharField(
        required=False, trim_whitespace=False, max_length=200_000, help_text="A text to look up."
    )
    content_id = CONTENT_ID


class VerifyFileSerializer(serializers.Serializer[Any]):
    file = serializers.FileField(allow_empty_file=True, use_url=False)
    kind = serializers.ChoiceField(
        choices=KINDS, required=False, help_text="The file's kind; from its name when omitted."
    )


class VerifyRequestSerializer(VerifyJSONSerializer, VerifyFileSerializer):
    """One of ``text``, ``content_id`` or ``file``."""

    file = serializers.FileField(required=False, allow_empty_file=True, use_url=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        given = [name for name in ("text", "content_id", "file") if name in attrs]
        if len(given) != 1:
            raise serializers.ValidationError("Give exactly one of text, content_id or file.")
        return attrs


class ClassificationSerializer(serializers.Serializer[Any]):
    verdict = serializers.ChoiceField(choices=["is", "may", "suspected", "none"])
    reason = serializers.CharField()


class LabelField(serializers.DictField):
    """An ``AIGC`` object: its fields as strings."""

    child = serializers.CharField(allow_blank=True)


def _with_label(
    fields: dict[str, serializers.Field[Any, Any, Any, Any]], help_text: str
) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
    """``fields`` plus ``label`` (declared here: as a class attribute it would shadow
    ``Field.label``, the field's own caption)."""
    return {**fields, "label": LabelField(allow_null=True, help_text=help_text)}


class WatermarkResultSerializer(serializers.Serializer[Any]):
    """The green-list watermark: planted in a registry generation, or detected in a text."""

    applied = serializers.BooleanField(
        allow_null=True,
        help_text="For a text the registry has: whether its generation was watermarked.",
    )
    detected = serializers.BooleanField(
        allow_null=True,
        help_text="For any other text: whether z reached the threshold (null: not tested).",
    )
    z_score = serializers.FloatField(allow_null=True)
    p_value = serializers.FloatField(
        allow_null=True, help_text="One-sided normal tail of z for one key."
    )
    tokens_scored = serializers.IntegerField(allow_null=True)
    green_fraction = serializers.FloatField(allow_null=True)
    threshold = serializers.FloatField(allow_null=True)
    deployment = serializers.CharField(
        allow_null=True, help_text="The served name whose watermark was detected."
    )
    model = serializers.CharField(allow_null=True, help_text="Its model repo (namespace/name).")
    detail = serializers.CharField(allow_blank=True)


class VerifyResultSerializer(serializers.Serializer[Any]):
    input = serializers.ChoiceField(choices=["text", "file", "content_id"])
    found = serializers.BooleanField(help_text="Whether the platform's registry has it.")
    content_id = serializers.CharField(allow_null=True)
    kind = serializers.CharField(allow_null=True, help_text="text or file")
    file_kind = serializers.CharField(allow_null=True)
    generated_at = serializers.DateTimeField(allow_null=True)
    served_name = serializers.CharField(allow_null=True, allow_blank=True)
    text_sha256 = serializers.CharField(allow_null=True)
    content_sha256 = serializers.CharField(allow_null=True)
    explicit_label = serializers.BooleanField(
        allow_null=True, help_text="For a text: whether it carries a visible AI notice."
    )
    status = serializers.ChoiceField(
        choices=["intact", "tampered", "unverifiable", "unlabelled"], allow_null=True
    )
    reason = serializers.CharField(allow_blank=True)
    detail = serializers.CharField(allow_blank=True)
    classification = ClassificationSerializer(allow_null=True)
    watermark = WatermarkResultSerializer(
        allow_null=True,
        help_text="Texts, content ids and plain-text files: the text watermark, when there "
        "is anything to say.",
    )

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        return _with_label(super().get_fields(), "The AIGC label read or issued.")


class ExportRequestSerializer(serializers.Serializer[Any]):
    text = serializers.CharField(
        trim_whitespace=False, max_length=200_000, help_text="The generated answer."
    )
    content_id = CONTENT_ID
    format = serializers.ChoiceField(choices=render.FORMATS)
    explicit = serializers.ChoiceField(
        choices=["start", "end"], default="start", help_text="Where the visible notice goes."
    )


class UploadCheckSerializer(VerifyFileSerializer):
    pass


class UploadCheckResultSerializer(serializers.Serializer[Any]):
    kind = serializers.CharField()
    verdict = serializers.ChoiceField(choices=["is", "may", "suspected", "none"])
    reason = serializers.CharField()
    propagate_id = serializers.CharField(allow_null=True)

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        return _with_label(super().get_fields(), "The label with our propagation fields.")


# --- views -------------------------------------------------------------------------------


def _refuse_oversized(request: Request) -> None:
    """413 before the body is parsed when its declared length is past the upload limit."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > _max_bytes() + _UPLOAD_OVERHEAD:
        raise RequestTooLarge(f"Uploads are limited to {_max_bytes()} bytes.")


def _upload(form: dict[str, Any]) -> tuple[bytes, str]:
    """The uploaded file's bytes and kind (given, else guessed); 413 past the limit."""
    upload: UploadedFile = form["file"]
    if (upload.size or 0) > _max_bytes():
        raise RequestTooLarge(f"Uploads are limited to {_max_bytes()} bytes.")
    data = upload.read()
    return data, form.get("kind") or provenance.guess_kind(upload.name or "", data)


class VerifyView(APIView):
    """Did the platform generate this, and is its label intact?"""

    permission_classes = [permissions.AllowAny]
    throttle_classes = [VerifyAnonThrottle, VerifyUserThrottle]
    parser_classes = [SafeJSONParser, MultiPartParser]

    @extend_schema(
        operation_id="governanceVerify",
        tags=["governance"],
        request={
            "application/json": VerifyJSONSerializer,
            "multipart/form-data": VerifyFileSerializer,
        },
        responses={200: VerifyResultSerializer},
    )
    def post(self, request: Request) -> Response:
        """A text (with or without its explicit label), a content id, or a file (its
        embedded label verified against its content)."""
        _refuse_oversized(request)
        form = VerifyRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        given = form.validated_data
        if "file" in given:
            result = provenance.verify_file(*_upload(given), request.user)
        elif "text" in given:
            result = provenance.verify_text(given["text"], request.user)
        else:
            result = provenance.verify_id(given["content_id"])
        return Response(VerifyResultSerializer(result).data)


EXPORT_MEDIA = {
    fmt: media.split(";")[0] for fmt, media in render.MEDIA_TYPES.items() if fmt != "json"
}


class ExportView(APIView):
    """A generated answer as a file with the implicit label embedded (read back before it
    is returned) and the explicit one visible, registered in the provenance registry."""

    permission_classes = [permissions.IsAuthenticated]
    throttle_classes = [VerifyUserThrottle]
    parser_classes = [SafeJSONParser]

    @extend_schema(
        operation_id="governanceExport",
        tags=["governance"],
        request=ExportRequestSerializer,
        responses={
            **{(200, media): OpenApiTypes.BINARY for media in EXPORT_MEDIA.values()},
            (200, "application/json"): OpenApiTypes.OBJECT,
        },
    )
    def post(self, request: Request) -> HttpResponse:
        """The answer ``text`` (one the platform generated for you; ``content_id`` names
        it exactly) as md, txt, json, docx, pdf or png; 404 for content you may not see."""
        form = ExportRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        given = form.validated_data
        data, row = provenance.export(
            acting_user(request),
            text=given["text"],
            fmt=given["format"],
            content_id=given.get("content_id", ""),
            position=given["explicit"],
        )
        response = HttpResponse(data, content_type=render.MEDIA_TYPES[given["format"]])
        filename = f"{row.content_id}.{given['format']}"
        response["Content-Disposition"] = content_disposition_header(True, filename) or ""
        response["x-aigc-content-id"] = row.content_id
        response["x-aigc-label"] = header_value(row.label)
        return response


class UploadCheckView(APIView):
    """Is an uploaded file AI-generated (is / may / suspected / none)?"""

    permission_classes = [permissions.IsAuthenticated]
    throttle_classes = [VerifyUserThrottle]
    parser_classes = [MultiPartParser]

    @extend_schema(
        operation_id="governanceUploadCheck",
        tags=["governance"],
        request={"multipart/form-data": UploadCheckSerializer},
        responses={200: UploadCheckResultSerializer},
    )
    def post(self, request: Request) -> Response:
        """The file's classification and, when it carries a label, that label with the
        platform's propagation fields written."""
        _refuse_oversized(request)
        form = UploadCheckSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        result = provenance.check_upload(*_upload(form.validated_data))
        return Response(UploadCheckResultSerializer(result).data)


urlpatterns = [
    path("verify", VerifyView.as_view(), name="governance-verify"),
    path("exports", ExportView.as_view(), name="governance-exports"),
    path("uploads/check", UploadCheckView.as_view(), name="governance-uploads-check"),
]
