"""The provenance registry: labels for generated content, labelled exports, verification
and the upload check (GB 45438-2025).

Every piece of content the platform generates or exports is one :class:`Provenance` row
(content id, time, served name, fingerprints, the implicit label issued). The gateway's
events drain writes the rows of generated texts (``kind="text"``, ``text_sha256`` of
:func:`governance.labels.text.text_sha256`); :func:`register_export` writes those of
exported files (``kind="file"``, ``content_sha256`` of
:func:`governance.labels.files.content_digest`).

The verify answers (:func:`verify_text`, :func:`verify_file`, :func:`verify_id`) share one
shape (:func:`_answer`) and say whether and when the platform produced the content, with
which served name, and whether its label is intact. They never name who asked for it.

Labels are signed with ``GOVERNANCE_LABEL_KEY`` (``SECRET_KEY`` when unset) and name
``GOVERNANCE_PRODUCER`` (``"openmaas"``) as their producer.
"""

from __future__ import annotations

import math
import struct
import uuid
import zipfile
import zlib
from typing import Any, Literal

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from compute.services import watermark
from governance.labels import files
from governance.labels.explicit import DEFAULT_TEXT, classify_upload, has_explicit_label
from governance.labels.implicit import (
    LABEL_IS,
    LABEL_MAY,
    LABEL_SUSPECTED,
    Key,
    LabelError,
    label_problem,
    make_label,
    normalize,
    propagate,
    verify_label,
)
from governance.labels.text import canonical_text, text_sha256
from governance.models import Provenance
from governance.services import render
from portal.errors import NotFound, PlatformError
from portal.models.accounts import Membership, Role

Status = Literal["intact", "tampered", "unverifiable", "unlabelled"]
# What a malformed upload may raise from the label readers besides LabelError: zip CRC
# and structure errors, a corrupt compressed XMP chunk, truncated binary fields.
_UNREADABLE = (ValueError, zipfile.BadZipFile, zlib.error, struct.error, OSError, EOFError)
_VERDICT_LABEL = {"is": LABEL_IS, "may": LABEL_MAY, "suspected": LABEL_SUSPECTED}
_EXTENSIONS = {"markdown": "md", "text": "txt", "jpg": "jpeg"}


class UnreadableFile(PlatformError):
    code = "unreadable_file"


class LabelReadbackFailed(PlatformError):
    """The exported file's label did not read back and verify: never handed out."""

    status = 500
    code = "label_readback_failed"
    error_type = "server_error"


# --- labels ------------------------------------------------------------------------------


def producer() -> str:
    """The ``ContentProducer`` of the platform's labels (``GOVERNANCE_PRODUCER``)."""
    return str(getattr(settings, "GOVERNANCE_PRODUCER", "") or "openmaas")


def signing_key() -> Key:
    """``GOVERNANCE_LABEL_KEY``, else ``SECRET_KEY``."""
    return str(getattr(settings, "GOVERNANCE_LABEL_KEY", "") or settings.SECRET_KEY)


def label_for(content_id: str, text_sha256: str) -> dict[str, str]:
    """The signed implicit label of content ``content_id`` whose hash is ``text_sha256``
    (a text's fingerprint, or a file's content digest)."""
    return make_label(content_id, producer(), text_sha256, key=signing_key())


def new_content_id() -> str:
    """A fresh content id for an export (the gateway's are ``aigc-<request id>``)."""
    return f"aigc-export-{uuid.uuid4().hex}"


# --- exports -----------------------------------------------------------------------------


def exportable(user: Any) -> QuerySet[Provenance]:
    """Registry rows ``user`` may export: their own, their managed organisations' (owners
    and admins), every row for a superuser."""
    rows = Provenance.objects.all()
    if getattr(user, "is_superuser", False):
        return rows
    managed = Membership.objects.filter(user=user, role__in=Role.managers()).values(
        "organization_id"
    )
    return rows.filter(Q(user=user) | Q(org__in=managed))


def find_source(user: Any, *, content_id: str = "", text: str) -> Provenance:
    """The generated answer ``text`` of ``user``: by ``content_id`` (whose fingerprint must
    match ``text``), else the newest visible text row with the same fingerprint.

    Raises :class:`NotFound` for an id the user may not see or a text the platform did not
    generate for them, and a 400 ``text_mismatch`` when the text is not that answer.
    """
    fingerprint = text_sha256(text)
    rows = exportable(user)
    if content_id:
        row = rows.filter(content_id=content_id[:64]).first()
        if row is None:
            raise NotFound("No such generated content.", param="content_id")
        if row.text_sha256 != fingerprint:
            raise PlatformError(
                "The text is not the answer this content id names.",
                code="text_mismatch",
                param="text",
            )
        return row
    row = rows.filter(text_sha256=fingerprint, kind="text").order_by("-ts").first()
    if row is None:
        raise NotFound(
            "The platform did not generate this text for you; only generated answers are "
            "exported with an AI-generated-content label.",
            param="text",
        )
    return row


