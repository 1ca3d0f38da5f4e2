"""AIGC labels of GB 45438-2025: implicit (file metadata) and explicit (visible text).

A pure library: no Django import; the caller passes the signing key
(``GOVERNANCE_LABEL_KEY``, else ``SECRET_KEY``). :mod:`.implicit` builds and verifies the
``AIGC`` object, :mod:`.files` embeds and reads it per file kind, :mod:`.explicit` adds and
detects the visible notice and classifies uploads.
"""

from governance.labels.explicit import add_explicit_label, classify_upload, has_explicit_label
from governance.labels.files import KINDS, content_digest, embed, label_file, read
from governance.labels.implicit import (
    LABEL_IS,
    LABEL_MAY,
    LABEL_SUSPECTED,
    LabelCheck,
    LabelError,
    header_value,
    make_label,
    propagate,
    verify_label,
    verify_propagation,
)

__all__ = [
    "KINDS",
    "LABEL_IS",
    "LABEL_MAY",
    "LABEL_SUSPECTED",
    "LabelCheck",
    "LabelError",
    "add_explicit_label",
    "classify_upload",
    "content_digest",
    "embed",
    "has_explicit_label",
    "header_value",
    "label_file",
    "make_label",
    "propagate",
    "read",
    "verify_label",
    "verify_propagation",
]
