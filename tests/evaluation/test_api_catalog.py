"""The catalogue through the API: tasks and suites as YAML (errors name the field path),
endpoints whose key is never shown and is stored encrypted, built-ins, and tenancy (an
outsider gets 404 for what is private)."""

from __future__ import annotations

from typing import Any

import pytest

from evaluation.models import Endpoint, EvalSuite, EvalTask
from evaluation.services import catalog, crypto
from tests.evaluation.conftest import GEN_TASK, MC_TASK, SUITE

pytestmark = pytest.mark.django_db

TASKS = "/api/evaluation/tasks/"
SUITES = "/api/evaluation/suites/"
ENDPOINTS = "/api/evaluation/endpoints/"


def create_task(actor: Any, text: str, **extra: Any) -> Any:
    return actor.client().post(TASKS, {"yaml": text, **extra}, format="json")


def test_task_created_from_yaml_is_read_back_with_its_spec_and_hash(owner: Any) -> None:
    response = create_task(owner, GEN_TASK.format(name="adds", limit=5))

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["id"] == "olivia/adds"
    assert body["output_type"] == "generate_until"
    assert body["spec"]["limit"] == 5
    assert len(body["spec_sha256"]) == 64
    again = owner.client().get(TASKS + "olivia/adds/").json()
    assert again["spec_sha256"] == body["spec_sha256"]
    assert again["source"].startswith("task: adds")


def test_malformed_task_yaml_is_a_400_naming_the_line(owner: Any) -> None:
    response = create_task(owner, "task: broken\ndataset: [unclosed\n")

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_task"
    assert "line" in body["detail"]


def test_unknown_metric_is_a_400_naming_the_field_path(owner: Any) -> None:
    text = GEN_TASK.format(name="adds", limit=5).replace("exact_match", "exact_mtach")

    response = create_task(owner, text)

    assert response.status_code == 400
    assert "metrics[0].name" in response.json()["detail"]
    assert "exact_match" in response.json()["detail"]  # the suggestion
    assert not EvalTask.objects.filter(name="adds").exists()


def test_a_taken_task_name_is_a_409(owner: Any) -> None:
    assert create_task(owner, GEN_TASK.format(name="adds", limit=5)).status_code == 201
    assert create_task(owner, GEN_TASK.format(name="adds", limit=6)).status_code == 409


def test_task_update_replaces_the_yaml_but_not_the_name(owner: Any) -> None:
    create_task(owner, GEN_TASK.format(name="adds", limit=5))
    client = owner.client()

    changed = client.patch(
        TASKS + "olivia/adds/", {"yaml": GEN_TASK.format(name="adds", limit=9)}, format="json"
    )
    renamed = client.patch(
        TASKS + "olivia/adds/", {"yaml": GEN_TASK.format(name="other", limit=9)}, format="json"
    )

    assert changed.status_code == 200 and changed.json()["spec"]["limit"] == 9
    assert renamed.status_code == 400 and renamed.json()["param"] == "task"


def test_outsider_gets_404_for_a_private_task_and_suite(
    owner: Any, outsider: Any, gen_task: Any, mc_task: Any, suite: Any
) -> None:
    client = outsider.client()

    assert client.get(TASKS + "olivia/tiny-add/").status_code == 404
    assert client.get(SUITES + "olivia/tiny-suite/").status_code == 404
    assert client.patch(TASKS + "olivia/tiny-add/", {}, format="json").status_code == 404
    assert client.delete(SUITES + "olivia/tiny-suite/").status_code == 404
    listed = [t["id"] for t in client.get(TASKS).json()["results"]]
    assert "olivia/tiny-add" not in listed


def test_teammate_reads_an_organisation_task_but_cannot_change_it(
    owner: Any, org: Any, teammate: Any
) -> None:
    response = create_task(
        owner, GEN_TASK.format(name="org-adds", limit=3), owner="acme-lab", visibility="org"
    )
    assert response.status_code == 201, response.json()
    client = teammate.client()

    assert client.get(TASKS + "acme-lab/org-adds/").status_code == 200
    assert client.delete(TASKS + "acme-lab/org-adds/").status_code == 404


def test_creating_under_another_namespace_is_refused(owner: Any, outsider: Any) -> None:
    response = create_task(outsider, GEN_TASK.format(name="adds", limit=3), owner="olivia")

    assert response.status_code == 403


