"""Implicit labels in files: every kind round-trips, and tampering is detected."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pypdf import PdfReader

from governance.labels import files
from governance.labels.implicit import FIELDS, LabelError, make_label, propagate, verify_label
from tests.governance.label_samples import (
    KEY,
    PRODUCER,
    image,
    ooxml,
    pdf_with_text_replaced,
    sample,
)

KINDS = files.KINDS


def labelled(kind: str, variant: int = 0, **fields: str) -> tuple[bytes, dict[str, str]]:
    data = sample(kind, variant)
    label = make_label("content-1", PRODUCER, files.content_digest(data, kind), key=KEY)
    return files.embed(data, kind, label | fields), label | fields


def verifies(data: bytes, kind: str) -> bool:
    label = files.read(data, kind)
    assert label is not None
    return verify_label(label, files.content_digest(data, kind), KEY).valid


@pytest.mark.parametrize("kind", KINDS)
def test_label_reads_back_and_verifies(kind: str) -> None:
    data, label = labelled(kind)

    assert files.read(data, kind) == label
    assert tuple(files.read(data, kind) or {}) == FIELDS
    assert verifies(data, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_unlabelled_file_has_no_label(kind: str) -> None:
    assert files.read(sample(kind), kind) is None


@pytest.mark.parametrize("kind", KINDS)
def test_label_moved_onto_other_content_fails(kind: str) -> None:
    _, label = labelled(kind)

    forged = files.embed(sample(kind, variant=1), kind, label)

    assert not verifies(forged, kind)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("field", "value"),
    [("ProduceID", "content-2"), ("ContentProducer", "x"), ("ReservedCode1", "")],
)
def test_edited_or_stripped_label_fields_fail(kind: str, field: str, value: str) -> None:
    data, label = labelled(kind)

    edited = files.embed(data, kind, label | {field: value})

    assert not verifies(edited, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_relabelling_replaces_the_label_and_propagation_keeps_it_valid(kind: str) -> None:
    data, label = labelled(kind)

    shared = files.embed(data, kind, propagate(label, "hub", "post-7"))

    assert (files.read(shared, kind) or {})["PropagateID"] == "post-7"
    assert verifies(shared, kind)
    assert files.content_digest(shared, kind) == files.content_digest(sample(kind), kind)


@pytest.mark.parametrize("kind", KINDS)
def test_non_ascii_producer_and_id_round_trip(kind: str) -> None:
    data = sample(kind)
    label = make_label("内容-1 😀", "某某科技 备案号123", files.content_digest(data, kind), key=KEY)

    out = files.embed(data, kind, label)

    assert files.read(out, kind) == label
    assert verifies(out, kind)


def test_txt_label_is_the_last_line_in_the_standards_json() -> None:
    data, label = labelled("txt")

    line = data.removeprefix(sample("txt") + b"\n").removesuffix(b"\n")

    assert data == sample("txt") + b"\n" + line + b"\n"
    assert json.loads(line) == {"AIGC": label}


def test_editing_txt_content_in_place_fails() -> None:
    data, _ = labelled("txt")

    assert not verifies(data.replace("很好".encode(), "很差".encode()), "txt")


def test_md_front_matter_is_kept_and_the_label_goes_into_it() -> None:
    data = "---\ntitle: 报告\n---\n# 正文\n".encode()
    label = make_label("c", PRODUCER, files.content_digest(data, "md"), key=KEY)

    out = files.embed(data, "md", label)

    assert out.startswith(b"---\nAIGC: {")
    assert b"\ntitle: " in out and out.endswith("---\n# 正文\n".encode())
    assert files.read(out, "md") == label


def test_md_block_style_label_of_another_tool_is_read() -> None:
    data = b"---\nAIGC:\n  Label: 1\n  ContentProducer: other\n  ProduceID: x\n---\nhi\n"

    assert (files.read(data, "md") or {})["Label"] == "1"
    assert files.content_digest(data, "md") == files.content_digest(b"hi\n", "md")


def test_json_label_is_a_member_and_the_rest_of_the_bytes_stay() -> None:
    data = b'{\n  "b": 1,\n  "a": [1, 2]\n}'
    label = make_label("c", PRODUCER, files.content_digest(data, "json"), key=KEY)

    out = files.embed(data, "json", label)

    assert list(json.loads(out)) == ["AIGC", "b", "a"]
    assert out.endswith(b'"b": 1,\n  "a": [1, 2]\n}')


def test_json_that_is_not_an_object_cannot_carry_a_label() -> None:
    label = make_label("c", PRODUCER, "0" * 64, key=KEY)

    with pytest.raises(LabelError):
        files.embed(b"[1, 2]", "json", label)


@pytest.mark.parametrize("kind", ["docx", "xlsx", "pptx"])
def test_office_label_is_a_custom_property_registered_once(kind: str) -> None:
    data, label = labelled(kind)

    twice = files.embed(data, kind, label)

    with zipfile.ZipFile(io.BytesIO(twice)) as archive:
        types = archive.read("[Content_Types].xml").decode()
        rels = archive.read("_rels/.rels").decode()
        custom = archive.read("docProps/custom.xml").decode()
    assert types.count('PartName="/docProps/custom.xml"') == 1
    assert rels.count("relationships/custom-properties") == 1
    assert custom.count('name="AIGC"') == 1


def test_office_custom_properties_already_there_are_kept() -> None:
    custom = (
        '<?xml version="1.0"?><Properties xmlns="http://schemas.openxmlformats.org/'
        'officeDocument/2006/custom-properties" xmlns:vt="http://schemas.openxmlformats.org/'
        'officeDocument/2006/docPropsVTypes"><property fmtid="{D5CDD505-2E9C-101B-9397-'
        '08002B2CF9AE}" pid="5" name="Dept"><vt:lpwstr>R&amp;D</vt:lpwstr></property></Properties>'
    )
    data = ooxml("docx", custom=custom)
    label = make_label("c", PRODUCER, files.content_digest(data, "docx"), key=KEY)

    out = files.embed(data, "docx", label)

    with zipfile.ZipFile(io.BytesIO(out)) as archive:
        written = archive.read("docProps/custom.xml").decode()
    assert 'pid="5" name="Dept"><vt:lpwstr>R&amp;D' in written
    assert 'pid="6" name="AIGC"' in written


def test_editing_a_docx_part_fails() -> None:
    data, _ = labelled("docx")
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            body = source.read(info)
            if info.filename == "word/document.xml":
                body = body.replace("天气".encode(), "心情".encode())
            target.writestr(info, body)

    assert not verifies(out.getvalue(), "docx")


def test_pdf_label_is_in_the_info_dictionary() -> None:
    data, label = labelled("pdf")

    info = PdfReader(io.BytesIO(data)).metadata

    assert info is not None and info["/Title"] == "report"
    assert json.loads(str(info["/AIGC"])) == label


def test_editing_pdf_page_content_fails() -> None:
    data, _ = labelled("pdf")

    assert not verifies(pdf_with_text_replaced(data, "Quarterly", "Quarterlx"), "pdf")


def test_png_xmp_is_where_other_readers_look() -> None:
    data, _ = labelled("png")

    with Image.open(io.BytesIO(data)) as im:
        packet = im.info["XML:com.adobe.xmp"]
        pixels = im.convert("RGB").getpixel((0, 0))

    assert 'xmlns:TC260="http://www.tc260.org.cn/ns/AIGC/1.0/"' in packet
    assert "<TC260:AIGC>" in packet
    assert pixels == (200, 30, 30)


def test_png_xmp_from_elsewhere_is_merged_not_dropped() -> None:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_itxt(
        "XML:com.adobe.xmp",
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
        '22-rdf-syntax-ns#"><rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/'
        'elements/1.1/" dc:format="image/png"/></rdf:RDF></x:xmpmeta>',
    )
    data = image("PNG", pnginfo=info)
    label = make_label("c", PRODUCER, files.content_digest(data, "png"), key=KEY)

    out = files.embed(data, "png", label)

    assert out.count(b"XML:com.adobe.xmp") == 1
    assert b'dc:format="image/png"' in out
    assert files.read(out, "png") == label


def test_editing_png_pixels_keeping_the_chunk_fails() -> None:
    data, _ = labelled("png")
    with Image.open(io.BytesIO(data)) as im:
        packet = im.info["XML:com.adobe.xmp"]
        edited = im.convert("RGB")
    edited.putpixel((3, 3), (0, 0, 0))
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", packet)
    out = io.BytesIO()
    edited.save(out, format="PNG", pnginfo=info)

    assert files.read(out.getvalue(), "png") is not None
    assert not verifies(out.getvalue(), "png")


def test_jpeg_xmp_goes_after_exif_and_both_survive() -> None:
    exif = Image.Exif()
    exif[0x010E] = "a photo"  # ImageDescription
    data = image("JPEG", exif=exif.tobytes())
    label = make_label("c", PRODUCER, files.content_digest(data, "jpeg"), key=KEY)

    out = files.embed(data, "jpeg", label)

    with Image.open(io.BytesIO(out)) as im:
        assert im.getexif()[0x010E] == "a photo"
        assert b"http://www.tc260.org.cn/ns/AIGC/1.0/" in im.info["xmp"]
    assert out.index(b"Exif\0\0") < out.index(b"http://ns.adobe.com/xap/1.0/")
    assert files.read(out, "jpeg") == label


@pytest.mark.parametrize("kind", ["docx", "pdf", "png", "jpeg", "json"])
def test_a_file_of_another_kind_is_a_label_error(kind: str) -> None:
    with pytest.raises(LabelError):
        files.read(b"plain words, not a file of that kind", kind)


def test_unknown_kind_is_a_label_error() -> None:
    with pytest.raises(LabelError, match="unsupported kind"):
        files.read(b"", "mp3")


def test_label_file_adds_the_explicit_and_the_implicit_label() -> None:
    out = files.label_file(
        "模型的回答。\n".encode(), "txt", producer=PRODUCER, content_id="c-9", key=KEY
    )

    assert out.decode().startswith("「人工智能生成」\n模型的回答。\n")
    assert verifies(out, "txt")


def _round_trips(data: bytes, kind: str) -> None:
    label = make_label("c", "生产者 producer", files.content_digest(data, kind), key=KEY)
    out = files.embed(data, kind, label)
    assert files.read(out, kind) == label
    assert files.content_digest(out, kind) == files.content_digest(data, kind)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text())
def test_any_text_round_trips_as_txt_and_md(text: str) -> None:
    _round_trips(text.encode(), "txt")
    _round_trips(text.encode(), "md")


@settings(max_examples=50, deadline=None)
@given(text=st.text(alphabet='-\n.AIGC: {}"\r\t a'))
def test_text_made_of_front_matter_pieces_round_trips(text: str) -> None:
    _round_trips(text.encode(), "txt")
    _round_trips(text.encode(), "md")


_json_values: Any = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=100, deadline=None)
@given(obj=st.dictionaries(st.text(), _json_values, max_size=6), indent=st.sampled_from([None, 2]))
def test_any_json_object_round_trips(obj: dict[str, Any], indent: int | None) -> None:
    _round_trips(json.dumps(obj, ensure_ascii=False, indent=indent).encode(), "json")


def test_label_too_large_for_a_jpeg_segment_is_refused() -> None:
    data = sample("jpeg")
    label = make_label("x" * 70_000, PRODUCER, files.content_digest(data, "jpeg"), key=KEY)

    with pytest.raises(LabelError, match="APP1"):
        files.embed(data, "jpeg", label)