def export(
    user: Any,
    *,
    text: str,
    fmt: str,
    content_id: str = "",
    position: render.Position = "start",
) -> tuple[bytes, Provenance]:
    """Render the generated answer ``text`` (see :func:`find_source`) as ``fmt`` with the
    explicit label, embed the implicit one and register the file (:func:`register_export`)."""
    limit = int(getattr(settings, "GOVERNANCE_EXPORT_MAX_CHARS", 200_000))
    if len(text) > limit:
        raise PlatformError(f"The text is longer than {limit} characters.", param="text")
    source = find_source(user, content_id=content_id, text=text)
    meta = {"served_name": source.served_name, "generated_at": source.ts.isoformat()}
    font = render.font_path(str(getattr(settings, "GOVERNANCE_EXPORT_FONT", "")))
    try:
        # Without the notice the answer may already carry: the export adds its own.
        body = canonical_text(text)
        data = render.render(
            body, fmt, notice=DEFAULT_TEXT, position=position, meta=meta, font=font
        )
    except render.RenderError as exc:
        raise PlatformError(str(exc), code="cannot_render", param="format") from exc
    return register_export(user, source.content_id, data, fmt)


def register_export(
    user: Any, content_id: str | None, data: bytes, kind: str
) -> tuple[bytes, Provenance]:
    """Embed a fresh signed implicit label in the rendered file ``data`` of ``kind``, read
    it back, and register the file (``kind="file"``) as derived from the generated content
    ``content_id`` (which ``user`` must be allowed to export; None: not derived from one).

    Raises :class:`NotFound` for a content id the user may not see, a 400 for a file that
    is not of ``kind``, and :class:`LabelReadbackFailed` when the written label does not
    read back intact (the file is then not returned).
    """
    source = None
    if content_id is not None:
        source = exportable(user).filter(content_id=content_id[:64]).first()
        if source is None:
            raise NotFound("No such generated content.", param="content_id")
    name = _kind(kind)
    own_id = new_content_id()
    try:
        digest = files.content_digest(data, name)
        label = label_for(own_id, digest)
        labelled = files.embed(data, name, label)
    except LabelError as exc:
        raise UnreadableFile(f"Cannot label this {name} file: {exc}") from exc
    _check_readback(labelled, name, label, digest)
    row = Provenance.objects.create(
        content_id=own_id,
        ts=timezone.now(),
        kind="file",
        file_kind=name,
        served_name=source.served_name if source else "",
        request_id=source.request_id if source else "",
        user=user if getattr(user, "pk", None) else None,
        org=source.org if source else None,
        text_sha256=source.text_sha256 if source else "",
        content_sha256=digest,
        label=label,
    )
    return labelled, row


def _check_readback(data: bytes, kind: str, label: dict[str, str], digest: str) -> None:
    try:
        found = files.read(data, kind)
        digest_now = files.content_digest(data, kind)
    except LabelError as exc:
        raise LabelReadbackFailed(f"The exported {kind} file does not read back: {exc}") from exc
    if found != label or digest_now != digest:
        raise LabelReadbackFailed(f"The label of the exported {kind} file did not read back.")
    if not verify_label(found, digest_now, signing_key()):
        raise LabelReadbackFailed(f"The label of the exported {kind} file does not verify.")


# --- verification ------------------------------------------------------------------------


def verify_text(text: str, user: Any = None) -> dict[str, Any]:
    """Whether the platform generated ``text`` (with or without its explicit label): the
    first generation with its fingerprint, and whether the registry's label still verifies.

    ``watermark``: for a text the registry has, whether that generation was watermarked
    (``applied``); for one it has not (edited, say), the detector's answer against the
    watermarked deployments ``user`` may see (:func:`watermark_answer`), or None when
    there are none.
    """
    row = _generated_text(text)
    answer = _answer("text", row)
    answer.update(text_sha256=text_sha256(text), explicit_label=has_explicit_label(text))
    answer["watermark"] = _applied(row) if row is not None else watermark_answer(user, text)
    return answer


def _applied(row: Provenance) -> dict[str, Any]:
    """The watermark part of an answer for a registry row: whether it was planted."""
    detail = (
        "This generation was watermarked."
        if row.watermarked
        else "This generation was not watermarked (or was generated before it was recorded)."
    )
    return {**_NO_TEST, "applied": row.watermarked, "detail": detail}


