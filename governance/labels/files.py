"""Embed and read the implicit AIGC label in files, and hash their content without it.

One contract for every kind: ``content_digest(embed(data, kind, label), kind) ==
content_digest(data, kind)`` and ``read(embed(data, kind, label), kind) == label``; so a
label made with ``make_label(..., content_digest(data, kind), key=...)`` verifies after the
file is read back, and editing the content or the label breaks it. Where the label lives
and what the digest covers, per kind:

``txt``
    Plain text has no metadata: the label is the file's last line, the standard's JSON
    ``{"AIGC": {...}}``, preceded by a newline. The digest is SHA-256 of the bytes before
    that line. The explicit label (「人工智能生成」) is part of the content: add it with
    :func:`governance.labels.explicit.add_explicit_label` before hashing, or use
    :func:`label_file`, which does both.
``md``
    YAML front matter: one line ``AIGC: {...}`` (JSON, which is YAML flow style) inserted at
    the top of the existing front matter, or a new front matter block. The digest is
    SHA-256 of the bytes with that entry removed (and the front matter block too when
    nothing else is in it). Block-style ``AIGC:`` mappings of other tools are read as well.
``json``
    A top-level object gets an ``"AIGC"`` member (inserted first, the rest of the bytes
    kept). The digest is SHA-256 of the canonical JSON (sorted keys, ASCII, compact) of the
    object without ``AIGC``, so reformatting the file does not count as an edit.
``docx`` / ``xlsx`` / ``pptx``
    Custom document property ``AIGC`` in ``docProps/custom.xml`` (plus its content-type
    override and package relationship when absent). The digest covers every other zip
    member's name and bytes, leaving out ``docProps/custom.xml``, ``[Content_Types].xml``
    and ``_rels/.rels``, which the label itself changes.
``pdf``
    Document information dictionary key ``/AIGC`` (pypdf). The digest walks the object
    graph from the catalog (``/Root``): names, values and decoded stream data, with
    references numbered in visiting order, so it survives pypdf rewriting object numbers
    and leaves out the Info dictionary and the trailer ``/ID``.
``png``
    XMP packet in an ``iTXt`` chunk keyword ``XML:com.adobe.xmp``, property ``AIGC`` in
    namespace :data:`XMP_NS`; the digest is SHA-256 of the file without that chunk.
``jpeg``
    XMP packet in an APP1 segment (``http://ns.adobe.com/xap/1.0/``), same property; the
    digest is SHA-256 of the file without that segment.

A metadata property named ``AIGC`` (md, json, Office, PDF, XMP) holds the AIGC object
itself, fields in the standard's order; the txt line is the whole ``{"AIGC": {...}}``.
:func:`governance.labels.implicit.from_json` reads either shape.

For images the chunks/segments are spliced in place (the pixels are not re-encoded);
other XMP properties already in the packet are kept. Every :func:`embed` reads its output
back and raises :class:`LabelError` unless the label and the digest round-trip.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
import xml.etree.ElementTree as ET
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal
from xml.sax.saxutils import escape

import yaml

from governance.labels.implicit import (
    Key,
    LabelError,
    fields_json,
    from_json,
    make_label,
    normalize,
    to_json,
)

KINDS: tuple[str, ...] = ("txt", "md", "json", "docx", "xlsx", "pptx", "pdf", "png", "jpeg")
_ALIASES = {"text": "txt", "markdown": "md", "jpg": "jpeg"}
XMP_NS = "http://www.tc260.org.cn/ns/AIGC/1.0/"
XMP_PREFIX = "TC260"
_MAX_METADATA = 1 << 20  # a label part larger than 1 MiB is not ours: refuse to inflate it

Label = dict[str, Any]


def normalize_kind(kind: str) -> str:
    """The canonical kind name (``jpg`` → ``jpeg``); raises :class:`LabelError` if unknown."""
    name = _ALIASES.get(kind.lower().lstrip("."), kind.lower().lstrip("."))
    if name not in KINDS:
        raise LabelError(f"unsupported kind {kind!r}; one of {', '.join(KINDS)}")
    return name


def embed(data: bytes, kind: str, label: Label) -> bytes:
    """``data`` with ``label`` as its implicit AIGC label (replacing any there).

    Raises :class:`LabelError` when the file is not of ``kind``, or when reading the result
    back does not give the same label and the same content digest.
    """
    handler = _HANDLERS[normalize_kind(kind)]
    wanted = normalize(label)
    out = handler.embed(data, wanted)
    if handler.read(out) != wanted:
        raise LabelError(f"the {kind} label did not read back as written")
    if handler.digest(out) != handler.digest(data):
        raise LabelError(f"embedding the {kind} label changed the content digest")
    handler.check(out)
    return out


def read(data: bytes, kind: str) -> Label | None:
    """The implicit AIGC label in ``data``, or None when it carries none.

    Raises :class:`LabelError` when ``data`` is not a readable file of ``kind``.
    """
    return _HANDLERS[normalize_kind(kind)].read(data)


def content_digest(data: bytes, kind: str) -> str:
    """Hex SHA-256 of the content of ``data`` without its label (see the module doc)."""
    return _HANDLERS[normalize_kind(kind)].digest(data)


def label_file(
    data: bytes,
    kind: str,
    *,
    producer: str,
    content_id: str,
    key: Key,
    explicit: str | None = None,
    position: Literal["start", "end"] = "start",
) -> bytes:
    """Label generated content for export: explicit label (text kinds), then the implicit one.

    ``explicit`` is the notice text (default 「人工智能生成」) for ``txt``/``md``; other
    kinds carry their explicit label in the rendered content, which the caller produces.
    """
    from governance.labels import explicit as explicit_labels

    name = normalize_kind(kind)
    if name in ("txt", "md"):
        text = data.decode("utf-8")
        notice = explicit if explicit is not None else explicit_labels.DEFAULT_TEXT
        labelled = explicit_labels.add_explicit_label(
            text, notice, position=position, markdown=name == "md"
        )
        data = labelled.encode()
    label = make_label(content_id, producer, content_digest(data, name), key=key)
    return embed(data, name, label)


@dataclass(frozen=True)
class _Handler:
    embed: Callable[[bytes, Label], bytes]
    read: Callable[[bytes], Label | None]
    digest: Callable[[bytes], str]
    check: Callable[[bytes], None] = lambda data: None


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- txt -------------------------------------------------------------------------------

_TXT_MARK = b'{"AIGC"'


def _txt_split(data: bytes) -> tuple[bytes, bytes | None]:
    """(content, label line) — the label line is the last line if it starts ``{"AIGC"``."""
    body = data[:-1] if data.endswith(b"\n") else data
    cut = body.rfind(b"\n")
    if cut == -1 or not body[cut + 1 :].startswith(_TXT_MARK):
        return data, None
    return body[:cut], body[cut + 1 :]


def _txt_embed(data: bytes, label: Label) -> bytes:
    content, _ = _txt_split(data)
    return content + b"\n" + to_json(label).encode() + b"\n"


def _txt_read(data: bytes) -> Label | None:
    _, line = _txt_split(data)
    return None if line is None else from_json(_utf8(line))


def _txt_digest(data: bytes) -> str:
    return _sha(_txt_split(data)[0])


# --- md --------------------------------------------------------------------------------

_FENCE = b"---\n"


def _front_matter(data: bytes) -> int | None:
    """Offset of the closing ``---`` line of a leading YAML front matter, or None."""
    if not data.startswith(_FENCE):
        return None
    pos = len(_FENCE)
    while pos < len(data):
        end = data.find(b"\n", pos)
        line = data[pos : len(data) if end == -1 else end]
        if line.rstrip(b"\r") in (b"---", b"..."):
            return pos
        if end == -1:
            return None
        pos = end + 1
    return None


def _md_lines(data: bytes, close: int) -> list[bytes]:
    return data[len(_FENCE) : close].splitlines(keepends=True)


def _md_strip(data: bytes) -> bytes:
    """``data`` without the ``AIGC`` entry of its front matter (continuation lines too)."""
    close = _front_matter(data)
    if close is None:
        return data
    kept: list[bytes] = []
    skipping = False
    for line in _md_lines(data, close):
        if line.startswith(b"AIGC:"):
            skipping = True
            continue
        if skipping and line[:1] in (b" ", b"\t"):
            continue
        skipping = False
        kept.append(line)
    return _FENCE + b"".join(kept) + data[close:]


def _md_embed(data: bytes, label: Label) -> bytes:
    content = _md_strip(data)
    entry = b"AIGC: " + json.dumps(normalize(label)).encode() + b"\n"
    if _front_matter(content) is not None:
        return _FENCE + entry + content[len(_FENCE) :]
    return _FENCE + entry + b"---\n" + content


def _md_read(data: bytes) -> Label | None:
    close = _front_matter(data)
    if close is None:
        return None
    for line in _md_lines(data, close):
        if line.startswith(b"AIGC:") and line[5:].strip().startswith(b"{"):
            value = from_json(_utf8(line[5:]))
            if value is not None:
                return value
    try:
        meta = yaml.safe_load(_utf8(data[len(_FENCE) : close]))
    except yaml.YAMLError:
        return None
    found = meta.get("AIGC") if isinstance(meta, dict) else None
    if not isinstance(found, dict):
        return None
    # Other tools write YAML scalars unquoted (Label: 1): read them as the strings they mean.
    return {str(k): "" if v is None else str(v) for k, v in found.items()}


def _md_digest(data: bytes) -> str:
    content = _md_strip(data)
    close = _front_matter(content)
    if close == len(_FENCE):  # nothing but the label was in the front matter
        end = content.find(b"\n", close)
        content = b"" if end == -1 else content[end + 1 :]
    return _sha(content)


# --- json ------------------------------------------------------------------------------


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise LabelError(f"not a JSON document: {exc}") from exc
    if not isinstance(value, dict):
        raise LabelError("a JSON file carries a label only when its top level is an object")
    return value


def _json_embed(data: bytes, label: Label) -> bytes:
    obj = _json_object(data)
    if "AIGC" in obj:
        del obj["AIGC"]
        data = json.dumps(obj, ensure_ascii=False, indent=2).encode()
    text = data.decode("utf-8-sig")
    brace = text.index("{")
    member = '"AIGC": ' + json.dumps(normalize(label), ensure_ascii=False)
    rest = text[brace + 1 :]
    glue = ", " if obj else ""
    return (text[: brace + 1] + member + glue + rest).encode()


def _json_read(data: bytes) -> Label | None:
    found = _json_object(data).get("AIGC")
    return dict(found) if isinstance(found, dict) else None


def _json_digest(data: bytes) -> str:
    obj = _json_object(data)
    obj.pop("AIGC", None)
    return _sha(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode())


# --- docx / xlsx / pptx ------------------------------------------------------------------

_CUSTOM = "docProps/custom.xml"
_CONTENT_TYPES = "[Content_Types].xml"
_ROOT_RELS = "_rels/.rels"
_CP_NS = "http://schemas.openxmlformats.org/officeDocument/2006/custom-properties"
_VT_NS = "http://schemas.openxmlformats.org/officeDocument/2006/docPropsVTypes"
_CT_NS = "http://schemas.openxmlformats.org/package/2006/content-types"
_REL_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
_CUSTOM_TYPE = "application/vnd.openxmlformats-officedocument.custom-properties+xml"
_CUSTOM_REL = (
    "http://schemas.openxmlformats.org/officeDocument/2006/relationships/custom-properties"
)
_FMTID = "{D5CDD505-2E9C-101B-9397-08002B2CF9AE}"


def _zip(data: bytes) -> zipfile.ZipFile:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise LabelError(f"not an Office Open XML package: {exc}") from exc
    if _CONTENT_TYPES not in archive.namelist():
        raise LabelError("not an Office Open XML package: no [Content_Types].xml")
    return archive


def _zip_part(archive: zipfile.ZipFile, name: str) -> bytes | None:
    try:
        info = archive.getinfo(name)
    except KeyError:
        return None
    if info.file_size > _MAX_METADATA:
        raise LabelError(f"{name} is implausibly large for metadata")
    return archive.read(info)


def parse_xml(data: bytes, what: str) -> ET.Element:
    """Parse a metadata part of an untrusted file; raises :class:`LabelError` if malformed.

    Any DTD is refused before parsing (OOXML parts and XMP packets never carry one), which
    shuts out entity expansion and external entities as defusedxml would; expat is then
    safe to use on the rest.
    """
    if re.search(rb"<!(?:DOCTYPE|ENTITY)", data, re.IGNORECASE):
        raise LabelError(f"{what} declares a DTD, which metadata never needs")
    try:
        return ET.fromstring(data)  # noqa: S314 - DTDs refused above
    except ET.ParseError as exc:
        raise LabelError(f"{what} is not well-formed XML: {exc}") from exc


_AIGC_PROPERTY = re.compile(
    rb"<property\b[^>]*\bname=[\"']AIGC[\"'][^>]*?(?:/>|>.*?</property>)", re.S
)


def _custom_xml(existing: bytes | None, label: Label) -> bytes:
    """``docProps/custom.xml`` with the ``AIGC`` property; other properties kept verbatim.

    Edited as text rather than re-serialised: ElementTree cannot write the unprefixed
    default namespace these parts use alongside unqualified attributes.
    """
    if existing is None:
        existing = (
            b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            b'<Properties xmlns="' + _CP_NS.encode() + b'" xmlns:vt="' + _VT_NS.encode() + b'">'
            b"</Properties>"
        )
    kept = _AIGC_PROPERTY.sub(b"", existing)
    pids = [int(pid) for p in parse_xml(kept, _CUSTOM) if (pid := p.get("pid") or "").isdigit()]
    value = escape(_xml_json(label))
    prop = (
        f'<property fmtid="{_FMTID}" pid="{max([1, *pids]) + 1}" name="AIGC">'
        f'<vt:lpwstr xmlns:vt="{_VT_NS}">{value}</vt:lpwstr></property>'
    )
    return _insert_before_close(kept, b"</Properties>", prop.encode(), _CUSTOM)


def _content_types(data: bytes) -> bytes | None:
    """``[Content_Types].xml`` with the custom-properties override, or None if it has one."""
    root = parse_xml(data, _CONTENT_TYPES)
    if any(el.get("PartName") == "/" + _CUSTOM for el in root.iter(f"{{{_CT_NS}}}Override")):
        return None
    entry = f'<Override PartName="/{_CUSTOM}" ContentType="{_CUSTOM_TYPE}"/>'
    return _insert_before_close(data, b"</Types>", entry.encode(), _CONTENT_TYPES)


def _root_rels(data: bytes | None) -> bytes | None:
    """``_rels/.rels`` with a relationship to the custom properties, or None if it has one."""
    if data is None:
        data = f'<?xml version="1.0"?><Relationships xmlns="{_REL_NS}"></Relationships>'.encode()
    rels = list(parse_xml(data, _ROOT_RELS).iter(f"{{{_REL_NS}}}Relationship"))
    if any(el.get("Type") == _CUSTOM_REL for el in rels):
        return None
    ids = {el.get("Id") for el in rels}
    number = len(rels) + 1
    while f"rId{number}" in ids:
        number += 1
    entry = f'<Relationship Id="rId{number}" Type="{_CUSTOM_REL}" Target="{_CUSTOM}"/>'
    return _insert_before_close(data, b"</Relationships>", entry.encode(), _ROOT_RELS)


def _insert_before_close(data: bytes, closing: bytes, entry: bytes, what: str) -> bytes:
    at = data.rfind(closing)
    if at == -1:
        raise LabelError(f"{what} has an unexpected layout (no {closing.decode()})")
    return data[:at] + entry + data[at:]


def _ooxml_embed(data: bytes, label: Label) -> bytes:
    with _zip(data) as archive:
        replaced: dict[str, bytes | None] = {
            _CUSTOM: _custom_xml(_zip_part(archive, _CUSTOM), label),
            _CONTENT_TYPES: _content_types(archive.read(_CONTENT_TYPES)),
            _ROOT_RELS: _root_rels(_zip_part(archive, _ROOT_RELS)),
        }
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
            for info in archive.infolist():
                new = replaced.pop(info.filename, None)
                target.writestr(info, new if new is not None else archive.read(info))
            for name, new in replaced.items():
                if new is not None:
                    target.writestr(name, new)
    return out.getvalue()


def _ooxml_read(data: bytes) -> Label | None:
    with _zip(data) as archive:
        custom = _zip_part(archive, _CUSTOM)
    if custom is None:
        return None
    for prop in parse_xml(custom, _CUSTOM):
        if prop.get("name") == "AIGC":
            return from_json("".join(prop.itertext()))
    return None


def _ooxml_digest(data: bytes) -> str:
    digest = hashlib.sha256()
    with _zip(data) as archive:
        for name in sorted(archive.namelist()):
            if name in (_CUSTOM, _CONTENT_TYPES, _ROOT_RELS):
                continue
            part = hashlib.sha256()
            with archive.open(name) as stream:
                for chunk in iter(lambda: stream.read(1 << 16), b""):
                    part.update(chunk)
            digest.update(name.encode() + b"\0" + part.digest())
    return digest.hexdigest()


# --- pdf -------------------------------------------------------------------------------


def _pdf_reader(data: bytes) -> Any:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        encrypted = reader.is_encrypted
        reader.trailer["/Root"].get_object()
    except PyPdfError as exc:
        raise LabelError(f"not a readable PDF: {exc}") from exc
    except Exception as exc:  # pypdf raises many types on malformed input; uploads are untrusted
        raise LabelError(f"not a readable PDF: {exc!r}") from exc
    if encrypted:
        raise LabelError("encrypted PDFs are not labelled")
    return reader


def _pdf_embed(data: bytes, label: Label) -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter(clone_from=_pdf_reader(data))
    writer.add_metadata({"/AIGC": fields_json(label)})
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _pdf_read(data: bytes) -> Label | None:
    info = _pdf_reader(data).metadata
    value = info.get("/AIGC") if info is not None else None
    return from_json(str(value)) if value is not None else None


def _pdf_digest(data: bytes) -> str:
    from pypdf.generic import ArrayObject, DictionaryObject, IndirectObject, StreamObject

    digest = hashlib.sha256()
    seen: dict[tuple[int, int], int] = {}
    stack: list[Any] = [_pdf_reader(data).trailer.raw_get("/Root")]
    # Iterative pre-order walk: outline and page chains can be deeper than Python's stack.
    while stack:
        obj = stack.pop()
        if isinstance(obj, bytes):  # a token pushed below
            digest.update(obj)
            continue
        if isinstance(obj, IndirectObject):
            ref = (obj.idnum, obj.generation)
            if ref in seen:
                digest.update(b"R%d;" % seen[ref])
                continue
            seen[ref] = len(seen)
            obj = obj.get_object()
        children: list[Any] = []
        if isinstance(obj, StreamObject):
            digest.update(b"S" + _sha(_pdf_stream(obj)).encode())
            skip = {"/Length", "/Filter", "/DecodeParms"}
            for name in sorted(k for k in obj if k not in skip):
                children += [b"/" + name.encode() + b";", obj.raw_get(name)]
        elif isinstance(obj, DictionaryObject):
            digest.update(b"<<")
            for name in sorted(obj.keys()):
                children += [b"/" + name.encode() + b";", obj.raw_get(name)]
            children.append(b">>")
        elif isinstance(obj, ArrayObject):
            digest.update(b"[")
            children = [*obj, b"]"]
        else:
            digest.update(type(obj).__name__.encode() + b":" + str(obj).encode() + b";")
        stack.extend(reversed(children))
    return digest.hexdigest()


def _pdf_stream(obj: Any) -> bytes:
    try:
        return bytes(obj.get_data())
    except Exception:  # an unsupported filter: hash the encoded bytes as stored
        return bytes(obj._data)


def _pdf_check(data: bytes) -> None:
    _pdf_reader(data)


# --- XMP (png, jpeg) ---------------------------------------------------------------------

_X_NS = "adobe:ns:meta/"
_RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
for _prefix, _uri in (("x", _X_NS), ("rdf", _RDF_NS), (XMP_PREFIX, XMP_NS)):
    ET.register_namespace(_prefix, _uri)
_XPACKET_BEGIN = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
_XPACKET_END = '\n<?xpacket end="w"?>'
_XMP_AIGC = f"{{{XMP_NS}}}AIGC"


def _xmp_packet(existing: bytes | None, label: Label) -> bytes:
    """An XMP packet with the ``TC260:AIGC`` property; other properties of ``existing`` kept."""
    root = None
    if existing is not None:
        try:
            root = parse_xml(existing, "the XMP packet")
        except LabelError:
            root = None  # an unreadable packet from elsewhere is replaced, not merged
    if root is None:
        root = ET.Element(f"{{{_X_NS}}}xmpmeta")
    rdf = root if root.tag == f"{{{_RDF_NS}}}RDF" else root.find(f"{{{_RDF_NS}}}RDF")
    if rdf is None:
        rdf = ET.SubElement(root, f"{{{_RDF_NS}}}RDF")
    for description in rdf.iter(f"{{{_RDF_NS}}}Description"):
        description.attrib.pop(_XMP_AIGC, None)
        for old in description.findall(_XMP_AIGC):
            description.remove(old)
    target = rdf.find(f"{{{_RDF_NS}}}Description")
    if target is None:
        target = ET.SubElement(rdf, f"{{{_RDF_NS}}}Description", {f"{{{_RDF_NS}}}about": ""})
    ET.SubElement(target, _XMP_AIGC).text = _xml_json(label)
    body = ET.tostring(root, encoding="unicode")
    return (_XPACKET_BEGIN + body + _XPACKET_END).encode()


def _xmp_label(packet: bytes) -> Label | None:
    try:
        root = parse_xml(packet, "the XMP packet")
    except LabelError:
        return None
    for element in root.iter():
        value = element.get(_XMP_AIGC)
        if value is None and element.tag == _XMP_AIGC:
            value = "".join(element.itertext())
        if value is not None:
            return from_json(value)
    return None


def _image_check(data: bytes) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise LabelError(f"the labelled image does not decode: {exc}") from exc


# --- png -------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_XMP_KEYWORD = b"XML:com.adobe.xmp"


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, bytes, bytes]]:
    """(type, body, raw chunk bytes) for each chunk; raises on a truncated file."""
    if not data.startswith(_PNG_SIGNATURE):
        raise LabelError("not a PNG file")
    pos = len(_PNG_SIGNATURE)
    while pos < len(data):
        if pos + 12 > len(data):
            raise LabelError("truncated PNG chunk")
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        end = pos + 12 + length
        if end > len(data):
            raise LabelError("truncated PNG chunk")
        yield data[pos + 4 : pos + 8], data[pos + 8 : end - 4], data[pos:end]
        pos = end


def _png_xmp(body: bytes) -> bytes | None:
    """The XMP text of an ``iTXt`` chunk body, or None if the chunk holds something else."""
    keyword, _, rest = body.partition(b"\0")
    if keyword != _XMP_KEYWORD or len(rest) < 2:
        return None
    compressed, text = rest[0], rest[2:]
    text = text.split(b"\0", 2)[-1]  # skip the language tag and translated keyword
    if not compressed:
        return text
    inflater = zlib.decompressobj()
    packet = inflater.decompress(text, _MAX_METADATA)
    return None if inflater.unconsumed_tail else packet


def _png_is_xmp(kind: bytes, body: bytes) -> bool:
    return kind == b"iTXt" and body.startswith(_XMP_KEYWORD + b"\0")


def _png_embed(data: bytes, label: Label) -> bytes:
    existing = next((_png_xmp(b) for k, b, _ in _png_chunks(data) if _png_is_xmp(k, b)), None)
    body = _XMP_KEYWORD + b"\0\0\0\0\0" + _xmp_packet(existing, label)
    chunk = struct.pack(">I", len(body)) + b"iTXt" + body
    chunk += struct.pack(">I", zlib.crc32(b"iTXt" + body))
    out = [_PNG_SIGNATURE]
    for kind, body_, raw in _png_chunks(data):
        if _png_is_xmp(kind, body_):
            continue
        out.append(raw)
        if kind == b"IHDR":
            out.append(chunk)
    return b"".join(out)


def _png_read(data: bytes) -> Label | None:
    for kind, body, _ in _png_chunks(data):
        if _png_is_xmp(kind, body):
            packet = _png_xmp(body)
            found = _xmp_label(packet) if packet is not None else None
            if found is not None:
                return found
    return None


def _png_digest(data: bytes) -> str:
    digest = hashlib.sha256(_PNG_SIGNATURE)
    for kind, body, raw in _png_chunks(data):
        if not _png_is_xmp(kind, body):
            digest.update(raw)
    return digest.hexdigest()


# --- jpeg ------------------------------------------------------------------------------

_XMP_APP1 = b"http://ns.adobe.com/xap/1.0/\0"
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # markers without a length field


def _jpeg_segments(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(marker, raw bytes) for each segment up to SOS; the scan data and EOI come last as 0."""
    if not data.startswith(b"\xff\xd8"):
        raise LabelError("not a JPEG file")
    yield 0xD8, data[:2]
    pos = 2
    while pos < len(data):
        if data[pos] != 0xFF:
            raise LabelError("corrupt JPEG: expected a marker")
        while pos + 1 < len(data) and data[pos + 1] == 0xFF:  # fill bytes
            pos += 1
        if pos + 1 >= len(data):
            raise LabelError("truncated JPEG")
        marker = data[pos + 1]
        if marker in _STANDALONE:
            yield marker, data[pos : pos + 2]
            pos += 2
            continue
        if marker == 0xD9:
            yield 0, data[pos:]
            return
        if pos + 4 > len(data):
            raise LabelError("truncated JPEG")
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        end = pos + 2 + length
        if length < 2 or end > len(data):
            raise LabelError("truncated JPEG segment")
        yield marker, data[pos:end]
        if marker == 0xDA:  # start of scan: the rest is entropy-coded data
            yield 0, data[end:]
            return
        pos = end


def _jpeg_is_xmp(marker: int, raw: bytes) -> bool:
    return marker == 0xE1 and raw[4:].startswith(_XMP_APP1)


def _jpeg_embed(data: bytes, label: Label) -> bytes:
    segments = list(_jpeg_segments(data))
    existing = next(
        (raw[4 + len(_XMP_APP1) :] for m, raw in segments if _jpeg_is_xmp(m, raw)), None
    )
    payload = _XMP_APP1 + _xmp_packet(existing, label)
    if len(payload) + 2 > 0xFFFF:
        raise LabelError("the XMP packet does not fit in one JPEG APP1 segment")
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    kept = [(m, raw) for m, raw in segments if not _jpeg_is_xmp(m, raw)]
    # After SOI and the leading APPn segments (JFIF, Exif), as writers usually place XMP.
    at = 1
    while at < len(kept) and 0xE0 <= kept[at][0] <= 0xEF:
        at += 1
    kept.insert(at, (0xE1, segment))
    return b"".join(raw for _, raw in kept)


def _jpeg_read(data: bytes) -> Label | None:
    for marker, raw in _jpeg_segments(data):
        if _jpeg_is_xmp(marker, raw):
            found = _xmp_label(raw[4 + len(_XMP_APP1) :])
            if found is not None:
                return found
    return None


def _jpeg_digest(data: bytes) -> str:
    digest = hashlib.sha256()
    for marker, raw in _jpeg_segments(data):
        if not _jpeg_is_xmp(marker, raw):
            digest.update(raw)
    return digest.hexdigest()


_XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_json(label: Label) -> str:
    """:func:`fields_json` with characters XML 1.0 cannot hold written as JSON ``\\u`` escapes."""
    return _XML_INVALID.sub(lambda m: f"\\u{ord(m.group()):04x}", fields_json(label))


def _utf8(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


_OOXML = _Handler(_ooxml_embed, _ooxml_read, _ooxml_digest)
_HANDLERS: dict[str, _Handler] = {
    "txt": _Handler(_txt_embed, _txt_read, _txt_digest),
    "md": _Handler(_md_embed, _md_read, _md_digest),
    "json": _Handler(_json_embed, _json_read, _json_digest),
    "docx": _OOXML,
    "xlsx": _OOXML,
    "pptx": _OOXML,
    "pdf": _Handler(_pdf_embed, _pdf_read, _pdf_digest, _pdf_check),
    "png": _Handler(_png_embed, _png_read, _png_digest, _image_check),
    "jpeg": _Handler(_jpeg_embed, _jpeg_read, _jpeg_digest, _image_check),
}
