"""``POST /api/governance/verify`` and ``uploads/check``: generated texts are recognised
with and without their explicit label, exported files of every kind verify intact, and
an edited byte of content or an edited label is reported as tampering."""

from __future__ import annotations

import io
import itertools
import json
import struct
import uuid
import zipfile
import zlib
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from governance.labels import files
from governance.labels.explicit import add_explicit_label
from governance.labels.implicit import make_label, verify_label, verify_propagation
from governance.labels.text import text_sha256
from governance.models import Provenance
from governance.services import provenance, render
from tests.governance.label_samples import sample

URL = "/api/governance/verify"
ANSWER = "长江是中国最长的河流，全长约6300公里。\nIt flows into the East China Sea."
SERVED = "qwen/chat-7b"
_addresses = (f"10.9.{n // 250}.{n % 250 + 1}" for n in itertools.count())


def generated(user: Any, text: str = ANSWER, *, org: Any = None) -> Provenance:
    """The registry row the gateway's events drain writes for an answer it generated."""
    request_id = uuid.uuid4().hex
    content_id = f"aigc-{request_id}"
    fingerprint = text_sha256(text)
    return Provenance.objects.create(
        content_id=content_id,
        ts=timezone.now(),
        kind="text",
        served_name=SERVED,
        request_id=request_id,
        user=user,
        org=org,
        text_sha256=fingerprint,
        label=provenance.label_for(content_id, fingerprint),
    )


def stranger() -> APIClient:
    """An anonymous client from an address of its own (the anonymous throttle counts per
    address, across tests)."""
    return APIClient(REMOTE_ADDR=next(_addresses))


def verify_upload(client: APIClient, data: bytes, kind: str) -> dict[str, Any]:
    upload = io.BytesIO(data)
    upload.name = f"upload.{kind}"
    response = client.post(URL, {"file": upload, "kind": kind}, format="multipart")
    assert response.status_code == 200, response.content
    return dict(response.json())


def exported(user: Any, fmt: str, text: str = ANSWER) -> tuple[bytes, Provenance]:
    return provenance.export(user, text=text, fmt=fmt)


# --- texts and content ids ---------------------------------------------------------------


def test_generated_text_is_recognised_with_and_without_its_explicit_label(owner: Any) -> None:
    # given an answer the gateway generated and registered
    row = generated(owner.user)
    for pasted in (ANSWER, add_explicit_label(ANSWER), add_explicit_label(ANSWER, position="end")):
        # when anyone pastes it, with or without the label, with other line ends
        body = stranger().post(URL, {"text": pasted.replace("\n", "\r\n")}, format="json").json()
        # then the platform says it generated it, when and with which model
        assert body["found"] and body["content_id"] == row.content_id
        assert body["served_name"] == SERVED and body["generated_at"]
        assert body["status"] == "intact" and body["kind"] == "text"
        assert body["explicit_label"] is (pasted != ANSWER)


def test_unknown_text_is_not_found(db: Any) -> None:
    body = stranger().post(URL, {"text": "一段平台从未生成过的文字。"}, format="json").json()
    assert body["found"] is False and body["content_id"] is None and body["status"] is None


def test_answers_never_name_who_asked_for_the_content(owner: Any) -> None:
    row = generated(owner.user)
    for query in ({"text": ANSWER}, {"content_id": row.content_id}):
        body = stranger().post(URL, query, format="json").json()
        assert body["found"]
        assert "olivia" not in json.dumps(body)
        assert not {"user", "org", "request_id", "key"} & set(body)


def test_content_id_is_looked_up(owner: Any) -> None:
    row = generated(owner.user)
    body = stranger().post(URL, {"content_id": row.content_id}, format="json").json()
    assert body["found"] and body["status"] == "intact" and body["served_name"] == SERVED
    missing = stranger().post(URL, {"content_id": "aigc-nothing"}, format="json").json()
    assert missing["found"] is False


def test_a_registry_label_that_no_longer_verifies_is_reported(owner: Any) -> None:
    row = generated(owner.user)
    Provenance.objects.filter(pk=row.pk).update(label={**row.label, "ProduceID": "aigc-other"})
    body = stranger().post(URL, {"content_id": row.content_id}, format="json").json()
    assert body["status"] == "tampered" and body["reason"] == "registry_label_invalid"