_NO_TEST: dict[str, Any] = {
    "applied": None,
    "detected": None,
    "z_score": None,
    "p_value": None,
    "tokens_scored": None,
    "green_fraction": None,
    "threshold": None,
    "deployment": None,
    "model": None,
    "detail": "",
}


def watermark_answer(user: Any, text: str) -> dict[str, Any] | None:
    """The green-list watermark detector on ``text`` (its explicit label left out) against
    the watermarked deployments ``user`` may see (``GOVERNANCE_WATERMARK_DEPLOYMENTS``,
    newest first); None when there are none.

    ``detected`` only when the best z-score reaches ``GOVERNANCE_WATERMARK_Z`` over at
    least ``GOVERNANCE_WATERMARK_MIN_TOKENS`` scored tokens; ``deployment`` and ``model``
    are named only then. ``p_value`` is the one-sided normal tail of ``z`` for one key:
    with several deployments tried, the chance that some key matches unmarked text is at
    most that many times higher.
    """
    detections = watermark.detect(
        user,
        canonical_text(text),
        limit=settings.GOVERNANCE_WATERMARK_DEPLOYMENTS,
        max_tokens=settings.GOVERNANCE_WATERMARK_MAX_TOKENS,
    )
    if not detections:
        return None
    best = detections[0]
    z, scored = best.score.z_score, best.score.tokens_scored
    threshold = settings.GOVERNANCE_WATERMARK_Z
    minimum = settings.GOVERNANCE_WATERMARK_MIN_TOKENS
    detected = z >= threshold and scored >= minimum
    answer = {
        **_NO_TEST,
        "detected": detected,
        "z_score": round(z, 3),
        "p_value": 0.5 * math.erfc(z / math.sqrt(2)),
        "tokens_scored": scored,
        "green_fraction": round(best.score.green_fraction, 4),
        "threshold": threshold,
    }
    if detected:
        answer.update(deployment=best.deployment.served_name, model=best.model)
        answer["detail"] = (
            f"The text carries the watermark of {best.deployment.served_name}: "
            f"z = {z:.2f} over {scored} tokens (threshold {threshold:g})."
        )
    elif scored < minimum:
        answer["detail"] = f"Too short to test: {scored} tokens scored, {minimum} needed."
    else:
        answer["detail"] = (
            f"No watermark found (best z = {z:.2f} over {scored} tokens, threshold "
            f"{threshold:g}); this does not show the text is human-written."
        )
    return answer


def _generated_text(text: str) -> Provenance | None:
    """The first registry row of ``text``'s fingerprint (a generation before an export)."""
    rows = Provenance.objects.filter(text_sha256=text_sha256(text))
    return rows.filter(kind="text").order_by("ts").first() or rows.order_by("ts").first()


def verify_id(content_id: str) -> dict[str, Any]:
    """What the registry knows of ``content_id``, and whether its label still verifies."""
    row = Provenance.objects.filter(content_id=content_id[:64]).first()
    answer = _answer("content_id", row)
    if row is not None:
        answer["text_sha256"] = row.text_sha256 or None
        if row.kind == "text":
            answer["watermark"] = _applied(row)
    return answer


def verify_file(data: bytes, kind: str, user: Any = None) -> dict[str, Any]:
    """Read the implicit label of a file and verify it against the file's content.

    ``status``: ``intact`` (our signature matches the content), ``tampered`` with
    ``reason`` ``content_changed`` (the label is ours and intact, the content is not what
    was labelled), ``label_changed`` (the content is what we exported, the label was
    edited), ``content_or_label_changed`` (neither matches the registry) or ``malformed``;
    ``unverifiable`` (``unknown_producer``: another producer's label), ``unlabelled``.
    A plain text or Markdown file without a label whose text the registry does not know
    either goes through the watermark detector, as :func:`verify_text` does.
    Raises :class:`UnreadableFile` (400) for a file that is not of ``kind``.
    """
    name = _kind(kind)
    try:
        label = files.read(data, name)
        digest = files.content_digest(data, name)
    except _UNREADABLE as exc:
        raise UnreadableFile(f"Not a readable {name} file: {exc}") from exc
    status, reason, detail, row = _judge(label, digest)
    text = data.decode("utf-8", errors="replace") if name in ("txt", "md") else None
    if row is None and label is None and text is not None:
        row = _generated_text(text)
    answer = _answer("file", row)
    if row is None and label is None and text is not None:
        answer["watermark"] = watermark_answer(user, text)
    verdict, why = classify_upload(data, name, signing_key(), producer=producer())
    answer.update(
        status=status,
        reason=reason,
        detail=detail,
        label=label,
        file_kind=name,
        content_sha256=digest,
        classification={"verdict": verdict, "reason": why},
    )
    return answer


