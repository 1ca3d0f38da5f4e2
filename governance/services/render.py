"""Render a generated answer as a file to export: md, txt, json, docx, pdf or png.

Every format carries the explicit label (「人工智能生成」 by default) as its first (or last)
visible line; the implicit label is added afterwards by
:func:`governance.services.provenance.register_export`, which hashes what is rendered
here. No Word or PDF writer is installed, so DOCX is a minimal WordprocessingML package
written as XML and PDF a minimal document built with pypdf's object model, its text in
the predefined CJK font ``STSong-Light`` (``UniGB-UCS2-H``, which PDF readers supply:
nothing is embedded). PNG is drawn with Pillow in the font ``GOVERNANCE_EXPORT_FONT``
(a TrueType/OpenType file with CJK glyphs; the first of :data:`FONT_CANDIDATES` that
exists when unset, Pillow's built-in font as the last resort, which has no CJK glyphs).

Pure apart from reading the font path from the caller: no Django import.
"""

from __future__ import annotations

import io
import json
import textwrap
import unicodedata
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal
from xml.sax.saxutils import escape

FORMATS: tuple[str, ...] = ("md", "txt", "json", "docx", "pdf", "png")
MEDIA_TYPES: dict[str, str] = {
    "md": "text/markdown; charset=utf-8",
    "txt": "text/plain; charset=utf-8",
    "json": "application/json",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "pdf": "application/pdf",
    "png": "image/png",
}
FONT_CANDIDATES: tuple[str, ...] = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/System/Library/Fonts/PingFang.ttc",
)
PNG_MAX_LINES = 400  # taller images are unreadable; such answers export as pdf or docx
Position = Literal["start", "end"]


class RenderError(ValueError):
    """A text that cannot be rendered in the asked format (the message says why)."""


def render(
    text: str,
    fmt: str,
    *,
    notice: str,
    position: Position = "start",
    meta: dict[str, str] | None = None,
    font: str = "",
) -> bytes:
    """``text`` as a file of ``fmt`` with the visible ``notice`` at its start or end.

    ``meta`` (served name, time) goes into JSON exports as fields. Raises
    :class:`RenderError` for an unknown format or a text too long for an image.
    """
    if fmt not in FORMATS:
        raise RenderError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    body = _clean(text)
    if fmt == "json":
        return _json(body, notice, meta or {})
    if fmt in ("txt", "md"):
        gap = "\n\n" if fmt == "md" else "\n"
        joined = f"{notice}{gap}{body}" if position == "start" else f"{body}{gap}{notice}"
        # The txt label is a line of its own appended after a newline: no blank line before it.
        return (joined + ("\n" if fmt == "md" else "")).encode()
    lines = _with_notice(body.split("\n"), notice, position)
    if fmt == "docx":
        return docx(lines)
    if fmt == "pdf":
        return _pdf(lines)
    return _png(lines, font)


