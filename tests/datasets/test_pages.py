"""The dataset pages through Django's test client: the hub's search, filters and sort
under the tenancy filter, a dataset's page (card, report, statistics, lineage), creating
a dataset, starring and downloading, in Chinese and in English."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from datasets import tasks
from datasets.models import DatasetJob, DatasetRepo, DatasetVersion
from datasets.services.repos import create_repo, set_star
from datasets.services.versions import LocalFile, add_local_files

CHAT_ROW = json.dumps(
    {"messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"}]},
    ensure_ascii=False,
)
BROKEN_ROW = '{"messages": [{"role": "user", "content": "缺少回答"}'


def client_of(actor: Any = None) -> Client:
    client = Client()
    if actor is not None:
        client.force_login(actor.user)
    return client


def make_repo(actor: Any, name: str, visibility: str = "public", card: str = "") -> DatasetRepo:
    return create_repo(actor.user, actor.user, name, visibility=visibility, card=card)


def names_listed(html: str) -> list[str]:
    return re.findall(r'<li class="ds-item"><a href="[^"]+"><strong>([^<]+)</strong>', html)


def ingest(repo: DatasetRepo, actor: Any, tmp_path: Path, lines: list[str]) -> DatasetVersion:
    """Upload a JSONL file and run its queued jobs (ingest, then statistics) in place."""
    source = tmp_path / "train.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    version = add_local_files(repo, actor.user, [LocalFile("train.jsonl", source)])
    while job := DatasetJob.objects.filter(version=version, status="queued").first():
        tasks.run_dataset_job(job.pk)
    version.refresh_from_db()
    return version


def test_hub_lists_public_datasets_and_hides_private_ones_from_outsiders(db, owner, outsider):
    make_repo(owner, "open-chat")
    make_repo(owner, "secret-chat", visibility="private")

    seen_by_outsider = names_listed(client_of(outsider).get("/datasets/").content.decode())
    seen_by_anon = names_listed(client_of().get("/datasets/").content.decode())
    seen_by_owner = names_listed(client_of(owner).get("/datasets/").content.decode())

    assert seen_by_outsider == seen_by_anon == ["olivia/open-chat"]
    assert sorted(seen_by_owner) == ["olivia/open-chat", "olivia/secret-chat"]


def test_hub_filters_by_task_language_license_and_search(db, owner):
    make_repo(
        owner,
        "zh-chat",
        card="---\nlicense: mit\nlanguage: [zh]\ntask_categories: [text-generation]\n---\n",
    )
    make_repo(
        owner,
        "en-qa",
        card="---\nlicense: apache-2.0\nlanguage: [en]\n"
        "task_categories: [question-answering]\n---\n",
    )
    client = client_of()

    def listed(query: str) -> list[str]:
        return names_listed(client.get(f"/datasets/?{query}").content.decode())

    assert listed("language=zh") == ["olivia/zh-chat"]
    assert listed("task=question-answering") == ["olivia/en-qa"]
    assert listed("license=mit") == ["olivia/zh-chat"]
    assert listed("q=qa") == ["olivia/en-qa"]
    assert listed("language=zh&license=apache-2.0") == []
    facets = client.get("/datasets/").content.decode()
    assert '<option value="text-generation"' in facets and '<option value="en"' in facets


def test_hub_sorts_by_stars_downloads_and_updated(db, owner, outsider):
    starred = make_repo(owner, "starred")
    downloaded = make_repo(owner, "downloaded")
    newest = make_repo(owner, "newest")
    set_star(outsider.user, starred, True)
    DatasetRepo.objects.filter(pk=downloaded.pk).update(download_count=9)
    newest.save()  # touches updated_at last
    client = client_of()

    def first(sort: str) -> str:
        return names_listed(client.get(f"/datasets/?sort={sort}").content.decode())[0]

    assert first("stars") == "olivia/starred"
    assert first("downloads") == "olivia/downloaded"
    assert first("updated") == "olivia/newest"


def test_hub_pages_through_many_datasets(db, owner):
    for n in range(23):
        make_repo(owner, f"set-{n:02d}")
    client = client_of()
    first = names_listed(client.get("/datasets/?sort=updated").content.decode())
    second_html = client.get("/datasets/?sort=updated&page=2").content.decode()
    assert len(first) == 20 and len(names_listed(second_html)) == 3
    assert "sort=updated&amp;page=1" in second_html


def test_private_dataset_page_is_404_for_outsiders_and_visible_to_owner(db, owner, outsider):
    make_repo(owner, "secret", visibility="private")
    assert client_of(outsider).get("/datasets/olivia/secret/").status_code == 404
    assert client_of().get("/datasets/olivia/secret/").status_code == 404
    assert client_of(owner).get("/datasets/olivia/secret/").status_code == 200


def test_card_markdown_is_rendered_without_raw_html_or_script_links(db, owner):
    card = (
        "# 中文对话数据\n\n**粗体** [主页](https://example.org) [坏](javascript:alert(1))\n\n"
        "<script>alert('x')</script>\n\n<img src=x onerror=alert(2)>\n"
    )
    make_repo(owner, "carded", card=card)
    html = client_of().get("/datasets/olivia/carded/").content.decode()
    rendered = html.split('id="ds-card">', 1)[1].split("</div>", 1)[0]
    assert "<h1>中文对话数据</h1>" in rendered and "<strong>粗体</strong>" in rendered
    assert '<a href="https://example.org">主页</a>' in rendered
    assert "<script>" not in rendered and "<img" not in rendered
    assert 'href="javascript' not in rendered
    assert "&lt;script&gt;" in rendered


@pytest.mark.parametrize(
    ("language", "words"),
    [
        ("zh-hans", ["数据集卡片", "版本", "上传新版本"]),
        ("en", ["Dataset card", "Versions", "Upload a new version"]),
    ],
)
def test_pages_render_in_both_languages(db, owner, language, words):
    make_repo(owner, "bilingual")
    client = client_of(owner)
    detail = client.get(
        "/datasets/olivia/bilingual/", HTTP_ACCEPT_LANGUAGE=language
    ).content.decode()
    hub = client.get("/datasets/", HTTP_ACCEPT_LANGUAGE=language).content.decode()
    for word in words:
        assert word in detail
    assert ("数据集" if language == "zh-hans" else "Datasets") in hub


def test_dataset_page_shows_report_with_line_numbers_for_invalid_version(db, owner, tmp_path):
    repo = make_repo(owner, "broken")
    version = ingest(repo, owner, tmp_path, [CHAT_ROW, CHAT_ROW, BROKEN_ROW])
    assert version.state == "invalid"

    html = client_of(owner).get("/datasets/olivia/broken/?version=1").content.decode()
    report = html.split('id="ds-report"', 1)[1]
    assert re.search(r'<td class="ds-line">3</td>', report)
    assert "<code>invalid_json</code>" in report


def test_dataset_page_shows_statistics_histograms_and_viewer_of_ready_version(db, owner, tmp_path):
    repo = make_repo(owner, "good")
    version = ingest(repo, owner, tmp_path, [CHAT_ROW] * 3)
    assert version.state == "ready" and version.stats

    html = client_of().get("/datasets/olivia/good/").content.decode()
    assert 'id="ds-stats"' in html and 'id="hist-0"' in html
    assert '"bin_edges"' in html.split('id="ds-charts"', 1)[1]
    assert 'data-api="/api/datasets/olivia/good/versions/1/viewer"' in html
    assert '<option value="train.jsonl">' in html


def test_unknown_version_is_404(db, owner):
    make_repo(owner, "empty")
    assert client_of(owner).get("/datasets/olivia/empty/?version=7").status_code == 404


def test_new_dataset_form_creates_a_repo_under_the_user(db, owner):
    client = client_of(owner)
    response = client.post(
        "/datasets/new/",
        {"owner": "olivia", "name": "fresh", "visibility": "private", "license": "mit"},
    )
    assert response.status_code == 302 and response["Location"] == "/datasets/olivia/fresh/"
    repo = DatasetRepo.objects.get(namespace="olivia", name="fresh")
    assert (repo.visibility, repo.license, repo.created_by) == ("private", "mit", owner.user)
    again = client.post(
        "/datasets/new/", {"owner": "olivia", "name": "fresh", "visibility": "private"}
    )
    assert again.status_code == 200 and "errorlist" in again.content.decode()
    assert DatasetRepo.objects.filter(name="fresh").count() == 1


def test_new_dataset_form_refuses_an_owner_the_user_may_not_write(db, owner, outsider):
    response = client_of(outsider).post(
        "/datasets/new/", {"owner": "olivia", "name": "hijack", "visibility": "public"}
    )
    assert response.status_code == 200
    assert not DatasetRepo.objects.filter(name="hijack").exists()


def test_upload_panel_only_for_writers(db, owner, outsider):
    make_repo(owner, "shared")
    assert 'id="ds-upload"' in client_of(owner).get("/datasets/olivia/shared/").content.decode()
    assert (
        'id="ds-upload"' not in client_of(outsider).get("/datasets/olivia/shared/").content.decode()
    )


def test_star_button_stars_and_unstars(db, owner, outsider):
    repo = make_repo(owner, "likeable")
    client = client_of(outsider)
    assert client.post("/datasets/olivia/likeable/star/", {"starred": "1"}).status_code == 302
    repo.refresh_from_db()
    assert repo.star_count == 1
    client.post("/datasets/olivia/likeable/star/", {"starred": "0"})
    repo.refresh_from_db()
    assert repo.star_count == 0


def test_outsider_cannot_star_a_private_dataset(db, owner, outsider):
    repo = make_repo(owner, "hidden", visibility="private")
    response = client_of(outsider).post("/datasets/olivia/hidden/star/", {"starred": "1"})
    assert response.status_code == 404
    repo.refresh_from_db()
    assert repo.star_count == 0


def test_download_link_redirects_to_a_presigned_url_and_counts(db, owner, tmp_path):
    repo = make_repo(owner, "downloadable")
    ingest(repo, owner, tmp_path, [CHAT_ROW])
    response = client_of().get("/datasets/olivia/downloadable/download/1/train.jsonl")
    assert response.status_code == 302 and "X-Amz-Signature" in response["Location"]
    repo.refresh_from_db()
    assert repo.download_count == 1
    assert client_of().get("/datasets/olivia/downloadable/download/1/nope.jsonl").status_code == 404


def test_download_of_a_private_dataset_is_404_for_outsiders(db, owner, outsider, tmp_path):
    repo = make_repo(owner, "private-data", visibility="private")
    ingest(repo, owner, tmp_path, [CHAT_ROW])
    url = "/datasets/olivia/private-data/download/1/train.jsonl"
    assert client_of(outsider).get(url).status_code == 404