def _judge(label: dict[str, Any] | None, digest: str) -> tuple[Status, str, str, Provenance | None]:
    """(status, reason, detail, the registry row the file is) for a label read from a file
    whose content digest is ``digest``."""
    same_content = Provenance.objects.filter(content_sha256=digest).order_by("ts").first()
    if label is None:
        return "unlabelled", "no_label", "The file carries no implicit AIGC label.", same_content
    problem = label_problem(label)
    if problem:
        return "tampered", "malformed", problem, same_content
    if label["ContentProducer"] != producer():
        if same_content is not None:
            detail = f"The content is ours but the label names {label['ContentProducer']!r}."
            return "tampered", "label_changed", detail, same_content
        detail = f"A label of {label['ContentProducer']!r}, which this platform cannot verify."
        return "unverifiable", "unknown_producer", detail, None
    named = Provenance.objects.filter(content_id=str(label["ProduceID"])[:64]).first()
    check = verify_label(label, digest, signing_key())
    if check.valid:
        return "intact", "", "The label is ours and matches the content.", named
    if named is not None and verify_label(label, named.content_sha256 or "", signing_key()):
        detail = "The label is intact but the content is not what was labelled."
        return "tampered", "content_changed", detail, named
    if same_content is not None:
        detail = f"The content is ours but the label was edited ({check.reason})."
        return "tampered", "label_changed", detail, same_content
    detail = f"Neither the content nor the label matches what was issued ({check.reason})."
    return "tampered", "content_or_label_changed", detail, named


def _answer(given: str, row: Provenance | None) -> dict[str, Any]:
    """The common verify answer; only the served name and times of a row, never its user."""
    answer: dict[str, Any] = {
        "input": given,
        "found": row is not None,
        "content_id": None,
        "kind": None,
        "file_kind": None,
        "generated_at": None,
        "served_name": None,
        "text_sha256": None,
        "content_sha256": None,
        "explicit_label": None,
        "label": None,
        "status": None,
        "reason": "",
        "detail": "",
        "classification": None,
        "watermark": None,
    }
    if row is None:
        answer["detail"] = "The platform's registry has no such content."
        return answer
    registry_intact = _registry_label_intact(row)
    answer.update(
        content_id=row.content_id,
        kind=row.kind,
        file_kind=row.file_kind or None,
        generated_at=row.ts,
        served_name=row.served_name,
        content_sha256=row.content_sha256 or None,
        label=normalize(row.label) if row.label else None,
        status="intact" if registry_intact else "tampered",
        reason="" if registry_intact else "registry_label_invalid",
    )
    return answer


def _registry_label_intact(row: Provenance) -> bool:
    """Whether the label the registry holds still verifies for the row's own hash."""
    digest = row.content_sha256 if row.kind == "file" else row.text_sha256
    return bool(row.label) and bool(digest) and verify_label(row.label, digest, signing_key()).valid


# --- uploads -----------------------------------------------------------------------------


def check_upload(data: bytes, kind: str) -> dict[str, Any]:
    """Classify an uploaded file (``is`` / ``may`` / ``suspected`` / ``none``, GB 45438's
    属于 / 可能 / 疑似) and, where it carries a well-formed label, that label with our
    propagation fields written (``ContentPropagator``, ``PropagateID``, ``ReservedCode2``
    signed) and ``Label`` set to the verdict."""
    name = _kind(kind)
    try:
        label = files.read(data, name)
        files.content_digest(data, name)  # classify_upload hashes too: fail here, not there
    except _UNREADABLE as exc:
        raise UnreadableFile(f"Not a readable {name} file: {exc}") from exc
    verdict, reason = classify_upload(data, name, signing_key(), producer=producer())
    propagated = None
    propagate_id = None
    if label is not None and not label_problem(label):
        propagate_id = f"prop-{uuid.uuid4().hex}"
        label = {**label, "Label": _VERDICT_LABEL.get(verdict, label["Label"])}
        propagated = propagate(label, producer(), propagate_id, key=signing_key())
    return {
        "kind": name,
        "verdict": verdict,
        "reason": reason,
        "label": propagated,
        "propagate_id": propagate_id,
    }


def guess_kind(filename: str, data: bytes) -> str:
    """The file kind from the name's extension, else from the first bytes."""
    extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    extension = _EXTENSIONS.get(extension, extension)
    if extension in files.KINDS:
        return extension
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8"):
        return "jpeg"
    if data.startswith(b"%PDF"):
        return "pdf"
    if data.startswith(b"PK"):
        return "docx"
    if data.lstrip()[:1] == b"{":
        return "json"
    return "md" if data.startswith(b"---\n") else "txt"


def _kind(kind: str) -> str:
    try:
        return files.normalize_kind(kind)
    except LabelError as exc:
        raise PlatformError(str(exc), code="unsupported_kind", param="kind") from exc
