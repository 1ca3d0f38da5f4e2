"""A processing run end to end: a version goes through several steps as a job and comes
out as a new, validated version whose rows are exactly the expected ones, with its
lineage recorded both ways and its input released."""

from __future__ import annotations

import json
from typing import Any

import orjson

from datasets.models import (
    DatasetJob,
    DatasetUse,
    DatasetVersion,
    JobKind,
    VersionOrigin,
    VersionState,
)
from datasets.services.jobs import start_processing
from datasets.services.lineage import lineage
from portal.storage import store
from tests.datasets.conftest import run_queued_jobs

WALL = "长城是中国古代的军事防御工程，东起山海关，西至嘉峪关，全长两万多公里，修建历经两千多年。"
CANAL = "京杭大运河是世界上里程最长、工程最大的古代运河，北起北京，南到杭州，沟通五大水系。"
TEA = "中国是茶的故乡，茶文化源远流长，绿茶、红茶、乌龙茶、白茶、黄茶和黑茶各具风味。"
ROWS = [
    {"instruction": "介绍长城", "input": "", "output": WALL + "有问题请拨打13812345678。"},
    {"instruction": "介绍运河", "input": "", "output": CANAL},
    # a near duplicate of the first row: one character changed
    {
        "instruction": "介绍长城",
        "input": "",
        "output": WALL.replace("两万", "二万") + "有问题请拨打13812345678。",
    },
    {"instruction": "Say hello", "input": "", "output": "Hello there! Write to bob@example.com."},
    {"instruction": "介绍茶", "input": "", "output": TEA},
    {"instruction": "ひらがな", "input": "", "output": "こんにちは、おげんきですか。"},
]
STEPS = [
    {"step": "dedup_near", "threshold": 0.7},
    {"step": "filter_language", "languages": ["zh", "en"]},
    {"step": "redact_pii", "kinds": ["mobile", "email"]},
    {"step": "to_chat", "source": "alpaca"},
    {"step": "split", "validation_size": 1, "seed": 7},
]


def jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def rows_of(version: DatasetVersion, path: str) -> list[dict[str, Any]]:
    record = version.files.get(path=path)
    return [
        orjson.loads(line) for line in store().get_bytes("datasets", record.object_key).splitlines()
    ]


def test_a_pipeline_run_makes_a_child_version_with_exactly_the_expected_rows(
    owner: Any, make_dataset: Any
) -> None:
    # given a valid Alpaca version with a near duplicate, a Japanese row and PII
    repo = make_dataset(owner.user, "facts", files={"train.jsonl": jsonl(ROWS)})
    parent = repo.versions.get(number=1)
    assert parent.state == VersionState.READY
    # when the steps run as a job
    job = start_processing(parent, owner.user, STEPS)
    assert DatasetUse.objects.get(version=parent).active
    run_queued_jobs()
    # then a second version holds the four kept rows, in chat form, split 3 + 1
    job = DatasetJob.objects.get(pk=job.pk)
    assert job.status == "succeeded", job.error
    child = job.output
    assert child is not None and child.number == 2
    assert (child.state, child.origin, child.format) == (
        VersionState.READY,
        VersionOrigin.PROCESSING,
        "chat",
    )
    assert sorted(child.files.values_list("path", "split")) == [
        ("train.jsonl", "train"),
        ("validation.jsonl", "validation"),
    ]
    kept = rows_of(child, "train.jsonl") + rows_of(child, "validation.jsonl")
    assert len(kept) == 4 and len(rows_of(child, "validation.jsonl")) == 1
    answers = sorted(row["messages"][-1]["content"] for row in kept)
    assert answers == sorted(
        [WALL + "有问题请拨打[手机号]。", CANAL, "Hello there! Write to [邮箱].", TEA]
    )
    assert all([m["role"] for m in row["messages"]] == ["user", "assistant"] for row in kept)
    # and exactly which source lines each step removed is recorded
    assert job.result["removed_lines"] == {"0.dedup_near": [3], "1.filter_language": [6]}
    # and lineage reads both ways; the input is released
    assert (child.parent_id, child.steps) == (parent.pk, STEPS)
    readable = DatasetVersion.objects.filter(repo__in=type(repo).objects.restrict(owner.user))
    assert [c["version"] for c in lineage(parent, readable)["children"]] == [2]
    down = lineage(child, readable)
    assert down["ancestors"][0]["version"] == 1 and down["made_by_job"] == job.pk
    assert [u["kind"] for u in lineage(parent, readable)["used_by"]] == ["processing"]
    assert not DatasetUse.objects.get(version=parent).active
    assert DatasetJob.objects.filter(
        version=child, kind=JobKind.INGEST, status="succeeded"
    ).exists()


def test_no_job_can_start_on_a_version_that_failed_validation(
    owner: Any, make_dataset: Any
) -> None:
    from datasets.services.lineage import record_use
    from portal.errors import Conflict

    # given a version with a planted error on line 2
    broken = jsonl(ROWS[:1]) + "{not json\n" + jsonl(ROWS[1:2])
    repo = make_dataset(owner.user, "broken", files={"train.jsonl": broken})
    version = repo.versions.get(number=1)
    assert version.state == VersionState.INVALID
    problem = version.report["train.jsonl"]["problems"][0]
    assert (problem["line"], problem["reason"]) == (2, "invalid_json")
    # then neither a processing run nor another sub-platform's job may use it
    for start in (
        lambda: start_processing(version, owner.user, STEPS),
        lambda: record_use(version, "fine_tune", "ftjob-1"),
    ):
        try:
            start()
        except Conflict as refused:
            assert refused.code == "dataset_not_ready"
        else:
            raise AssertionError("a job started on an invalid version")
    assert not DatasetJob.objects.filter(kind=JobKind.PROCESS).exists()
    assert not DatasetUse.objects.exists()
