"""``POST /api/governance/exports``: a generated answer as md, txt, json, docx, pdf or png
with the explicit label visible and the implicit label embedded, read back and
registered; only the answer's user (or their organisation's managers) may export it."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from pypdf import PdfReader

from governance.labels import files
from governance.labels.explicit import DEFAULT_TEXT, add_explicit_label, has_explicit_label
from governance.labels.implicit import from_json, verify_label
from governance.models import Provenance
from governance.services import provenance, render
from tests.governance.test_verify import ANSWER, SERVED, generated

URL = "/api/governance/exports"


def visible_text(data: bytes, fmt: str) -> str:
    """The text a reader of the exported file sees (not for png: that is pixels)."""
    if fmt in ("txt", "md"):
        return data.decode()
    if fmt == "json":
        document = json.loads(data)
        return f"{document['notice']}\n{document['content']}"
    if fmt == "pdf":
        return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)
    from governance.labels.explicit import _docx_text

    return _docx_text(data)


@pytest.mark.parametrize("fmt", render.FORMATS)
def test_answer_exports_with_both_labels_read_back_and_registered(owner: Any, fmt: str) -> None:
    # given an answer the gateway generated for olivia
    source = generated(owner.user)
    # when she exports it by content id
    response = owner.client().post(
        URL, {"content_id": source.content_id, "text": ANSWER, "format": fmt}, format="json"
    )
    # then she gets a file of that format as an attachment
    assert response.status_code == 200, response.content
    assert response["Content-Type"].split(";")[0] == render.MEDIA_TYPES[fmt].split(";")[0]
    content_id = response["x-aigc-content-id"]
    assert f'filename="{content_id}.{fmt}"' in response["Content-Disposition"]
    data = response.content
    # whose implicit label reads back, verifies and matches the header
    label = files.read(data, fmt)
    assert label is not None and label["ProduceID"] == content_id
    assert label == from_json(response["x-aigc-label"])
    assert verify_label(label, files.content_digest(data, fmt), provenance.signing_key())
    # and which is registered as a file derived from the answer
    row = Provenance.objects.get(content_id=content_id)
    assert (row.kind, row.file_kind, row.user_id) == ("file", fmt, owner.user.pk)
    assert row.served_name == SERVED and row.text_sha256 == source.text_sha256
    assert row.label == label and row.content_sha256 == files.content_digest(data, fmt)
    # and whose visible text carries the explicit label and the answer
    if fmt != "png":
        shown = visible_text(data, fmt)
        assert has_explicit_label(shown) and DEFAULT_TEXT in shown
        assert "6300" in shown


def test_export_by_text_alone_finds_the_answer(owner: Any) -> None:
    source = generated(owner.user)
    response = owner.client().post(URL, {"text": ANSWER, "format": "txt"}, format="json")
    assert response.status_code == 200, response.content
    row = Provenance.objects.get(content_id=response["x-aigc-content-id"])
    assert row.text_sha256 == source.text_sha256 and row.request_id == source.request_id


def test_answer_that_carries_its_notice_gets_it_once(owner: Any) -> None:
    generated(owner.user)
    body = {"text": add_explicit_label(ANSWER), "format": "md"}
    data = owner.client().post(URL, body, format="json").content
    assert data.decode().count(DEFAULT_TEXT) == 1


def test_explicit_label_goes_at_the_end_when_asked(owner: Any) -> None:
    generated(owner.user)
    body = {"text": ANSWER, "format": "txt", "explicit": "end"}
    data = owner.client().post(URL, body, format="json").content
    lines = data.decode().splitlines()
    assert lines[0].startswith("长江") and lines[-2] == DEFAULT_TEXT
    assert lines[-1].startswith('{"AIGC"')


def test_outsider_cannot_export_another_users_content_id(owner: Any, outsider: Any) -> None:
    source = generated(owner.user)
    body = {"content_id": source.content_id, "text": ANSWER, "format": "md"}
    response = outsider.client().post(URL, body, format="json")
    assert response.status_code == 404
    # nor find it by its text
    response = outsider.client().post(URL, {"text": ANSWER, "format": "md"}, format="json")
    assert response.status_code == 404
    assert not Provenance.objects.filter(kind="file").exists()


def test_org_owner_may_export_an_answer_generated_for_the_org(
    owner: Any, org: Any, teammate: Any
) -> None:
    source = generated(teammate.user, org=org)
    body = {"content_id": source.content_id, "text": ANSWER, "format": "pdf"}
    assert owner.client().post(URL, body, format="json").status_code == 200


def test_text_that_is_not_the_answer_is_400(owner: Any) -> None:
    source = generated(owner.user)
    body = {"content_id": source.content_id, "text": "另一段文字", "format": "txt"}
    response = owner.client().post(URL, body, format="json")
    assert response.status_code == 400 and response.json()["code"] == "text_mismatch"


def test_text_the_platform_never_generated_is_not_exported(owner: Any) -> None:
    response = owner.client().post(URL, {"text": "我自己写的文字", "format": "txt"}, format="json")
    assert response.status_code == 404


def test_answer_too_long_for_an_image_is_400(owner: Any) -> None:
    long_answer = "\n".join(f"第{n}行" for n in range(render.PNG_MAX_LINES + 10))
    generated(owner.user, long_answer)
    body = {"text": long_answer, "format": "png"}
    response = owner.client().post(URL, body, format="json")
    assert response.status_code == 400 and response.json()["code"] == "cannot_render"


def test_anonymous_callers_cannot_export(anon: Any) -> None:
    response = anon.post(URL, {"text": ANSWER, "format": "txt"}, format="json")
    assert response.status_code in (401, 403)


def test_unknown_format_is_400(owner: Any) -> None:
    generated(owner.user)
    response = owner.client().post(URL, {"text": ANSWER, "format": "exe"}, format="json")
    assert response.status_code == 400