def _clean(text: str) -> str:
    """NFC, ``\\n`` line ends, no control characters other than tab and newline (XML and
    PDF strings cannot carry them)."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    return "".join(c for c in text if c in "\t\n" or unicodedata.category(c) != "Cc").strip()


def _with_notice(lines: list[str], notice: str, position: Position) -> list[str]:
    return [notice, "", *lines] if position == "start" else [*lines, "", notice]


def _json(text: str, notice: str, meta: dict[str, str]) -> bytes:
    document = {"notice": notice, **meta, "content": text}
    return json.dumps(document, ensure_ascii=False, indent=2).encode()


# --- docx ------------------------------------------------------------------------------

_W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
_DOCX_MAIN = "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"
_OFFICE_DOC = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument"
_DOCX_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" '
    'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    f'<Override PartName="/word/document.xml" ContentType="{_DOCX_MAIN}"/>'
    "</Types>"
)
_DOCX_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    f'<Relationship Id="rId1" Type="{_OFFICE_DOC}" Target="word/document.xml"/>'
    "</Relationships>"
)


def docx(paragraphs: Iterable[str | tuple[str, bool]]) -> bytes:
    """A minimal WordprocessingML package (A4): one paragraph per item, a text or a
    ``(text, bold)`` pair; an empty text is an empty paragraph. Texts carry the East
    Asian font hint. Pure: the exports here and the compliance reports write Word files
    with it (no python-docx is installed)."""
    body = "".join(
        _docx_paragraph(*((item, False) if isinstance(item, str) else item)) for item in paragraphs
    )
    document = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        f'<w:document xmlns:w="{_W_NS}"><w:body>{body}'
        '<w:sectPr><w:pgSz w:w="11906" w:h="16838"/></w:sectPr></w:body></w:document>'
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", _DOCX_TYPES)
        archive.writestr("_rels/.rels", _DOCX_RELS)
        archive.writestr("word/document.xml", document)
    return out.getvalue()


def _docx_paragraph(text: str, bold: bool) -> str:
    if not text:
        return "<w:p/>"
    # rPr children in schema order: the fonts before bold.
    style = f'<w:rPr><w:rFonts w:eastAsia="SimSun"/>{"<w:b/>" if bold else ""}</w:rPr>'
    return f'<w:p><w:r>{style}<w:t xml:space="preserve">{escape(text)}</w:t></w:r></w:p>'


# --- pdf -------------------------------------------------------------------------------

_PAGE_W, _PAGE_H, _MARGIN = 595, 842, 56  # A4 in points
_FONT_SIZE, _LEADING = 11, 16
_WIDE = ("W", "F", "A")  # East Asian widths drawn a full em wide


def _pdf(lines: list[str]) -> bytes:
    """A PDF of A4 pages in STSong-Light; lines wrapped by their drawn width."""
    from pypdf import PdfWriter
    from pypdf.generic import ContentStream, DictionaryObject, NameObject

    writer = PdfWriter()
    font = writer._add_object(_pdf_font())
    per_page = (_PAGE_H - 2 * _MARGIN) // _LEADING
    wrapped = [part for line in lines for part in _wrap_em(line, _PAGE_W - 2 * _MARGIN)]
    for start in range(0, max(len(wrapped), 1), per_page):
        page = writer.add_blank_page(_PAGE_W, _PAGE_H)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}
        )
        stream = ContentStream(None, writer)
        stream.set_data(_pdf_text(wrapped[start : start + per_page]))
        page.replace_contents(stream)
    writer.add_metadata({"/Producer": "openmaas"})
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _pdf_font() -> Any:
    from pypdf.generic import (
        ArrayObject,
        DictionaryObject,
        NameObject,
        NumberObject,
        TextStringObject,
    )

    def name(value: str) -> NameObject:
        return NameObject(value)

    descriptor = DictionaryObject(
        {
            name("/Type"): name("/FontDescriptor"),
            name("/FontName"): name("/STSong-Light"),
            name("/Flags"): NumberObject(6),
            name("/FontBBox"): ArrayObject([NumberObject(v) for v in (-25, -254, 1000, 880)]),
            name("/ItalicAngle"): NumberObject(0),
            name("/Ascent"): NumberObject(880),
            name("/Descent"): NumberObject(-120),
            name("/CapHeight"): NumberObject(880),
            name("/StemV"): NumberObject(93),
        }
    )
    system = DictionaryObject(
        {
            name("/Registry"): TextStringObject("Adobe"),
            name("/Ordering"): TextStringObject("GB1"),
            name("/Supplement"): NumberObject(4),
        }
    )
    descendant = DictionaryObject(
        {
            name("/Type"): name("/Font"),
            name("/Subtype"): name("/CIDFontType0"),
            name("/BaseFont"): name("/STSong-Light"),
            name("/CIDSystemInfo"): system,
            name("/FontDescriptor"): descriptor,
            name("/DW"): NumberObject(1000),
            # CIDs 1-95 are Adobe-GB1's proportional Latin: drawn half an em wide here.
            name("/W"): ArrayObject([NumberObject(1), NumberObject(95), NumberObject(500)]),
        }
    )
    return DictionaryObject(
        {
            name("/Type"): name("/Font"),
            name("/Subtype"): name("/Type0"),
            name("/BaseFont"): name("/STSong-Light-UniGB-UCS2-H"),
            name("/Encoding"): name("/UniGB-UCS2-H"),
            name("/DescendantFonts"): ArrayObject([descendant]),
        }
    )


def _pdf_text(lines: Iterable[str]) -> bytes:
    ops = [f"BT /F1 {_FONT_SIZE} Tf {_LEADING} TL {_MARGIN} {_PAGE_H - _MARGIN} Td"]
    for line in lines:
        ops.append(f"<{_ucs2(line)}> Tj T*")
    ops.append("ET")
    return "\n".join(ops).encode("ascii")


def _ucs2(line: str) -> str:
    """Hex UTF-16BE of ``line`` with characters outside the BMP (no UCS-2 code) as U+FFFD."""
    return "".join(f"{ord(c) if ord(c) <= 0xFFFF else 0xFFFD:04X}" for c in line)


def _em(char: str) -> float:
    if char == "\t":
        return 2.0
    return 1.0 if unicodedata.east_asian_width(char) in _WIDE else 0.5


def _wrap_em(line: str, width_pt: float) -> list[str]:
    """``line`` cut into pieces that fit ``width_pt`` (CJK one em, the rest half)."""
    limit = width_pt / _FONT_SIZE
    pieces: list[str] = []
    current, used = "", 0.0
    for char in line.replace("\t", "  "):
        if used + _em(char) > limit:
            pieces.append(current)
            current, used = "", 0.0
        current += char
        used += _em(char)
    pieces.append(current)
    return pieces


# --- png -------------------------------------------------------------------------------

_PNG_WIDTH, _PNG_PAD, _PNG_SIZE, _PNG_LINE = 960, 32, 22, 34


def font_path(configured: str = "") -> str:
    """The font file for PNG exports: ``configured`` when given, else the first candidate
    installed, else ``""`` (Pillow's built-in font)."""
    if configured:
        return configured
    return next((c for c in FONT_CANDIDATES if Path(c).is_file()), "")


def _png(lines: list[str], font: str) -> bytes:
    from PIL import Image, ImageDraw, ImageFont

    face: Any = (
        ImageFont.truetype(font, _PNG_SIZE) if font else ImageFont.load_default(size=_PNG_SIZE)
    )
    chars = (_PNG_WIDTH - 2 * _PNG_PAD) // (_PNG_SIZE // 2)
    rows = [piece for line in lines for piece in _wrap_cells(line, chars)]
    if len(rows) > PNG_MAX_LINES:
        raise RenderError(
            f"the answer needs {len(rows)} lines, more than an image holds "
            f"({PNG_MAX_LINES}); export it as pdf or docx"
        )
    height = 2 * _PNG_PAD + _PNG_LINE * len(rows)
    image = Image.new("RGB", (_PNG_WIDTH, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for number, row in enumerate(rows):
        draw.text((_PNG_PAD, _PNG_PAD + number * _PNG_LINE), row, fill=(20, 20, 20), font=face)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue()


def _wrap_cells(line: str, cells: int) -> list[str]:
    """Wrap by display cells (a CJK character is two), keeping words whole where possible."""
    if not line:
        return [""]
    if all(_em(c) < 1 for c in line):
        return textwrap.wrap(line, cells, replace_whitespace=False) or [""]
    return _wrap_em(line, cells * _FONT_SIZE / 2)
