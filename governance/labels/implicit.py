"""The implicit AIGC label of GB 45438-2025: one ``AIGC`` JSON object in a file's metadata.

The object's fields come in the standard's order (:data:`FIELDS`):

``Label``
    ``"1"`` is AI-generated, ``"2"`` possibly, ``"3"`` suspected.
``ContentProducer``
    the provider's name or code (the platform's, for content it generates).
``ProduceID``
    the content's id at the producer.
``ReservedCode1``
    the producer's integrity data. Ours is ``"hmac-sha256:"`` followed by the unpadded
    base64url HMAC-SHA256 of :func:`signing_payload` (producer, content id, content SHA-256)
    under the platform's key (``GOVERNANCE_LABEL_KEY``, else ``SECRET_KEY``; the caller
    passes it in, this module imports no Django).
``ContentPropagator`` / ``PropagateID``
    written by a platform that distributes the content (:func:`propagate`).
``ReservedCode2``
    the propagator's integrity data; :func:`propagate` with a key signs the propagation
    fields there, bound to the producer's signature.

The producer's signature covers neither ``Label`` nor the propagation fields: a
distributing platform fills those in without breaking it. ``Label`` is checked to be one
of the three values instead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

FIELDS: tuple[str, ...] = (
    "Label",
    "ContentProducer",
    "ProduceID",
    "ReservedCode1",
    "ContentPropagator",
    "PropagateID",
    "ReservedCode2",
)
LABEL_IS = "1"
LABEL_MAY = "2"
LABEL_SUSPECTED = "3"
LABEL_VALUES: tuple[str, ...] = (LABEL_IS, LABEL_MAY, LABEL_SUSPECTED)
SIGNATURE_PREFIX = "hmac-sha256:"
_PAYLOAD_TAG = "openmaas-aigc-v1"
_PROPAGATION_TAG = "openmaas-aigc-propagation-v1"

Key = bytes | str


class LabelError(ValueError):
    """A label that cannot be built, embedded or read back as asked."""


@dataclass(frozen=True)
class LabelCheck:
    """The outcome of :func:`verify_label`; ``reason`` says why it failed (empty when valid)."""

    valid: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.valid


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of ``data`` (the form ``content_sha256`` takes everywhere here)."""
    return hashlib.sha256(data).hexdigest()


def signing_payload(producer: str, content_id: str, content_sha256: str) -> bytes:
    """The canonical bytes the producer signs: producer | content id | content hash.

    A compact JSON array rather than ``"|".join`` so that a ``|`` inside a field cannot
    shift the boundaries; the tag makes a signature useless for any other purpose.
    """
    fields = [_PAYLOAD_TAG, producer, content_id, content_sha256.lower()]
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()


def sign(payload: bytes, key: Key) -> str:
    """``hmac-sha256:`` + unpadded base64url of HMAC-SHA256(key, payload)."""
    mac = hmac.new(_key_bytes(key), payload, hashlib.sha256).digest()
    return SIGNATURE_PREFIX + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def make_label(
    content_id: str,
    producer: str,
    content_sha256: str,
    *,
    key: Key,
    label: str = LABEL_IS,
) -> dict[str, str]:
    """The ``AIGC`` object for content the platform produced, signed with ``key``.

    ``content_sha256`` is the hex digest of the content without its label (for files,
    :func:`governance.labels.files.content_digest`). Raises :class:`LabelError` on an
    unknown ``label`` value, an empty producer/content id or a malformed digest.
    """
    _check_label_value(label)
    if not producer or not content_id:
        raise LabelError("producer and content_id must not be empty")
    _check_digest(content_sha256)
    signature = sign(signing_payload(producer, content_id, content_sha256), key)
    return {
        "Label": label,
        "ContentProducer": producer,
        "ProduceID": content_id,
        "ReservedCode1": signature,
        "ContentPropagator": "",
        "PropagateID": "",
        "ReservedCode2": "",
    }


def verify_label(label: dict[str, Any], content_sha256: str, key: Key) -> LabelCheck:
    """Whether ``label`` was signed with ``key`` for content whose digest is ``content_sha256``.

    Invalid when the label is malformed, has no signature, or its signature does not match
    (the content, the producer or the content id changed, or another key signed it).
    """
    problem = label_problem(label)
    if problem:
        return LabelCheck(False, problem)
    signature = label["ReservedCode1"]
    if not signature:
        return LabelCheck(False, "the label carries no signature (ReservedCode1 is empty)")
    if not signature.startswith(SIGNATURE_PREFIX):
        return LabelCheck(False, "ReservedCode1 is not an hmac-sha256 signature")
    try:
        _check_digest(content_sha256)
    except LabelError as exc:
        return LabelCheck(False, str(exc))
    payload = signing_payload(label["ContentProducer"], label["ProduceID"], content_sha256)
    if not hmac.compare_digest(sign(payload, key), signature):
        return LabelCheck(
            False, "the signature does not match the content or the label's producer/id"
        )
    return LabelCheck(True)


