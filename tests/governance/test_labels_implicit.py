"""The implicit AIGC label: fields in the standard's order, signed, verifiable, propagatable."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from governance.labels.implicit import (
    FIELDS,
    LabelError,
    from_json,
    header_value,
    make_label,
    propagate,
    sha256_hex,
    signing_payload,
    to_json,
    verify_label,
    verify_propagation,
)

KEY = b"k" * 32
DIGEST = sha256_hex(b"generated text")


def test_label_has_the_standards_fields_in_order() -> None:
    label = make_label("chatcmpl-1", "openmaas", DIGEST, key=KEY)

    assert tuple(label) == FIELDS
    assert list(json.loads(to_json(label))["AIGC"]) == list(FIELDS)
    assert label["Label"] == "1"
    assert (label["ContentPropagator"], label["PropagateID"], label["ReservedCode2"]) == ("",) * 3


def test_signature_is_base64url_hmac_sha256_of_producer_id_and_hash() -> None:
    label = make_label("chatcmpl-1", "openmaas", DIGEST, key=KEY)

    payload = json.dumps(["openmaas-aigc-v1", "openmaas", "chatcmpl-1", DIGEST]).encode()
    assert signing_payload("openmaas", "chatcmpl-1", DIGEST) == payload.replace(b", ", b",")
    mac = hmac.new(KEY, signing_payload("openmaas", "chatcmpl-1", DIGEST), hashlib.sha256)
    encoded = base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()
    assert label["ReservedCode1"] == "hmac-sha256:" + encoded


def test_label_verifies_for_its_content_and_key() -> None:
    label = make_label("chatcmpl-1", "openmaas", DIGEST, key=KEY)

    assert verify_label(label, DIGEST, KEY).valid
    assert verify_label(label, DIGEST.upper(), KEY.decode()).valid


@pytest.mark.parametrize(
    ("field", "value"),
    [("ContentProducer", "someone-else"), ("ProduceID", "chatcmpl-2"), ("ReservedCode1", "")],
)
def test_editing_the_labels_fields_breaks_verification(field: str, value: str) -> None:
    label = make_label("chatcmpl-1", "openmaas", DIGEST, key=KEY) | {field: value}

    check = verify_label(label, DIGEST, KEY)

    assert not check.valid
    assert check.reason


def test_other_content_or_other_key_fails_verification() -> None:
    label = make_label("chatcmpl-1", "openmaas", DIGEST, key=KEY)

    assert not verify_label(label, sha256_hex(b"edited text"), KEY)
    assert not verify_label(label, DIGEST, b"another key")


def test_stripped_signature_is_reported_as_such() -> None:
    label = make_label("chatcmpl-1", "openmaas", DIGEST, key=KEY) | {"ReservedCode1": ""}

    assert "no signature" in verify_label(label, DIGEST, KEY).reason


@pytest.mark.parametrize("value", ["1", "2", "3"])
def test_label_values_are_the_standards_three(value: str) -> None:
    label = make_label("c", "openmaas", DIGEST, key=KEY, label=value)

    assert verify_label(label, DIGEST, KEY).valid


def test_unknown_label_value_or_missing_field_is_rejected() -> None:
    with pytest.raises(LabelError):
        make_label("c", "openmaas", DIGEST, key=KEY, label="4")
    label = make_label("c", "openmaas", DIGEST, key=KEY)

    assert "Label must be" in verify_label(label | {"Label": "4"}, DIGEST, KEY).reason
    partial = {k: v for k, v in label.items() if k != "PropagateID"}
    assert "lacks PropagateID" in verify_label(partial, DIGEST, KEY).reason


def test_bad_inputs_raise_label_error() -> None:
    with pytest.raises(LabelError):
        make_label("c", "openmaas", "not-a-digest", key=KEY)
    with pytest.raises(LabelError):
        make_label("", "openmaas", DIGEST, key=KEY)
    with pytest.raises(LabelError):
        make_label("c", "openmaas", DIGEST, key=b"")


def test_propagation_keeps_the_producers_signature_valid() -> None:
    label = make_label("chatcmpl-1", "openmaas", DIGEST, key=KEY)

    shared = propagate(label, "community-hub", "post-42", key=b"hub key")

    assert (shared["ContentPropagator"], shared["PropagateID"]) == ("community-hub", "post-42")
    assert tuple(shared) == FIELDS
    assert verify_label(shared, DIGEST, KEY).valid
    assert verify_propagation(shared, b"hub key").valid
    assert label["PropagateID"] == ""  # the original is not modified


def test_edited_propagation_fields_fail_the_propagators_check() -> None:
    shared = propagate(make_label("c", "openmaas", DIGEST, key=KEY), "hub", "post-42", key=b"h")

    assert not verify_propagation(shared | {"PropagateID": "post-43"}, b"h")
    assert not verify_propagation(propagate(shared, "hub", "post-42"), b"h")  # unsigned


def test_signing_payload_cannot_be_shifted_by_separators() -> None:
    assert signing_payload("a|b", "c", DIGEST) != signing_payload("a", "b|c", DIGEST)


def test_header_value_is_ascii_and_reads_back() -> None:
    label = make_label("chatcmpl-1", "某某科技", DIGEST, key=KEY)

    value = header_value(label)

    assert value.isascii() and "\n" not in value
    assert from_json(value) == label
