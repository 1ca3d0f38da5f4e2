"""Classifiers trained by the platform: staff upload a labelled dataset to the hub, train
a version from it (the Celery task's work, run in process), read its held-out metrics,
activate it, and ``/v1/moderations`` answers with it from the request after the commit —
a made-up insult the shipped COLD model has never seen becomes flagged. Nobody but staff
may do any of it."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest

from datasets.services.repos import create_repo
from governance.jobs.classifiers import train_classifier
from governance.models import AuditEvent, ClassifierVersion
from governance.moderation import classifier
from governance.services import snapshot
from portal.storage import store
from tests.datasets.conftest import add_version

API = "/api/governance/classifiers/"
MODERATIONS = "/v1/moderations"

# "蓝莓脑袋" (blueberry-head): an insult only this data teaches. Offensive rows use it,
# harmless rows speak of blueberries and heads alike, so the n-grams must pair them.
SUBJECTS = ["楼上", "这个人", "隔壁的", "那位网友", "新来的同事", "他", "她", "评论区那位"]
SUBJECTS += ["你", "那帮人"]
INSULTS = [
    "{s}就是个蓝莓脑袋",
    "{s}真是蓝莓脑袋，什么都不懂",
    "别听{s}的，蓝莓脑袋一个",
    "{s}这种蓝莓脑袋也配说话？",
    "蓝莓脑袋{s}又来胡说了",
    "{s}简直是个十足的蓝莓脑袋",
]
NEUTRAL = [
    "{s}今天买了一盒蓝莓",
    "{s}说蓝莓很好吃",
    "{s}在公园散步",
    "{s}推荐了一本好书",
    "{s}做的蛋糕上放了蓝莓",
    "{s}明天要去开会",
    "{s}的脑袋有点疼，去看医生了",
    "{s}喜欢喝蓝莓汁",
    "{s}帮我修好了电脑",
    "{s}今天心情不错",
]
PROBE = "你这个蓝莓脑袋懂什么"
HARMLESS = "今天的蓝莓很新鲜"


def labelled_rows() -> list[tuple[str, int]]:
    rows = []
    for subject in SUBJECTS:
        rows += [(template.format(s=subject), 1) for template in INSULTS]
        rows += [(template.format(s=subject), 0) for template in NEUTRAL]
    return rows


def as_csv(rows: list[tuple[str, int]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["TEXT", "label"])
    writer.writerows(rows)
    return out.getvalue()


def as_jsonl(rows: list[tuple[str, int]]) -> str:
    return "".join(json.dumps({"text": t, "label": y}, ensure_ascii=False) + "\n" for t, y in rows)


@pytest.fixture(autouse=True)
def _shipped_model_after() -> Iterator[None]:
    """Whatever a test activated, later tests' pipelines get the shipped model back: the
    loader points at it again, and the version moves as a committed deactivation would
    (the flush that empties the database moves none)."""
    yield
    classifier.use_model_dir(None)
    snapshot.bump()


@pytest.fixture
def labels(admin: Any) -> str:
    """ada/labels@1: the labelled CSV (train.csv) and the same rows as JSON Lines."""
    repo = create_repo(admin.user, admin.user, "labels", visibility="private")
    rows = labelled_rows()
    version = add_version(
        repo, admin.user, {"train.csv": as_csv(rows), "rows.jsonl": as_jsonl(rows)}
    )
    assert version.state == "ready", version.report
    return "ada/labels"


def flagged(client: Any, text: str) -> tuple[bool, float]:
    answer = client.post(MODERATIONS, {"input": text}, format="json")
    assert answer.status_code == 200, answer.content
    result = answer.json()["results"][0]
    return result["flagged"], result["platform_category_scores"]["A2_i"]


def train(client: Any, body: dict[str, Any]) -> dict[str, Any]:
    queued = client.post(API, body, format="json")
    assert queued.status_code == 201, queued.content
    assert queued.json()["status"] == "pending"
    row = ClassifierVersion.objects.get(number=queued.json()["number"])
    assert train_classifier(row.pk) == "finished", row.error
    detail = client.get(f"{API}{row.number}/")
    assert detail.status_code == 200
    return dict(detail.json())


def test_a_classifier_trained_on_uploaded_labels_changes_the_verdict_once_activated(
    transactional_db: Any, admin: Any, labels: str
) -> None:
    # transactional: the activation's commit moves the governance version, and the next
    # /v1/moderations request rebuilds its pipeline with the trained classifier
    client = admin.client()
    before = flagged(client, PROBE)

    trained = train(client, {"dataset": labels, "revision": "1", "path": "train.csv"})
    metrics = trained["metrics"]
    activated = client.post(f"{API}{trained['number']}/activate", format="json")
    after, harmless = flagged(client, PROBE), flagged(client, HARMLESS)

    # the shipped model does not know the insult; the trained one does, and only it
    assert before[0] is False
    assert trained["status"] == "finished" and trained["active"] is False
    assert trained["source"] == "ada/labels@1:train.csv"
    assert metrics["rows"] == 160 and metrics["train_rows"] + metrics["test_rows"] == 160
    assert metrics["test_rows"] == 32
    assert metrics["f1"] >= 0.9 and metrics["precision"] > 0 and metrics["recall"] > 0
    assert activated.status_code == 200, activated.content
    assert activated.json()["active"] is True
    assert after[0] is True and after[1] > 0.9
    assert harmless[0] is False
    # the weights are in the object store, without pickle, under a platform-built key
    row = ClassifierVersion.objects.get(number=trained["number"])
    assert row.artifact_prefix.startswith(f"governance/classifiers/v{row.number}-")
    weights = store().get_bytes("artifacts", row.artifact_prefix + "weights.npz")
    assert weights[:2] == b"PK"  # a zip of .npy arrays
    params = json.loads(store().get_bytes("artifacts", row.artifact_prefix + "params.json"))
    assert params["format"] == classifier.FORMAT and params["eval"]["split"] == "held-out"
    actions = list(
        AuditEvent.objects.filter(target_type="classifier").values_list("action", "target_id")
    )
    assert ("classifier.train", str(row.number)) in actions
    assert ("classifier.activate", str(row.number)) in actions


def test_activating_another_version_retires_the_first_and_deactivating_restores_cold(
    transactional_db: Any, admin: Any, labels: str
) -> None:
    client = admin.client()
    first = train(client, {"dataset": labels, "path": "rows.jsonl"})  # newest ready version
    second = train(client, {"dataset": labels, "revision": "v1", "path": "train.csv"})

    client.post(f"{API}{first['number']}/activate")
    client.post(f"{API}{second['number']}/activate")
    listed = client.get(API).json()
    retired = client.post(f"{API}deactivate")
    after = flagged(client, PROBE)
    again = client.post(f"{API}deactivate")

    assert first["source"] == "ada/labels@1:rows.jsonl" and first["metrics"]["rows"] == 160
    assert [(r["number"], r["active"]) for r in listed["results"]] == [
        (second["number"], True),
        (first["number"], False),
    ]
    assert retired.status_code == 200 and retired.json()["number"] == second["number"]
    assert after[0] is False
    assert again.status_code == 204
    assert not ClassifierVersion.objects.filter(active=True).exists()


def test_unusable_training_data_fails_the_version_with_the_reason(admin: Any) -> None:
    repo = create_repo(admin.user, admin.user, "one-sided", visibility="private")
    add_version(repo, admin.user, {"train.csv": as_csv([(f"句子{i}", 0) for i in range(40)])})
    client = admin.client()

    queued = client.post(API, {"dataset": "ada/one-sided", "path": "train.csv"}, format="json")
    row = ClassifierVersion.objects.get(number=queued.json()["number"])
    status = train_classifier(row.pk)
    refused = client.post(f"{API}{row.number}/activate")

    assert status == "failed"
    row.refresh_from_db()
    assert "at least 10 rows of each label" in row.error
    assert refused.status_code == 409
    assert train_classifier(row.pk) == "skipped"  # a finished version is not retrained


def test_training_requests_name_a_readable_ready_labelled_file(
    admin: Any, owner: Any, labels: str
) -> None:
    client = admin.client()
    theirs = create_repo(owner.user, owner.user, "secret", visibility="private")
    add_version(theirs, owner.user, {"train.csv": as_csv(labelled_rows())})
    bad = {
        "no such repo": ({"dataset": "ada/nope", "path": "train.csv"}, 404),
        "malformed name": ({"dataset": "ada", "path": "train.csv"}, 400),
        "no such version": ({"dataset": labels, "revision": "9", "path": "train.csv"}, 404),
        "no such file": ({"dataset": labels, "path": "missing.csv"}, 404),
        "two files, none named": ({"dataset": labels}, 400),
        "unknown revision hash": ({"dataset": labels, "revision": "ab" * 8}, 404),
        "not a revision": ({"dataset": labels, "revision": "main"}, 400),
    }

    answers = {why: client.post(API, body, format="json") for why, (body, _) in bad.items()}

    for why, (_, code) in bad.items():
        assert answers[why].status_code == code, (why, answers[why].content)
    assert not ClassifierVersion.objects.exists()


def test_only_staff_may_train_list_read_or_activate_classifiers(
    admin: Any, owner: Any, outsider: Any, anon: Any, labels: str
) -> None:
    row = ClassifierVersion.objects.create(number=1, source="x", status="finished")
    body = {"dataset": labels, "path": "train.csv"}
    for client in (owner.client(), outsider.client()):
        assert client.get(API).status_code == 403
        assert client.post(API, body, format="json").status_code == 403
        assert client.get(f"{API}{row.number}/").status_code == 403
        assert client.post(f"{API}{row.number}/activate").status_code == 403
        assert client.post(f"{API}deactivate").status_code == 403
    assert anon.get(API).status_code in (401, 403)
    assert admin.client().get(f"{API}99/").status_code == 404
    assert not ClassifierVersion.objects.filter(active=True).exists()
    assert ClassifierVersion.objects.count() == 1


def test_json_lines_take_any_key_case_and_label_form_and_name_the_bad_line(
    tmp_path: Any,
) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text(
        '{"TEXT": "a", "Label": 1}\n\n{"text": "b", "label": "0"}\n'
        '{"text": "c", "label": true, "topic": "Region"}\n',
        encoding="utf-8",
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 2}\n', encoding="utf-8")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a", "label": 1}\n{"text": \n', encoding="utf-8")

    data = classifier.read_labelled(good)

    assert (data.texts, data.labels, data.topics) == (
        ["a", "b", "c"],
        [1, 0, 1],
        ["", "", "region"],
    )
    with pytest.raises(classifier.TrainingDataError, match="line 2: needs a string 'text'"):
        classifier.read_labelled(bad)
    with pytest.raises(classifier.TrainingDataError, match="line 2: not JSON"):
        classifier.read_labelled(broken)
