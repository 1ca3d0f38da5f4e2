"""The dataset hub's REST API as its users meet it: create a repo, upload, watch the
ingest, browse rows, process, star, delete — and what others may not see or do."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from datasets.models import DatasetJob, DatasetVersion, UseKind
from datasets.services.lineage import record_use, release_use
from portal.models.jobs import JobStatus
from tests.datasets.conftest import CHAT_JSONL, run_queued_jobs

pytestmark = pytest.mark.django_db

API = "/api/datasets/"
CARD = """---
license: apache-2.0
language:
- zh
- en
tags:
- chat
task_categories:
- text-generation
---
# Chat pairs
"""


def repo_url(repo: Any, rest: str = "") -> str:
    return f"{API}{repo.namespace}/{repo.name}/{rest}"


def version_url(repo: Any, number: int, rest: str = "") -> str:
    return repo_url(repo, f"versions/{number}/{rest}")


def chat_file(name: str = "train.jsonl", text: str = CHAT_JSONL) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, text.encode(), content_type="application/x-ndjson")


def user_messages(page: dict[str, Any]) -> list[str]:
    """The first message of each row of a viewer page (its ``messages`` column)."""
    return [row["row"]["messages"][0]["content"] for row in page["rows"]]


def test_chat_jsonl_uploaded_through_the_api_is_ingested_and_browsable(owner):
    client = owner.client()
    # Given a dataset created through the API
    created = client.post(API, {"name": "chat", "card": CARD}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["id"] == "olivia/chat"
    # When a small chat JSONL is uploaded as a version and its ingest runs
    upload = client.post(
        f"{API}olivia/chat/versions/",
        {"files": [chat_file()], "message": "first"},
        format="multipart",
    )
    assert upload.status_code == 201, upload.content
    assert upload.json()["state"] == "ingesting"
    assert [job.kind for job in run_queued_jobs()] == ["ingest", "statistics"]
    # Then the version is ready, valid, and its file has a hash, split and rows
    version = client.get(f"{API}olivia/chat/versions/1/").json()
    assert (version["state"], version["format"], version["rows"]) == ("ready", "chat", 3)
    assert version["report"]["train.jsonl"]["valid"] is True
    assert version["files"][0]["split"] == "train" and len(version["files"][0]["sha256"]) == 64
    assert version["stats"]["files"]["train.jsonl"]
    # And the viewer pages, searches and filters its rows
    base = f"{API}olivia/chat/versions/1/viewer/"
    rows = client.get(base + "rows/", {"offset": 1, "length": 2}).json()
    assert user_messages(rows) == ["What is the capital of France?", "Tell me a joke"]
    assert rows["num_rows_total"] == 3
    found = client.get(base + "search/", {"query": "天气"}).json()
    assert user_messages(found) == ["你好，今天天气怎么样？"]
    kept = client.get(base + "filter/", {"where": "score >= 3", "orderby": "score DESC"}).json()
    assert user_messages(kept) == ["What is the capital of France?", "你好，今天天气怎么样？"]
    splits = client.get(base + "splits/").json()["splits"]
    assert splits == [
        {
            "dataset": "olivia/chat",
            "config": "default",
            "split": "train",
            "file": "train.jsonl",
            "num_rows": 3,
        }
    ]
    stats = client.get(base + "statistics/").json()
    assert stats["file"] == "train.jsonl" and stats["version_stats"] is not None


def test_presigned_multipart_upload_end_to_end(owner, make_dataset):
    # Given a repo and an upload plan for two files
    repo = make_dataset(owner.user, "big")
    client = owner.client()
    data = {
        "train.jsonl": CHAT_JSONL.encode(),
        "test.jsonl": CHAT_JSONL.splitlines(keepends=True)[0].encode(),
    }
    files = [{"path": path, "size": len(body)} for path, body in data.items()]
    plan = client.post(repo_url(repo, "uploads/"), {"files": files}, format="json")
    assert plan.status_code == 201, plan.content
    number = plan.json()["version"]
    # When each part is PUT to its presigned URL and the ETags are sent back
    etags: dict[str, list[str]] = {}
    for item in plan.json()["files"]:
        body = data[item["path"]]
        for index, url in enumerate(item["urls"]):
            part = body[index * item["part_size"] : (index + 1) * item["part_size"]]
            response = httpx.put(url, content=part)
            assert response.status_code == 200, response.text
            etags.setdefault(item["path"], []).append(response.headers["ETag"])
    done = client.post(version_url(repo, number, "complete/"), {"parts": etags}, format="json")
    assert done.status_code == 200, done.content
    run_queued_jobs()
    # Then the version is ingested from the uploaded bytes, one file per split
    version = client.get(version_url(repo, number)).json()
    assert version["state"] == "ready"
    assert {f["path"]: (f["split"], f["rows"]) for f in version["files"]} == {
        "test.jsonl": ("test", 1),
        "train.jsonl": ("train", 3),
    }
    # And a download URL serves exactly those bytes
    link = client.get(version_url(repo, number, "files/train.jsonl/download/")).json()
    assert httpx.get(link["url"]).content == data["train.jsonl"]


def test_completing_with_missing_parts_is_400_and_keeps_the_upload(owner, make_dataset):
    repo = make_dataset(owner.user, "partial")
    client = owner.client()
    files = [{"path": "train.jsonl", "size": 100}]
    number = client.post(repo_url(repo, "uploads/"), {"files": files}, format="json").json()[
        "version"
    ]
    response = client.post(version_url(repo, number, "complete/"), {"parts": {}}, format="json")
    assert response.status_code == 400
    assert response.json()["param"] == "parts.train.jsonl"
    assert DatasetVersion.objects.get(repo=repo, number=number).state == "uploading"


def test_outsider_and_anonymous_get_404_for_everything_of_a_private_dataset(
    owner, outsider, anon, make_dataset
):
    # Given a private dataset with an ingested version and its jobs
    repo = make_dataset(owner.user, "secret", files={"train.jsonl": CHAT_JSONL})
    job = DatasetJob.objects.filter(repo=repo).first()
    urls = [
        repo_url(repo),
        repo_url(repo, "versions/"),
        repo_url(repo, "jobs/"),
        version_url(repo, 1),
        version_url(repo, 1, "files/train.jsonl/download/"),
        version_url(repo, 1, "lineage/"),
        version_url(repo, 1, "viewer/splits/"),
        version_url(repo, 1, "viewer/rows/"),
        version_url(repo, 1, "viewer/search/?query=Paris"),
        version_url(repo, 1, "viewer/filter/?where=score>1"),
        version_url(repo, 1, "viewer/statistics/"),
        f"{API}jobs/{job.pk}/",
        f"{API}jobs/{job.pk}/events/",
    ]
    for client in (outsider.client(), anon):
        # Then every read is a 404, and the list does not show it
        for url in urls:
            assert client.get(url).status_code == 404, url
        assert client.get(API).json()["count"] == 0
    # And writes are 404 for the outsider too (the dataset's existence does not leak)
    intruder = outsider.client()
    assert intruder.delete(version_url(repo, 1)).status_code == 404
    assert intruder.post(f"{API}jobs/{job.pk}/cancel/").status_code == 404
    assert intruder.post(repo_url(repo, "star/")).status_code == 404
    assert (
        intruder.patch(repo_url(repo), {"visibility": "public"}, format="json").status_code == 404
    )
    assert DatasetVersion.objects.filter(repo=repo).exists()


def test_teammate_reads_an_org_dataset_but_may_not_change_it(owner, org, teammate, make_dataset):
    # Given an organisation dataset visible to its members
    repo = make_dataset(owner.user, "team", visibility="org", owner=org)
    client = teammate.client()
    # Then a member reads it, but a write is a 403 (it is visible, not theirs to change)
    assert client.get(repo_url(repo)).status_code == 200
    response = client.patch(repo_url(repo), {"description": "mine"}, format="json")
    assert response.status_code == 403
    upload = client.post(repo_url(repo, "versions/"), {"files": [chat_file()]}, format="multipart")
    assert upload.status_code == 403
    assert not DatasetVersion.objects.filter(repo=repo).exists()


def test_owner_creates_under_an_org_they_manage_but_not_under_another_user(owner, org, outsider):
    client = owner.client()
    made = client.post(API, {"owner": "acme-lab", "name": "shared"}, format="json")
    assert made.status_code == 201 and made.json()["namespace"] == "acme-lab"
    refused = client.post(API, {"owner": "oscar", "name": "theirs"}, format="json")
    assert refused.status_code == 403
    taken = client.post(API, {"owner": "acme-lab", "name": "shared"}, format="json")
    assert taken.status_code == 409


def test_a_version_in_use_cannot_be_deleted_until_released(owner, make_dataset):
    # Given a ready version that a fine-tuning job reads
    repo = make_dataset(owner.user, "used", files={"train.jsonl": CHAT_JSONL})
    version = repo.versions.get(number=1)
    record_use(version, UseKind.FINE_TUNE, "ftjob-1")
    client = owner.client()
    # Then deleting it is refused with 409 dataset_in_use
    refused = client.delete(version_url(repo, 1))
    assert (refused.status_code, refused.json()["code"]) == (409, "dataset_in_use")
    assert client.get(version_url(repo, 1, "lineage/")).json()["used_by"][0]["ref"] == "ftjob-1"
    # And once the job releases it, the version can be deleted
    release_use(version, UseKind.FINE_TUNE, "ftjob-1")
    assert client.delete(version_url(repo, 1)).status_code == 204
    assert client.get(version_url(repo, 1)).status_code == 404


def test_stars_are_counted_once_per_user_and_sort_the_list(owner, teammate, make_dataset):
    # Given two public datasets
    liked = make_dataset(owner.user, "liked", visibility="public")
    make_dataset(owner.user, "plain", visibility="public")
    # When two users star one (one of them twice) and one unstars
    for actor in (owner, teammate, teammate):
        assert actor.client().post(repo_url(liked, "star/")).status_code == 200
    assert owner.client().get(repo_url(liked)).json()["starred"] is True
    after = owner.client().delete(repo_url(liked, "star/")).json()
    # Then the count follows, and sorting by stars puts it first
    assert (after["stars"], after["starred"]) == (1, False)
    listed = owner.client().get(API, {"sort": "stars"}).json()["results"]
    assert [item["name"] for item in listed] == ["liked", "plain"]


def test_card_front_matter_sets_license_languages_and_tags_and_filters_find_it(owner):
    client = owner.client()
    made = client.post(API, {"name": "carded", "card": CARD, "visibility": "public"}, format="json")
    body = made.json()
    assert (body["license"], body["languages"], body["tags"]) == (
        "apache-2.0",
        ["zh", "en"],
        ["chat"],
    )
    assert body["card"].startswith("# Chat pairs")
    client.post(API, {"name": "other", "visibility": "public"}, format="json")

    def names(**query: str) -> list[str]:
        return [item["name"] for item in client.get(API, query).json()["results"]]

    assert names(language="zh") == ["carded"]
    assert names(license="apache-2.0", task_categories="text-generation") == ["carded"]
    assert names(search="othe") == ["other"]
    bad = client.patch(f"{API}olivia/other/", {"card": "---\n[unclosed\n---\n"}, format="json")
    assert (bad.status_code, bad.json()["param"]) == (400, "card")


def test_processing_with_a_bad_step_is_400_naming_it(owner, make_dataset):
    repo = make_dataset(owner.user, "proc", files={"train.jsonl": CHAT_JSONL})
    steps = [{"step": "dedup_exact"}, {"step": "dedup_near", "threshold": 7}]
    response = owner.client().post(
        version_url(repo, 1, "process/"), {"steps": steps}, format="json"
    )
    assert response.status_code == 400, response.content
    assert response.json()["param"].startswith("steps[1]")
    assert not DatasetJob.objects.filter(repo=repo, kind="process").exists()


def test_processing_makes_a_child_version_with_lineage(owner, make_dataset):
    twice = CHAT_JSONL + CHAT_JSONL.splitlines(keepends=True)[0]
    repo = make_dataset(owner.user, "dups", files={"train.jsonl": twice})
    client = owner.client()
    started = client.post(
        version_url(repo, 1, "process/"), {"steps": [{"step": "dedup_exact"}]}, format="json"
    )
    assert started.status_code == 202, started.content
    run_queued_jobs()
    job = client.get(f"{API}jobs/{started.json()['id']}/").json()
    assert (job["status"], job["output_version"]) == ("succeeded", 2)
    child = client.get(version_url(repo, 2)).json()
    assert (child["parent"], child["rows"], child["steps"][0]["step"]) == (1, 3, "dedup_exact")
    assert client.get(version_url(repo, 1, "lineage/")).json()["children"][0]["version"] == 2


def test_viewer_and_jobs_wait_for_a_version_still_ingesting(owner, make_dataset):
    repo = make_dataset(owner.user, "slow", files={"train.jsonl": CHAT_JSONL}, ingest=False)
    client = owner.client()
    viewer = client.get(version_url(repo, 1, "viewer/rows/"))
    assert (viewer.status_code, viewer.json()["code"]) == (409, "not_ready")
    process = client.post(
        version_url(repo, 1, "process/"), {"steps": [{"step": "dedup_exact"}]}, format="json"
    )
    assert process.status_code == 409


def test_an_invalid_version_is_browsable_with_the_rows_that_parsed(owner, make_dataset):
    broken = CHAT_JSONL + "{not json\n"
    repo = make_dataset(owner.user, "broken", files={"train.jsonl": broken})
    client = owner.client()
    version = client.get(version_url(repo, 1)).json()
    assert version["state"] == "invalid"
    problem = version["report"]["train.jsonl"]["problems"][0]
    assert (problem["line"], problem["reason"]) == (4, "invalid_json")
    rows = client.get(version_url(repo, 1, "viewer/rows/")).json()
    assert rows["num_rows_total"] == 3


def test_bad_viewer_queries_are_400_and_unknown_versions_404(owner, make_dataset):
    repo = make_dataset(owner.user, "q", files={"train.jsonl": CHAT_JSONL})
    client = owner.client()
    bad_where = client.get(version_url(repo, 1, "viewer/filter/"), {"where": "1=1; DROP"})
    assert bad_where.status_code == 400
    unknown_column = client.get(version_url(repo, 1, "viewer/filter/"), {"where": "nope = 1"})
    assert unknown_column.status_code == 400
    huge = client.get(version_url(repo, 1, "viewer/rows/"), {"offset": 10**30})
    assert huge.status_code == 400
    far = client.get(version_url(repo, 1, "viewer/rows/"), {"offset": 2**31 - 1}).json()
    assert far["rows"] == []
    assert client.get(version_url(repo, 99)).status_code == 404
    assert client.get(version_url(repo, 10**20)).status_code == 404
    assert client.get(version_url(repo, 1, "viewer/rows/"), {"file": "x"}).status_code == 404


def test_an_upload_over_the_limit_is_413_before_anything_is_stored(owner, make_dataset, settings):
    settings.DATASET_MAX_FILE_BYTES = 100
    repo = make_dataset(owner.user, "small")
    response = owner.client().post(
        repo_url(repo, "versions/"), {"files": [chat_file()]}, format="multipart"
    )
    assert (response.status_code, response.json()["code"]) == (413, "file_too_large")
    assert not DatasetVersion.objects.filter(repo=repo).exists()


def test_cancelling_a_queued_job_cancels_it_once(owner, make_dataset):
    # Given a version whose ingest is still queued
    repo = make_dataset(owner.user, "queued", files={"train.jsonl": CHAT_JSONL}, ingest=False)
    job = DatasetJob.objects.get(repo=repo)
    client = owner.client()
    # When the owner cancels it
    cancelled = client.post(f"{API}jobs/{job.pk}/cancel/")
    # Then it is cancelled, the log says so, and a second cancel is a conflict
    assert (cancelled.status_code, cancelled.json()["status"]) == (200, JobStatus.CANCELLED)
    events = client.get(f"{API}jobs/{job.pk}/events/").json()["results"]
    assert events[-1]["new_status"] == "cancelled"
    newer = client.get(f"{API}jobs/{job.pk}/events/", {"after": events[0]["id"]}).json()
    assert [e["id"] for e in newer["results"]] == [e["id"] for e in events[1:]]
    assert client.post(f"{API}jobs/{job.pk}/cancel/").status_code == 409


def test_statistics_rerun_checks_the_tokenizer_model_first(owner, make_dataset):
    repo = make_dataset(owner.user, "stats", files={"train.jsonl": CHAT_JSONL})
    client = owner.client()
    url = version_url(repo, 1, "statistics/")
    missing = client.post(url, {"tokenizer": "nobody/none"}, format="json")
    assert (missing.status_code, missing.json()["param"]) == (404, "tokenizer")
    again = client.post(url, {}, format="json")
    assert again.status_code == 202 and again.json()["kind"] == "statistics"


def test_deleting_a_repo_removes_its_versions(owner, make_dataset):
    repo = make_dataset(owner.user, "gone", files={"train.jsonl": CHAT_JSONL})
    versions = list(repo.versions.values_list("pk", flat=True))
    assert owner.client().delete(repo_url(repo)).status_code == 204
    assert owner.client().get(repo_url(repo)).status_code == 404
    assert versions and not DatasetVersion.objects.filter(pk__in=versions).exists()
