"""The benchmark harness's own logic: the stub's usage chunk, the report, the
LiteLLM proxy's offline setup. Fast; starts no services and measures nothing."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from compute.agent.procs import wait_for
from tests.bench import litellm_proxy
from tests.bench.gateway import (
    DIRECT,
    HEADING,
    LITELLM,
    PRELIMINARY,
    Cell,
    Facts,
    aims,
    gateway_name,
    summary,
    write_section,
)
from tests.bench.stub_engine import STREAM_EVENTS, STREAM_EVENTS_WITH_USAGE, stream_kind

ON, OFF = gateway_name(1, True), gateway_name(1, False)


def test_stub_sends_a_usage_chunk_only_when_the_request_asks_for_it() -> None:
    plain = json.dumps({"stream": True}).encode()
    asked = json.dumps({"stream": True, "stream_options": {"include_usage": True}}).encode()
    assert stream_kind(b'{"stream": false}') is None
    assert stream_kind(plain) == STREAM_EVENTS
    events = stream_kind(asked)
    assert events == STREAM_EVENTS_WITH_USAGE
    assert b'"usage"' in b"".join(events or [])


def cells(on_rps: float, off_rps: float, lite_rps: float) -> list[Cell]:
    rows = []
    for stream in (False, True):
        rows += [
            Cell(DIRECT, stream, 1, 8000, 0.10, 0.20, 0),
            Cell(DIRECT, stream, 64, 40000, 1.0, 3.0, 0),
            Cell(ON, stream, 1, 2000, 0.60, 1.00, 0),
            Cell(ON, stream, 64, on_rps, 20.0, 30.0, 0),
            Cell(OFF, stream, 1, 2100, 0.50, 0.90, 0),
            Cell(OFF, stream, 64, off_rps, 18.0, 28.0, 0),
            Cell(LITELLM, stream, 1, 50, 17.10, 30.0, 0),
            Cell(LITELLM, stream, 64, lite_rps, 1000.0, 1500.0, 0),
        ]
    return rows


def facts_in_path() -> Facts:
    return Facts(ratelimit_header={ON: "1000000000"}, metered={ON: (100, 100), OFF: (0, 100)})


def test_aims_give_the_ratio_to_litellm_the_added_p50_and_the_cost_of_limits() -> None:
    lines = "\n".join(aims(cells(3600, 4000, 60), ON, OFF, facts_in_path()))
    assert "60.0× (3,600 ÷ 60; aim ≥ 40×: met)" in lines
    assert "added p50 at 1 client, not streamed: +0.50 ms (aim ≤ 1 ms: met" in lines
    assert "on is 10.0% below off (aim ≤ 15% slower: met)" in lines
    assert "not valid" not in lines


def test_aims_say_missed_when_limits_cost_too_much_or_litellm_is_close() -> None:
    lines = "\n".join(aims(cells(3000, 4000, 100), ON, OFF, facts_in_path()))
    assert "30.0× (3,000 ÷ 100; aim ≥ 40×: missed)" in lines
    assert "on is 25.0% below off (aim ≤ 15% slower: missed)" in lines


def test_on_off_comparison_is_flagged_when_limits_were_not_in_the_path() -> None:
    lines = "\n".join(aims(cells(3600, 4000, 60), ON, OFF, Facts()))
    assert "not valid: no x-ratelimit headers, no usage events with limits on" in lines


def test_summary_has_one_row_per_path_with_added_latency() -> None:
    rows = summary(cells(3600, 4000, 60))
    assert len(rows) == 2 + 4
    assert f"| {ON} | 3,600 | 3,600 | 0.50 / 0.80 | 0.50 / 0.80 |" in rows


def test_a_new_section_goes_on_top_and_older_ones_are_kept(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nHow to run.\n\n## Old run\n\nold numbers\n")
    write_section(doc, "## New run (2026-11-23)\n\nnew numbers\n")
    write_section(doc, "## New run (2026-11-23)\n\nnewer numbers\n")
    assert doc.read_text() == (
        "# Benchmarks\n\nHow to run.\n\n## New run (2026-11-23)\n\nnewer numbers\n\n"
        "## Old run\n\nold numbers\n"
    )


def test_a_final_run_replaces_a_preliminary_one_of_another_day(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    final = HEADING.format(date="2026-11-20")
    early = HEADING.format(date="2026-11-23")
    doc.write_text(f"# Benchmarks\n\n{early}\n\n{PRELIMINARY} (3 s per row)\n\n{final}\n\nfinal\n")
    write_section(doc, f"{HEADING.format(date='2026-11-24')}\n\nnew numbers\n")
    text = doc.read_text()
    assert early not in text
    assert text.index("2026-11-24") < text.index(final)


def test_litellm_config_routes_one_model_to_the_stub_with_a_master_key() -> None:
    config = json.loads(litellm_proxy.config_yaml("http://127.0.0.1:9999"))
    (model,) = config["model_list"]
    assert model["model_name"] == litellm_proxy.MODEL
    assert model["litellm_params"]["model"] == f"openai/{litellm_proxy.MODEL}"
    assert model["litellm_params"]["api_base"] == "http://127.0.0.1:9999/v1"
    assert config["general_settings"] == {"master_key": litellm_proxy.MASTER_KEY}
    assert "database_url" not in config["general_settings"]


def test_litellm_runs_offline_and_any_outbound_call_is_caught_by_the_trap() -> None:
    trap = litellm_proxy.ProxyTrap()
    try:
        env = litellm_proxy.offline_env({"HTTPS_PROXY": "http://corp:3128", "PATH": "/bin"}, trap)
        assert env["HTTPS_PROXY"] == env["https_proxy"] == trap.url
        assert env["NO_PROXY"] == "127.0.0.1,localhost"
        assert env["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": trap.url}))
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            opener.open("http://example.invalid/cost-map.json", timeout=5)
        wait_for(lambda: trap.attempts, timeout_s=5, what="the trap to record the attempt")
        assert trap.attempts == ["GET http://example.invalid/cost-map.json HTTP/1.1"]
    finally:
        trap.close()
