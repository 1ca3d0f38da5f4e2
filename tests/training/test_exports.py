"""Export jobs end to end: a succeeded LoRA fine-tune is merged into its base and int8-
quantised by the runner (``task: "export"``), and the result becomes a new version of the
fine-tune's hub repo whose card carries the sizes and the held-out losses."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
import yaml
from django.test import Client
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from compute.services.deployments import deploy_model
from portal.errors import NotFound, PlatformError
from portal.storage import store
from tests.training.conftest import start_run, workload_of
from tests.training.runner_helpers import chat_rows, read_events, write_jsonl
from training.models import FineTuningJob
from training.runner.run import run_spec
from training.services import jobs, runner
from training.services.runs import TrainingKind


@pytest.fixture(scope="module")
def lora_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real LoRA of the tiny model with random B matrices, so merging changes weights."""
    torch.manual_seed(3)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], init_lora_weights=False)
    out = tmp_path_factory.mktemp("lora")
    get_peft_model(base, config).save_pretrained(out)
    return out


def succeeded_fine_tune(owner: Any, files: dict[str, bytes], **extra: Any) -> FineTuningJob:
    """A fine-tune of olivia/tiny whose runner reported ``files`` as its result."""
    job = jobs.create_job(owner.user, model="olivia/tiny", training_file="olivia/chat", **extra)
    _, token = start_run(job.id)
    run = runner.authenticate(token)
    listed = [
        {"path": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for name, data in files.items()
    ]
    body = {"files": listed, "metrics": {"trained_tokens": 10}, "history": []}
    for upload in runner.start_result(run, body)["uploads"]:
        assert httpx.put(upload["url"], content=files[upload["path"]], timeout=30).is_success
    runner.complete_result(run)
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    return job


def lora_files(lora_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in lora_dir.iterdir() if p.suffix != ".md"}


def test_only_a_succeeded_lora_fine_tune_of_ones_own_can_be_exported(
    owner: Any, outsider: Any, base_model: Any, chat_dataset: Any, lora_dir: Path
) -> None:
    running = jobs.create_job(owner.user, model="olivia/tiny", training_file="olivia/chat")
    with pytest.raises(PlatformError) as not_done:
        jobs.create_export(owner.user, running.id)
    assert not_done.value.status == 400 and not_done.value.code == "invalid_job_state"
    config = json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]})
    full = succeeded_fine_tune(
        owner,
        {"model.safetensors": b"w" * 64, "config.json": config.encode()},
        adapter={"type": "full"},
    )
    with pytest.raises(PlatformError, match="full weights"):
        jobs.create_export(owner.user, full.id)
    lora = succeeded_fine_tune(owner, lora_files(lora_dir))
    with pytest.raises(NotFound):
        jobs.create_export(outsider.user, lora.id)
    with pytest.raises(PlatformError) as bad:
        jobs.create_export(owner.user, lora.id, quantize="int4")
    assert bad.value.param == "quantize"

    export = jobs.create_export(owner.user, lora.id, quantize=None)

    assert export.task == "export" and export.status == "queued"
    assert export.source_job == lora and export.base_version == lora.base_version
    assert workload_of(export.id).gpus == 0
    with pytest.raises(PlatformError, match="itself an export"):
        jobs.create_export(owner.user, export.id)
    described = TrainingKind().describe(workload_of(export.id))
    assert described["spec"]["task"] == "export"
    assert described["spec"]["export"] == {"quantize": None}
    assert {f["path"] for f in described["files"]} == {
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
    }
    page = Client()
    page.force_login(owner.user)
    shown = page.get(f"/fine-tuning/{lora.id}/").content.decode()
    assert 'id="ft-export"' in shown and export.id in shown
    answer = page.post(f"/fine-tuning/{lora.id}/export/")
    assert answer.status_code == 302
    made = FineTuningJob.objects.exclude(pk=export.pk).get(source_job=lora)
    assert answer["Location"] == f"/fine-tuning/{made.id}/" and made.export == {"quantize": "int8"}
    assert 'id="ft-export"' not in page.get(f"/fine-tuning/{full.id}/").content.decode()
    page.cookies["django_language"] = "en"
    assert "Export an int8 copy" in page.get(f"/fine-tuning/{lora.id}/").content.decode()


