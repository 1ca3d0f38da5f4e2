"""The usage page: a chart and a table of the caller's own usage, in both languages."""

from __future__ import annotations

import pytest
from django.test import Client

from compute.metering.tasks import drain_usage
from tests.metering.conftest import publish, usage_event


@pytest.mark.parametrize("path", ["/usage/", "/usage/?group=hour", "/usage/?group=bogus"])
def test_usage_page_charts_own_usage(db, stream, owner, outsider, path):
    publish(stream, usage_event(owner.user.pk, model="olivia/charted"))
    publish(stream, usage_event(outsider.user.pk, model="oscar/secret"))
    drain_usage()
    client = Client()
    assert client.get(path).status_code == 302
    client.force_login(owner.user)
    page = client.get(path).content.decode()
    assert "olivia/charted" in page and "oscar/secret" not in page
    assert "vendor/chartjs/chart.umd.min.js" in page and 'id="usage-data"' in page


def test_usage_page_speaks_english_and_chinese(db, owner):
    client = Client()
    client.force_login(owner.user)
    assert "Tokens by model" not in client.get("/usage/").content.decode()
    english = client.get("/usage/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "No usage in this period yet" in english and "Export CSV" in english
    chinese = client.get("/usage/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "这段时间还没有用量" in chinese
