"""Small files of every labelled kind, built in memory (no fixtures on disk)."""

from __future__ import annotations

import io
import json
import zipfile

from PIL import Image
from pypdf import PdfReader, PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

KEY = b"test-label-key"
PRODUCER = "openmaas.test"

_RELS_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
_OFFICE_DOC = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument"
_MAIN = {
    "docx": (
        "word/document.xml",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml",
    ),
    "xlsx": (
        "xl/workbook.xml",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml",
    ),
    "pptx": (
        "ppt/presentation.xml",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation.main+xml",
    ),
}
_BODY = {
    "docx": (
        '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        "<w:body>{paragraphs}</w:body></w:document>"
    ),
    "xlsx": (
        '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        '<sheets><sheet name="{text}" sheetId="1"/></sheets></workbook>'
    ),
    "pptx": (
        '<p:presentation xmlns:p="http://schemas.openxmlformats.org/presentationml/2006/main">'
        "<!-- {text} --></p:presentation>"
    ),
}


def ooxml(kind: str, text: str = "季度报告", *, custom: str | None = None) -> bytes:
    """A minimal OPC package of ``kind`` whose main part holds ``text``."""
    part, content_type = _MAIN[kind]
    paragraphs = "".join(f"<w:p><w:r><w:t>{line}</w:t></w:r></w:p>" for line in text.split("\n"))
    body = _BODY[kind].format(text=text, paragraphs=paragraphs)
    overrides = f'<Override PartName="/{part}" ContentType="{content_type}"/>'
    if custom is not None:
        overrides += (
            '<Override PartName="/docProps/custom.xml" ContentType="application/'
            'vnd.openxmlformats-officedocument.custom-properties+xml"/>'
        )
    types = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" '
        'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        f"{overrides}</Types>"
    )
    rels = (
        f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{_RELS_NS}">'
        f'<Relationship Id="rId1" Type="{_OFFICE_DOC}" Target="{part}"/></Relationships>'
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", types)
        archive.writestr("_rels/.rels", rels)
        archive.writestr(part, '<?xml version="1.0" encoding="UTF-8"?>' + body)
        if custom is not None:
            archive.writestr("docProps/custom.xml", custom)
    return out.getvalue()


def pdf(text: str = "Quarterly report") -> bytes:
    """A one-page PDF whose content stream shows ``text`` in Helvetica."""
    writer = PdfWriter()
    page = writer.add_blank_page(300, 200)
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    page[NameObject("/Resources")] = DictionaryObject(
        {NameObject("/Font"): DictionaryObject({NameObject("/F1"): writer._add_object(font)})}
    )
    stream = DecodedStreamObject()
    stream.set_data(f"BT /F1 12 Tf 20 100 Td ({text}) Tj ET".encode("latin-1"))
    page.replace_contents(stream)
    writer.add_metadata({"/Title": "report"})
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def pdf_with_text_replaced(data: bytes, old: str, new: str) -> bytes:
    """``data`` rewritten by pypdf with ``old`` replaced in the page content (Info kept)."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    page = writer.pages[0]
    contents = page.get_contents()
    assert contents is not None
    stream = DecodedStreamObject()
    stream.set_data(contents.get_data().replace(old.encode(), new.encode()))
    page.replace_contents(stream)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def image(fmt: str, colour: tuple[int, int, int] = (200, 30, 30), **save: object) -> bytes:
    """A 16×16 image of one colour in ``fmt`` (``PNG`` or ``JPEG``)."""
    out = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(out, format=fmt, **save)
    return out.getvalue()


def sample(kind: str, variant: int = 0) -> bytes:
    """One unlabelled file of ``kind``; a different ``variant`` has different content."""
    text = ["今天的天气很好。\nThe weather is fine.\n", "明天会下雨。\nRain tomorrow.\n"][variant]
    if kind in ("txt", "md"):
        prefix = "# 报告\n\n" if kind == "md" else ""
        return (prefix + text).encode()
    if kind == "json":
        return json.dumps({"answer": text, "n": variant}, ensure_ascii=False, indent=2).encode()
    if kind in _MAIN:
        return ooxml(kind, text.strip())
    if kind == "pdf":
        return pdf(["Quarterly report", "Annual report"][variant])
    colour = [(200, 30, 30), (30, 200, 30)][variant]
    return image("PNG" if kind == "png" else "JPEG", colour)
