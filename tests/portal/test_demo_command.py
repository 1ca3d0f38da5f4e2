from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from portal.models import ModelRepo


def test_build_demo_model_registers_once(db):
    call_command("build_demo_model", "--steps", "3", stdout=StringIO())
    repo = ModelRepo.objects.get(namespace="openmaas", name="demo-tiny")
    version = repo.latest_version()
    assert (repo.visibility, repo.license, version.number) == ("public", "apache-2.0", 1)
    assert version.has_chat_template and version.files.filter(path="model.safetensors").exists()
    out = StringIO()
    call_command("build_demo_model", "--steps", "3", stdout=out)
    assert "already exists" in out.getvalue()
    assert repo.versions.count() == 1


def test_build_demo_model_rejects_bad_steps(db):
    with pytest.raises(CommandError):
        call_command("build_demo_model", "--steps", "0", stdout=StringIO())