@pytest.mark.parametrize(
    "body",
    [{}, {"text": "a", "content_id": "aigc-x"}, {"content_id": "bad id\x00"}, {"text": None}],
)
def test_malformed_queries_are_400(db: Any, body: dict[str, Any]) -> None:
    assert stranger().post(URL, body, format="json").status_code == 400


# --- files -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", render.FORMATS)
def test_exported_file_reads_back_and_verifies_intact(owner: Any, fmt: str) -> None:
    # given an answer exported as a file
    generated(owner.user)
    data, row = exported(owner.user, fmt)
    # then its label reads back as issued
    assert files.read(data, fmt) == row.label
    # and /verify (anonymous) says it is ours, intact, and which answer it is
    body = verify_upload(stranger(), data, fmt)
    assert body["status"] == "intact", body
    assert body["found"] and body["content_id"] == row.content_id
    assert body["served_name"] == SERVED and body["label"] == row.label
    assert body["classification"]["verdict"] == "is"


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def _png_idat_flipped(data: bytes) -> bytes:
    """One byte of the first IDAT chunk's data changed (its CRC fixed, so the file still
    parses): the pixels changed, the label untouched."""
    at = data.index(b"IDAT")
    length = struct.unpack(">I", data[at - 4 : at])[0]
    body = bytearray(data[at + 4 : at + 4 + length])
    body[len(body) // 2] ^= 0x01
    crc = struct.pack(">I", zlib.crc32(b"IDAT" + bytes(body)))
    return data[: at + 4] + bytes(body) + crc + data[at + 8 + length :]


def _docx_char_changed(data: bytes) -> bytes:
    """The document's text with one character changed, the package rewritten."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            part = source.read(info)
            if info.filename == "word/document.xml":
                part = part.replace("长江".encode(), "黄河".encode(), 1)
            target.writestr(info, part)
    return out.getvalue()


def _one_byte_changed(data: bytes, fmt: str) -> bytes:
    if fmt in ("txt", "md", "json"):
        return _flip(data, data.index(b"6300"))  # 6300 → 7300
    if fmt == "pdf":
        return _flip(data, data.index(b"<957F6C5F") + 4)  # 长 (U+957F) → U+967F
    if fmt == "png":
        return _png_idat_flipped(data)
    return _docx_char_changed(data)


@pytest.mark.parametrize("fmt", render.FORMATS)
def test_one_byte_of_content_changed_is_tampering(owner: Any, fmt: str) -> None:
    generated(owner.user)
    data, row = exported(owner.user, fmt)
    # when one byte of the content is changed (the label left alone)
    edited = _one_byte_changed(data, fmt)
    assert files.read(edited, fmt) == row.label
    body = verify_upload(stranger(), edited, fmt)
    # then /verify says the content changed, and names the export it came from
    assert (body["status"], body["reason"]) == ("tampered", "content_changed"), body
    assert body["content_id"] == row.content_id
    assert body["classification"]["verdict"] == "suspected"


@pytest.mark.parametrize("fmt", render.FORMATS)
def test_edited_produce_id_is_tampering(owner: Any, fmt: str) -> None:
    generated(owner.user)
    data, row = exported(owner.user, fmt)
    # when the label's ProduceID is changed (the content left alone)
    edited = files.embed(data, fmt, {**row.label, "ProduceID": "aigc-someone-else"})
    body = verify_upload(stranger(), edited, fmt)
    # then /verify says the label changed, and which export the content really is
    assert (body["status"], body["reason"]) == ("tampered", "label_changed"), body
    assert body["content_id"] == row.content_id


def test_edited_producer_of_our_content_is_tampering(owner: Any) -> None:
    generated(owner.user)
    data, row = exported(owner.user, "md")
    edited = files.embed(data, "md", {**row.label, "ContentProducer": "someone-else"})
    body = verify_upload(stranger(), edited, "md")
    assert (body["status"], body["reason"]) == ("tampered", "label_changed")


def test_another_producers_label_is_unverifiable(db: Any) -> None:
    # given a file labelled by another platform with its own key
    data = sample("txt")
    label = make_label(
        "elsewhere-1", "other-platform", files.content_digest(data, "txt"), key=b"their-key"
    )
    body = verify_upload(stranger(), files.embed(data, "txt", label), "txt")
    assert (body["status"], body["reason"]) == ("unverifiable", "unknown_producer")
    assert body["found"] is False and body["classification"]["verdict"] == "may"


def test_unlabelled_file_is_reported_as_such(db: Any) -> None:
    body = verify_upload(stranger(), sample("png"), "png")
    assert body["status"] == "unlabelled" and body["found"] is False


def test_unlabelled_text_file_holding_a_generated_answer_is_found(owner: Any) -> None:
    row = generated(owner.user)
    body = verify_upload(stranger(), add_explicit_label(ANSWER).encode(), "txt")
    assert body["status"] == "unlabelled" and body["found"] and body["content_id"] == row.content_id
    assert body["classification"]["verdict"] == "suspected"


def test_file_kind_is_taken_from_its_name(owner: Any) -> None:
    generated(owner.user)
    data, _ = exported(owner.user, "docx")
    upload = io.BytesIO(data)
    upload.name = "answer.docx"
    body = stranger().post(URL, {"file": upload}, format="multipart").json()
    assert body["status"] == "intact" and body["file_kind"] == "docx"


@pytest.mark.parametrize("kind", ["docx", "pdf", "png", "json"])
def test_unreadable_file_is_400_not_500(db: Any, kind: str) -> None:
    upload = io.BytesIO(b"PK\x03\x04 not really a file of this kind")
    upload.name = f"x.{kind}"
    response = stranger().post(URL, {"file": upload, "kind": kind}, format="multipart")
    assert response.status_code == 400 and response.json()["code"] == "unreadable_file"


def test_corrupt_zip_member_is_400_not_500(owner: Any) -> None:
    generated(owner.user)
    data, _ = exported(owner.user, "docx")
    at = data.index(b"word/document.xml") + 40  # inside that member's compressed bytes
    upload = io.BytesIO(_flip(data, at))
    upload.name = "x.docx"
    response = stranger().post(URL, {"file": upload}, format="multipart")
    assert response.status_code == 400, response.content


@override_settings(GOVERNANCE_UPLOAD_MAX_BYTES=1000)
def test_upload_past_the_limit_is_413(db: Any) -> None:
    upload = io.BytesIO(b"x" * 2000)
    upload.name = "big.txt"
    response = stranger().post(URL, {"file": upload}, format="multipart")
    assert response.status_code == 413 and response.json()["code"] == "request_too_large"


@override_settings(GOVERNANCE_VERIFY_ANON_RATE="2/min")
def test_anonymous_verify_is_throttled(owner: Any) -> None:
    client = stranger()
    statuses = [client.post(URL, {"text": "x"}, format="json").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    # a signed-in caller is counted apart, per user
    assert owner.client().post(URL, {"text": "x"}, format="json").status_code == 200


# --- the upload check ----------------------------------------------------------------------


def test_upload_check_writes_the_propagation_fields(owner: Any) -> None:
    # given an exported file uploaded somewhere on the platform
    generated(owner.user)
    data, row = exported(owner.user, "pdf")
    upload = io.BytesIO(data)
    upload.name = "shared.pdf"
    response = owner.client().post("/api/governance/uploads/check", {"file": upload})
    assert response.status_code == 200, response.content
    body = response.json()
    # then it is AI-generated, and the label carries our propagation fields, signed
    assert body["verdict"] == "is" and body["kind"] == "pdf"
    label = body["label"]
    assert label["ContentPropagator"] == provenance.producer()
    assert label["PropagateID"] == body["propagate_id"]
    assert verify_propagation(label, provenance.signing_key())
    # and the producer's signature still verifies against the file's content
    assert verify_label(label, row.content_sha256, provenance.signing_key())


def test_upload_check_of_a_file_with_only_an_explicit_notice_is_suspected(owner: Any) -> None:
    upload = io.BytesIO(add_explicit_label("一段文字。").encode())
    upload.name = "note.txt"
    body = owner.client().post("/api/governance/uploads/check", {"file": upload}).json()
    assert body["verdict"] == "suspected" and body["label"] is None


def test_upload_check_needs_a_signed_in_user(db: Any) -> None:
    upload = io.BytesIO(b"text")
    upload.name = "note.txt"
    response = stranger().post("/api/governance/uploads/check", {"file": upload})
    assert response.status_code in (401, 403)
