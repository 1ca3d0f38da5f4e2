from __future__ import annotations

import argparse
import socket

import pytest

from compute.agent.__main__ import main, parse_port_range
from compute.agent.replica import Listen


def test_port_range_is_parsed_and_checked():
    assert parse_port_range("20000-20010") == (20000, 20010)
    for bad in ("20010-20000", "80-90", "abc", "20000"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_port_range(bad)


def test_engines_listen_inside_the_port_range():
    listen = Listen("127.0.0.1", (21000, 21003))
    with socket.socket() as held:
        held.bind(("127.0.0.1", 21000))
        ports = {listen.pick_port() for _ in range(20)}
    assert ports <= {21001, 21002, 21003}


def test_agent_without_portal_or_token_exits_2(monkeypatch, capsys):
    monkeypatch.delenv("OPENMAAS_PORTAL", raising=False)
    monkeypatch.delenv("OPENMAAS_NODE_TOKEN", raising=False)
    assert main(["--token", "t"]) == 2
    assert main(["--portal", "http://127.0.0.1:9"]) == 2
    assert "required" in capsys.readouterr().err