def test_the_runner_exports_a_loadable_int8_model_and_reports_sizes_and_losses(
    tiny_model_dir: Path, lora_dir: Path, tmp_path: Path
) -> None:
    files = tmp_path / "files"
    shutil.copytree(lora_dir, files / "adapter")
    write_jsonl(files / "data/valid.jsonl", chat_rows(4))
    spec = {
        "job": "ftjob-export",
        "task": "export",
        "model_dir": str(tiny_model_dir),
        "files_dir": str(files),
        "output_dir": str(tmp_path / "out"),
        "portal": None,
        "train_file": None,
        "validation_file": "data/valid.jsonl",
        "adapter": {"type": "lora"},
        "export": {"quantize": "int8"},
    }
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))

    assert run_spec(path) == 0

    result = next(e for e in read_events(tmp_path / "out") if e["type"] == "result")
    metrics = result["metrics"]
    assert 0 < metrics["bytes"] < metrics["base_bytes"]
    assert metrics["heldout_tokens"] > 0
    assert abs(metrics["heldout_loss_after"] - metrics["heldout_loss_before"]) < 0.5
    assert result["export"]["quantization"]["method"] == "torchao"
    config = json.loads((Path(result["dir"]) / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "torchao"
    exported = AutoModelForCausalLM.from_pretrained(result["dir"])
    assert exported(input_ids=torch.tensor([[1, 2, 3]])).logits.shape[-1] > 0


def test_an_export_over_http_becomes_a_new_version_with_its_numbers_on_the_card(
    live_portal: str,
    owner: Any,
    base_model: Any,
    chat_dataset: Any,
    lora_dir: Path,
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = succeeded_fine_tune(owner, lora_files(lora_dir), suffix="support")
    headers = {"Authorization": f"Bearer {owner.key}"}
    url = f"{live_portal}/api/fine-tuning/jobs/{source.id}/exports/"
    assert httpx.post(url, json={"quantize": "fp3"}, headers=headers).status_code == 400
    assert httpx.post(url, json={"nope": 1}, headers=headers).status_code == 400
    created = httpx.post(url, json={"heldout_file": "olivia/chat"}, headers=headers)
    assert created.status_code == 200, created.text
    body = created.json()
    assert body["object"] == "fine_tuning.job" and body["task"] == "export"
    assert body["source_job"] == source.id and body["status"] == "queued"

    workload, token = start_run(body["id"])
    described = TrainingKind().describe(workload)
    files = tmp_path / "files"
    for entry in described["files"]:
        target = files / entry["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(httpx.get(entry["url"], timeout=30).content)
    spec = {
        **described["spec"],
        "model_dir": str(tiny_model_dir),
        "files_dir": str(files),
        "output_dir": str(tmp_path / "out"),
        "portal": live_portal,
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    monkeypatch.setenv("OPENMAAS_RUN_TOKEN", token)

    assert run_spec(tmp_path / "spec.json") == 0

    retrieved = httpx.get(f"{live_portal}/v1/fine_tuning/jobs/{body['id']}", headers=headers)
    job = retrieved.json()
    assert job["status"] == "succeeded", job["error"]
    version = source.result_version.repo.versions.get(number=2)
    assert job["fine_tuned_model"] == str(version) == f"{version.repo.full_name}@v2"
    assert version.base_version is None
    report = job["export"]["report"]
    assert 0 < report["bytes"] < report["base_bytes"] and report["heldout_tokens"] > 0
    card = next(f for f in version.files.all() if f.path == "README.md")
    text = store().get_bytes("models", card.object_key).decode()
    data = yaml.safe_load(text.split("---\n")[1])
    assert data["export"]["derived_from"] == {
        "base": str(source.base_version),
        "adapter": str(source.result_version),
    }
    assert data["export"]["quantization"]["method"] == "torchao"
    assert data["metrics"]["heldout_loss_before"] == report["heldout_loss_before"]
    assert data["metrics"]["bytes"] == report["bytes"]
    paths = set(version.files.values_list("path", flat=True))
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md"} <= paths
    assert version.config["quantization_config"]["quant_method"] == "torchao"
    assert "| Held-out loss after (exported) |" in text and f"{report['bytes']:,} bytes" in text
    deployed = deploy_model(owner.user, version.repo, version=version)
    assert deployed.model_version == version
    listed = httpx.get(f"{live_portal}/v1/fine_tuning/jobs", headers=headers).json()["data"]
    assert {j["id"]: j["task"] for j in listed}[body["id"]] == "export"
