"""A bounded schemathesis run over the whole ``/api`` OpenAPI schema, against the real
server (``live_portal``), as an ordinary user: no request may get a 5xx, and every answer
must have a status the schema lists, a documented content type and a body that matches.

The fuzzer authenticates with a throwaway key of olivia's; a DELETE aimed at that key is
redirected to a spare one, so the run never locks itself out. Generated paths rarely
name anything that exists, so every other valid case of a dataset operation (not a
DELETE) is pointed at olivia's real, ingested public dataset instead, and every other
valid fine-tuning case (``/v1/fine_tuning`` and ``/api/fine-tuning``) at her real job (or,
to create one, her real model and dataset).
Each operation gets a few examples (``FUZZ_EXAMPLES``, 6: every operation is still covered,
in both modes), keeping the whole file to about a minute on two cores.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from portal.services.keys import create_api_key
from tests.datasets.conftest import CHAT_JSONL, add_version
from tests.factories import deployment
from training.services.jobs import create_job

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "6"))
UNSATISFIABLE: list[str] = []  # operations for which no valid case could be generated
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def fuzz(live_portal: str, owner: Any, org: Any, teammate: Any) -> dict[str, Any]:
    """The cast plus a model, and the fuzzer's own key (and a spare one it may delete)."""
    from datasets.services.repos import create_repo

    deployment(owner.user, "pub")
    dataset = create_repo(owner.user, owner.user, "chat", visibility="public")
    add_version(dataset, owner.user, {"train.jsonl": CHAT_JSONL})
    in_use, raw = create_api_key(owner.user, name="fuzzer")
    spare, _ = create_api_key(owner.user, name="spare")
    job = create_job(owner.user, model="olivia/pub", training_file="olivia/chat")
    REAL_JOB["fine_tuning_job_id"] = job.id
    return {"url": live_portal, "key": raw, "key_id": in_use.pk, "spare_id": spare.pk}


REAL_DATASET = {"namespace": "olivia", "name": "chat", "number": 1, "path": "train.jsonl"}
REAL_JOB: dict[str, str] = {}
REAL_JOB_BODY = {"model": "olivia/pub", "training_file": "olivia/chat"}
_turns = itertools.count()
_job_turns = itertools.count()


def aim_at_real_job(case: Any, mode: Any) -> None:
    """Every other valid fine-tuning case names the real job, or creates one from the
    real model and dataset (the settings the fuzzer chose are kept)."""
    paths = ("/v1/fine_tuning/", "/api/fine-tuning/")
    if mode != GenerationMode.POSITIVE or not case.path.startswith(paths):
        return
    if not next(_job_turns) % 2:
        return
    params = case.path_parameters or {}
    if "fine_tuning_job_id" in params:
        params.update(REAL_JOB)
    elif "job_id" in params and case.path.startswith("/api/fine-tuning/"):
        params["job_id"] = REAL_JOB["fine_tuning_job_id"]  # an export of it: a 400
    elif case.method == "POST" and isinstance(case.body, dict):
        case.body.update(REAL_JOB_BODY)


def aim_at_real_dataset(case: Any, mode: Any) -> None:
    """Every other valid case of a dataset operation names the real dataset's parts."""
    params = case.path_parameters or {}
    if mode != GenerationMode.POSITIVE or case.method == "DELETE" or "namespace" not in params:
        return
    if next(_turns) % 2:
        params.update({name: value for name, value in REAL_DATASET.items() if name in params})


def fuzz_operation(operation: Any, mode: Any, fuzz: dict[str, Any]) -> list[str]:
    """Run ``EXAMPLES`` generated cases of one operation; the failures, as text."""
    failures: list[str] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
    )
    def run(case: Any) -> None:
        deleting = case.method == "DELETE" and case.path == "/api/keys/{id}/"
        if deleting and str(case.path_parameters.get("id")) == str(fuzz["key_id"]):
            case.path_parameters["id"] = fuzz["spare_id"]
        aim_at_real_dataset(case, mode)
        aim_at_real_job(case, mode)
        try:
            case.call_and_validate(
                base_url=fuzz["url"],
                headers={"Authorization": f"Bearer {fuzz['key']}"},
                checks=CHECKS,
                timeout=30,
            )
        except (Exception, BaseExceptionGroup) as exc:  # a FailureGroup per failing case
            failures.append(f"{case.method} {case.formatted_path}: {exc!r}"[:3000])

    try:
        run()
    except Unsatisfiable:
        UNSATISFIABLE.append(operation.label)
    return failures


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_its_schema(fuzz: dict[str, Any], mode: Any) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz['url']}/api/schema/?format=json")
    failures: list[str] = []
    for result in schema.get_all_operations():
        failures += fuzz_operation(result.ok(), mode, fuzz)
    print("no cases could be generated for:", UNSATISFIABLE)
    assert not failures, "\n\n".join(failures[:20])
