"""The object store client against the real S3 server of the test session."""

from __future__ import annotations

import io
import os
import uuid

import httpx
import pytest

from portal.storage import model_blob_key, store

MIB = 1024 * 1024


@pytest.fixture
def key() -> str:
    return f"tests/{uuid.uuid4().hex}"


def test_buckets_exist_after_ensure():
    objects = store()
    objects.ensure_buckets()
    objects.ensure_buckets()
    assert all(
        objects.client.bucket_exists(objects.bucket(k))
        for k in ("models", "datasets", "files", "artifacts")
    )


def test_put_get_stream_exists_delete(key):
    objects = store()
    objects.put_bytes("files", key, "你好, S3".encode())
    assert objects.exists("files", key)
    assert objects.get_bytes("files", key) == "你好, S3".encode()
    assert b"".join(objects.stream("files", key, chunk_size=3)) == "你好, S3".encode()
    objects.delete("files", key)
    assert not objects.exists("files", key)


def test_unknown_length_upload_goes_in_parts(key):
    data = os.urandom(11 * MIB)
    store().put_stream("artifacts", key, io.BytesIO(data), length=-1, part_size=5 * MIB)
    stat = store().client.stat_object(store().bucket("artifacts"), key)
    assert stat.size == len(data)
    assert stat.etag.endswith("-3")  # S3's multipart etag counts the parts
    assert store().get_bytes("artifacts", key) == data


def test_presigned_put_then_get(key):
    url = store().presigned_put("datasets", key)
    assert httpx.put(url, content=b"uploaded by a browser").status_code == 200
    assert httpx.get(store().presigned_get("datasets", key)).content == b"uploaded by a browser"


def test_presigned_url_is_signed():
    url = store().presigned_get("models", model_blob_key(1, "a" * 64))
    tampered = url.replace("X-Amz-Signature=", "X-Amz-Signature=0")
    assert httpx.get(tampered).status_code == 403


def test_object_keys_are_built_from_ids_and_digests_only():
    assert model_blob_key(7, "b" * 64) == f"repos/7/blobs/{'b' * 64}"
    for bad in ("../../etc/passwd", "B" * 64, "a" * 63):
        with pytest.raises(ValueError):
            model_blob_key(7, bad)
    with pytest.raises(ValueError):
        store().bucket("../other")