def label_problem(label: Any) -> str:
    """Why ``label`` is not a well-formed ``AIGC`` object, or ``""`` when it is."""
    if not isinstance(label, dict):
        return "the AIGC label is not an object"
    missing = [name for name in FIELDS if name not in label]
    if missing:
        return f"the AIGC label lacks {', '.join(missing)}"
    if not all(isinstance(label[name], str) for name in FIELDS):
        return "every AIGC field must be a string"
    if label["Label"] not in LABEL_VALUES:
        return f"Label must be one of {', '.join(LABEL_VALUES)}, not {label['Label']!r}"
    if not label["ContentProducer"]:
        return "the AIGC label names no ContentProducer"
    return ""


def normalize(label: dict[str, Any]) -> dict[str, str]:
    """The label's fields in the standard's order (unknown extra fields are kept after)."""
    ordered = {name: label[name] for name in FIELDS if name in label}
    ordered.update({k: v for k, v in label.items() if k not in ordered})
    return ordered


def to_json(label: dict[str, Any]) -> str:
    """The standard's serialisation: ``{"AIGC": {...}}`` with fields in order, on one line."""
    return json.dumps({"AIGC": normalize(label)}, ensure_ascii=False)


def header_value(label: dict[str, Any]) -> str:
    """The label for an HTTP response header: ``{"AIGC": {...}}`` as compact ASCII JSON.

    Headers carry Latin-1 at best, so non-ASCII producer names are ``\\u``-escaped;
    :func:`from_json` reads it back.
    """
    return json.dumps({"AIGC": normalize(label)}, separators=(",", ":"))


def fields_json(label: dict[str, Any]) -> str:
    """The ``AIGC`` object alone, fields in order: the value of a metadata property named AIGC."""
    return json.dumps(normalize(label), ensure_ascii=False)


def from_json(text: str) -> dict[str, Any] | None:
    """The ``AIGC`` object inside ``text`` (``{"AIGC": {...}}`` or the bare object), or None."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, dict) and isinstance(value.get("AIGC"), dict):
        return dict(value["AIGC"])
    if isinstance(value, dict) and "Label" in value:
        return value
    return None


def propagate(
    label: dict[str, Any],
    propagator: str,
    propagate_id: str,
    *,
    key: Key | None = None,
) -> dict[str, str]:
    """A copy of ``label`` with the distributing platform's fields filled in.

    The producer's fields and ``ReservedCode1`` are untouched, so the producer's signature
    still verifies. With ``key``, ``ReservedCode2`` gets our HMAC over the propagation
    fields bound to the producer's signature (see :func:`verify_propagation`).
    """
    problem = label_problem(label)
    if problem:
        raise LabelError(problem)
    if not propagator or not propagate_id:
        raise LabelError("propagator and propagate_id must not be empty")
    result = normalize(label)
    result["ContentPropagator"] = propagator
    result["PropagateID"] = propagate_id
    result["ReservedCode2"] = sign(_propagation_payload(result), key) if key is not None else ""
    return result


def verify_propagation(label: dict[str, Any], key: Key) -> LabelCheck:
    """Whether ``ReservedCode2`` is our signature over the label's propagation fields."""
    problem = label_problem(label)
    if problem:
        return LabelCheck(False, problem)
    if not label["ReservedCode2"]:
        return LabelCheck(False, "the label carries no propagation signature")
    if not hmac.compare_digest(sign(_propagation_payload(label), key), label["ReservedCode2"]):
        return LabelCheck(False, "the propagation signature does not match")
    return LabelCheck(True)


def _propagation_payload(label: dict[str, Any]) -> bytes:
    fields = [
        _PROPAGATION_TAG,
        label["ContentPropagator"],
        label["PropagateID"],
        label["ContentProducer"],
        label["ProduceID"],
        label["ReservedCode1"],
    ]
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()


def _key_bytes(key: Key) -> bytes:
    raw = key.encode() if isinstance(key, str) else bytes(key)
    if not raw:
        raise LabelError("the label key must not be empty")
    return raw


def _check_label_value(value: str) -> None:
    if value not in LABEL_VALUES:
        raise LabelError(f"Label must be one of {', '.join(LABEL_VALUES)}, not {value!r}")


def _check_digest(content_sha256: str) -> None:
    if len(content_sha256) != 64 or any(c not in "0123456789abcdefABCDEF" for c in content_sha256):
        raise LabelError("content_sha256 must be a hex SHA-256 digest")
