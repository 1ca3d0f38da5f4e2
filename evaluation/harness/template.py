"""Task templates: Jinja in a sandbox, rendered like lm-evaluation-harness renders them.

lm-eval renders ``doc_to_text`` & co. with ``StrictUndefined`` and
``keep_trailing_newline=True``; we do the same so that prompts are byte-identical, inside
a :class:`~jinja2.sandbox.SandboxedEnvironment` because task YAML is user input. A render
has a deadline (checked on every call, attribute access, operator and output chunk), a
cap on its output, a smaller ``range`` and at most two nested loops, so a hostile
template fails with :class:`TemplateError` instead of stalling a worker.
"""

from __future__ import annotations

import contextvars
import functools
import time
from collections.abc import Mapping
from typing import Any

import jinja2
import regex
from jinja2 import nodes
from jinja2.sandbox import SandboxedEnvironment

from portal.errors import PlatformError

RENDER_TIMEOUT_S = 2.0
MAX_OUTPUT_CHARS = 512 * 1024
MAX_RANGE = 10_000
MAX_LOOP_DEPTH = 2
REGEX_TIMEOUT_S = 0.5

_deadline: contextvars.ContextVar[float] = contextvars.ContextVar("template_deadline", default=0.0)


class TemplateError(PlatformError):
    """A template that does not compile, or a render that failed or ran too long."""

    code = "invalid_template"


def _check_deadline() -> None:
    deadline = _deadline.get()
    if deadline and time.monotonic() > deadline:
        raise TemplateError(f"template rendering took longer than {RENDER_TIMEOUT_S:g} s")


def _limited_range(*args: int) -> range:
    values = range(*args)
    if len(values) > MAX_RANGE:
        raise TemplateError(f"range() of more than {MAX_RANGE} items in a template")
    return values


def _regex_replace(text: str, pattern: str, repl: str, count: int = 0) -> str:
    """lm-eval's ``regex_replace`` filter, with a timeout on the user's pattern."""
    try:
        return str(regex.sub(pattern, repl, text, count=count, timeout=REGEX_TIMEOUT_S))
    except (regex.error, TimeoutError) as exc:
        raise TemplateError(f"regex_replace: {exc}") from exc


class _Sandbox(SandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _check_deadline()
        if operator == "**" and isinstance(right, int) and abs(right) > 64:
            raise TemplateError("exponent too large in a template")
        if operator == "*" and _repeat_size(left, right) > MAX_OUTPUT_CHARS:
            raise TemplateError("a repeated string or list in a template is too large")
        return super().call_binop(context, operator, left, right)

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _check_deadline()
        return super().call(__context, __obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        _check_deadline()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _check_deadline()
        return super().getitem(obj, argument)


def _repeat_size(left: Any, right: Any) -> int:
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, (str, list, tuple)) and isinstance(times, int):
            return len(seq) * times
    return 0


def _environment() -> _Sandbox:
    env = _Sandbox(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.globals["range"] = _limited_range
    env.filters["regex_replace"] = _regex_replace
    return env


_ENV = _environment()


@functools.lru_cache(maxsize=512)
def compile_template(source: str) -> jinja2.Template:
    """The compiled template; raises :class:`TemplateError` naming the line of a syntax error."""
    try:
        tree = _ENV.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"line {exc.lineno}: {exc.message}") from exc
    if _loop_depth(tree) > MAX_LOOP_DEPTH:
        raise TemplateError(f"more than {MAX_LOOP_DEPTH} nested loops in a template")
    return _ENV.from_string(source)


def _loop_depth(node: nodes.Node) -> int:
    inner = max((_loop_depth(child) for child in node.iter_child_nodes()), default=0)
    return inner + 1 if isinstance(node, nodes.For) else inner


def render(source: str, doc: Mapping[str, Any]) -> str:
    """``source`` rendered with the doc's fields as variables.

    Raises :class:`TemplateError` for a syntax error, an undefined variable, a sandbox
    violation, a render over :data:`RENDER_TIMEOUT_S` or output over :data:`MAX_OUTPUT_CHARS`.
    """
    template = compile_template(source)
    token = _deadline.set(time.monotonic() + RENDER_TIMEOUT_S)
    try:
        return _collect(template, doc)
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"undefined variable: {exc.message}") from exc
    except (jinja2.TemplateError, ArithmeticError, TypeError, ValueError) as exc:
        raise TemplateError(f"template failed: {exc}") from exc
    finally:
        _deadline.reset(token)


def _collect(template: jinja2.Template, doc: Mapping[str, Any]) -> str:
    parts: list[str] = []
    size = 0
    for chunk in template.generate(dict(doc)):
        size += len(chunk)
        if size > MAX_OUTPUT_CHARS:
            raise TemplateError(f"template output is over {MAX_OUTPUT_CHARS} characters")
        _check_deadline()
        parts.append(chunk)
    return "".join(parts)
