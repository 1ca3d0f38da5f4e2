from __future__ import annotations

import hashlib
import shutil
import urllib.request

import pytest
from django.core.management import CommandError, call_command

from portal.models import ModelRepo, ModelVersion
from portal.services.registry import import_model_dir

CARD = """---
license: apache-2.0
language: [zh, en]
tags: [chat, tiny]
pipeline_tag: text-generation
base_model: none
---
# 小模型

A tiny test model.
"""


@pytest.fixture
def model_dir(tiny_model_dir, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    (target / "README.md").write_text(CARD)
    return target


def test_import_model_command_registers_version_with_files_in_object_store(db, model_dir, owner):
    call_command("import_model", str(model_dir), "--name", "acme/tiny")
    version = ModelVersion.objects.get(repo__namespace="acme", repo__name="tiny")
    assert version.number == 1 and version.has_chat_template
    assert version.model_type == "llama"
    weights = version.files.get(path="model.safetensors")
    local = (model_dir / "model.safetensors").read_bytes()
    assert weights.sha256 == hashlib.sha256(local).hexdigest()
    response = owner.client().get("/api/models/acme/tiny/versions/1/download/")
    url = next(f["url"] for f in response.json()["files"] if f["path"] == "model.safetensors")
    assert urllib.request.urlopen(url).read() == local  # noqa: S310 - our presigned URL


def test_card_front_matter_is_parsed(db, model_dir, owner):
    import_model_dir(model_dir, "acme/tiny", actor=None)
    body = owner.client().get("/api/models/acme/tiny/").json()
    assert body["license"] == "apache-2.0"
    assert body["tags"] == ["chat", "tiny"]
    assert body["card_data"]["language"] == ["zh", "en"]
    assert body["card"].startswith("# 小模型")


def test_same_directory_twice_is_one_version_and_a_change_is_the_next(db, model_dir):
    first = import_model_dir(model_dir, "acme/tiny", actor=None)
    again = import_model_dir(model_dir, "acme/tiny", actor=None)
    assert again.pk == first.pk
    (model_dir / "generation_config.json").write_text('{"max_new_tokens": 7}')
    second = import_model_dir(model_dir, "acme/tiny", actor=None)
    assert second.number == 2 and second.revision != first.revision


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda d: (d / "config.json").unlink(), "Missing config.json"),
        (lambda d: (d / "config.json").write_text("{oops"), "config.json is not valid JSON"),
        (lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 4), "truncated"),
        (
            lambda d: (d / "model.safetensors").write_bytes(b"\x08" + b"\x00" * 7 + b"{garbage"),
            "not a valid safetensors file",
        ),
        (lambda d: (d / "tokenizer.json").unlink(), "No tokenizer"),
        (lambda d: (d / "model.safetensors").unlink(), "No weights"),
    ],
)
def test_malformed_directory_gets_a_clear_error(db, model_dir, breakage, message):
    breakage(model_dir)
    with pytest.raises(CommandError, match=message):
        call_command("import_model", str(model_dir), "--name", "acme/broken")
    assert not ModelRepo.objects.filter(name="broken").exists()


def test_truncated_safetensors_payload_is_refused(db, model_dir):
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CommandError, match="truncated"):
        call_command("import_model", str(model_dir), "--name", "acme/broken")


def test_private_model_is_404_to_outsider_and_listed_for_owner(db, model_dir, owner, outsider):
    import_model_dir(model_dir, "olivia/secret", actor=owner.user, visibility="private")
    assert owner.client().get("/api/models/olivia/secret/").status_code == 200
    assert outsider.client().get("/api/models/olivia/secret/").status_code == 404
    assert (
        outsider.client().get("/api/models/olivia/secret/versions/1/download/").status_code == 404
    )
    names = [m["id"] for m in outsider.client().get("/api/models/").json()["results"]]
    assert "olivia/secret" not in names


def test_org_visibility_reaches_members_only(db, model_dir, org, teammate, outsider, owner):
    import_model_dir(model_dir, f"{org.name}/shared", actor=owner.user, visibility="org")
    import_model_dir(model_dir, f"{org.name}/admins", actor=owner.user, visibility="private")
    assert teammate.client().get(f"/api/models/{org.name}/shared/").status_code == 200
    assert teammate.client().get(f"/api/models/{org.name}/admins/").status_code == 404
    assert outsider.client().get(f"/api/models/{org.name}/shared/").status_code == 404


def test_outsider_cannot_publish_into_someone_elses_namespace(db, model_dir, owner, outsider):
    from portal.errors import PermissionDenied

    with pytest.raises(PermissionDenied):
        import_model_dir(model_dir, "olivia/hijack", actor=outsider.user)


def test_only_writers_change_visibility(db, model_dir, owner, outsider):
    import_model_dir(model_dir, "olivia/pub", actor=owner.user, visibility="public")
    url = "/api/models/olivia/pub/"
    assert outsider.client().patch(url, {"visibility": "private"}, format="json").status_code == 404
    assert owner.client().patch(url, {"visibility": "private"}, format="json").status_code == 200
    assert outsider.client().get(url).status_code == 404
