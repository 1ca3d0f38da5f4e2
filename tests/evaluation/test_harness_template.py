"""Task templates render like lm-eval's and cannot escape or stall the worker."""

from __future__ import annotations

import time

import pytest

from evaluation.harness.template import TemplateError, compile_template, render


def test_templates_render_doc_fields_and_keep_the_trailing_newline() -> None:
    assert render("问题：{{ question }}\n", {"question": "1+1"}) == "问题：1+1\n"
    assert render("{{ choices }}", {"choices": ["甲", "乙"]}) == "['甲', '乙']"
    assert render("{{ text | regex_replace('\\\\s+', ' ') }}", {"text": "a \n b"}) == "a b"


def test_an_undefined_field_is_an_error_not_an_empty_string() -> None:
    with pytest.raises(TemplateError, match="undefined variable"):
        render("{{ question }} {{ missing }}", {"question": "q"})


def test_the_sandbox_refuses_attribute_escapes() -> None:
    with pytest.raises(TemplateError):
        render("{{ x.__class__.__mro__[1].__subclasses__() }}", {"x": ""})


def test_huge_outputs_and_repetitions_are_refused() -> None:
    with pytest.raises(TemplateError, match="too large"):
        render("{{ 'x' * 10000000 }}", {})
    with pytest.raises(TemplateError, match="range"):
        render("{% for i in range(1000000) %}x{% endfor %}", {})
    with pytest.raises(TemplateError, match="over"):
        render("{% for i in range(10000) %}{% for j in range(100) %}x{% endfor %}{% endfor %}", {})


def test_deeply_nested_loops_are_refused_at_compile_time() -> None:
    with pytest.raises(TemplateError, match="nested loops"):
        compile_template("{% for a in x %}{% for b in x %}{% for c in x %}{% endfor %}"
                         "{% endfor %}{% endfor %}")  # fmt: skip


def test_a_slow_render_stops_at_the_deadline() -> None:
    started = time.monotonic()

    with pytest.raises(TemplateError, match="longer than"):
        render("{% for i in range(10000) %}{% for j in range(10000) %}{% set k = i.real %}"
               "{% endfor %}{% endfor %}", {})  # fmt: skip

    assert time.monotonic() - started < 10