def test_suite_names_its_tasks_and_an_unreadable_task_is_a_404(
    owner: Any, outsider: Any, gen_task: Any, mc_task: Any
) -> None:
    text = SUITE.format(name="both", first="tiny-mc", second="olivia/tiny-add")

    mine = owner.client().post(SUITES, {"yaml": text}, format="json")
    theirs = outsider.client().post(SUITES, {"yaml": text}, format="json")

    assert mine.status_code == 201, mine.json()
    assert [t["task"] for t in mine.json()["tasks"]] == ["olivia/tiny-mc", "olivia/tiny-add"]
    assert mine.json()["aggregation"] == "weighted"
    assert theirs.status_code == 404
    assert theirs.json()["param"].startswith("tasks[")


def test_suite_with_an_inconsistent_ahp_matrix_is_a_400(owner: Any, gen_task: Any) -> None:
    create_task(owner, GEN_TASK.format(name="adds-b", limit=3))
    create_task(owner, GEN_TASK.format(name="adds-c", limit=3))
    text = (
        "suite: ahp\ntasks: [{task: tiny-add}, {task: adds-b}, {task: adds-c}]\n"
        "aggregation: weighted\nahp: {matrix: [[1, 9, 0.111], [0.111, 1, 9], [9, 0.111, 1]]}\n"
    )

    response = owner.client().post(SUITES, {"yaml": text}, format="json")

    assert response.status_code == 400
    assert "consisten" in response.json()["detail"]


def test_a_task_in_a_suite_cannot_be_deleted(owner: Any, suite: Any) -> None:
    response = owner.client().delete(TASKS + "olivia/tiny-add/")

    assert response.status_code == 409
    assert owner.client().delete(SUITES + "olivia/tiny-suite/").status_code == 204
    assert owner.client().delete(TASKS + "olivia/tiny-add/").status_code == 204


def test_builtins_are_synced_once_public_and_read_only(owner: Any, outsider: Any) -> None:
    first = catalog.sync_builtin()
    again = catalog.sync_builtin()

    assert first["tasks"] > 0 and first["suites"] > 0
    assert again == {"tasks": 0, "suites": 0}
    body = outsider.client().get(SUITES, {"builtin": "true"}).json()
    names = {s["id"] for s in body["results"]}
    assert "openmaas/general-en" in names
    general = EvalSuite.objects.get(namespace="openmaas", name="general-en")
    assert general.ahp["weights"] and general.ahp["consistency_ratio"] <= 0.1
    refused = owner.client().patch(TASKS + "openmaas/commonsense_en/", {}, format="json")
    assert refused.status_code == 404  # nobody but the openmaas organisation may write it


def test_endpoint_key_is_never_returned_and_is_stored_encrypted(owner: Any, outsider: Any) -> None:
    secret = "sk-test-0123456789abcdef"
    body = {
        "name": "app",
        "base_url": "https://api.example.com/v1",
        "model": "app-model",
        "api_key": secret,
    }

    created = owner.client().post(ENDPOINTS, body, format="json")

    assert created.status_code == 201, created.json()
    assert secret not in created.content.decode()
    assert created.json()["key_hint"] == "cdef"
    listed = owner.client().get(ENDPOINTS).content.decode()
    assert secret not in listed
    stored = Endpoint.objects.get(name="app")
    assert secret not in stored.api_key_encrypted
    assert crypto.decrypt(stored.api_key_encrypted) == secret
    assert outsider.client().get(ENDPOINTS + "olivia/app/").status_code == 404
    assert outsider.client().get(ENDPOINTS).json()["results"] == []


@pytest.mark.parametrize(
    "base_url",
    ["ftp://example.com/v1", "https://user:pw@example.com/v1", "not a url", "https://x/v1?a=1"],
)
def test_endpoint_with_a_bad_base_url_is_a_400(owner: Any, base_url: str) -> None:
    body = {"name": "app", "base_url": base_url, "model": "m"}

    response = owner.client().post(ENDPOINTS, body, format="json")

    assert response.status_code == 400
    assert response.json()["param"] == "base_url"


def test_task_yaml_in_the_mc_template_parses(owner: Any, mc_dataset: str) -> None:
    response = create_task(owner, MC_TASK.format(name="mc", dataset=mc_dataset))

    assert response.status_code == 201, response.json()
    assert response.json()["spec"]["dataset"]["hub"] == mc_dataset
