"""Task and suite specs: YAML in, frozen dataclasses out, errors that name the field.

The task format follows lm-evaluation-harness (``doc_to_text``, ``doc_to_target``,
``doc_to_choice``, ``target_delimiter``, ``fewshot_delimiter``, ``num_fewshot``…); see
``/work/eval-contract.md`` §1. :func:`parse_task` and :func:`parse_suite` raise
:class:`SpecError` whose message starts with the field path (``metrics[1].name: …``) and
ends with the YAML line where one is known. Size and alias expansion are capped before
anything else so a hostile document cannot exhaust a worker.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import yaml

from evaluation.harness.ahp import ahp_weights
from evaluation.harness.filters import FILTERS, Option, Plugin
from evaluation.harness.metrics import METRICS, make_metric
from evaluation.harness.template import TemplateError, compile_template
from portal.errors import PlatformError

MAX_DOCUMENT_BYTES = 256 * 1024
MAX_NODES = 20_000
MAX_DEPTH = 32
NAME_PATTERN = r"[a-z0-9][a-z0-9_.-]{0,63}"
OUTPUT_TYPES = ("multiple_choice", "generate_until", "perplexity", "refusal", "judge")
LAYOUTS = ("mc_jsonl", "ceval_csv", "cmmlu_csv", "mmlu_csv", "lm_eval_jsonl", "jsonl", "csv")
AGGREGATIONS = ("micro", "macro", "weighted")
DEFAULT_METRICS: dict[str, tuple[str, ...]] = {
    "multiple_choice": ("acc", "acc_norm"),
    "generate_until": ("exact_match",),
    "perplexity": ("word_perplexity", "byte_perplexity", "bits_per_byte"),
    "refusal": ("refusal_rate", "over_refusal_rate", "refused"),
    "judge": ("judge_score",),
}


class SpecError(PlatformError):
    """A task or suite document that cannot be used; ``param`` is the field path."""

    code = "invalid_task"


@dataclass(frozen=True)
class DatasetSpec:
    builtin: str | None = None
    hub: str | None = None
    file: str | None = None
    split: str = "test"
    layout: str | None = None


@dataclass(frozen=True)
class GenerationSpec:
    max_tokens: int = 256
    until: tuple[str, ...] = ()
    temperature: float = 0.0
    chat: bool = False


@dataclass(frozen=True)
class PluginSpec:
    """A filter or metric entry: its registry name and options."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class JudgeSpec:
    model: str
    rubric: str
    scale: tuple[float, float] = (1.0, 10.0)
    prompt: str | None = None  # Jinja over question, answer, reference, rubric, scale_*


@dataclass(frozen=True)
class TaskSpec:
    task: str
    dataset: DatasetSpec
    output_type: str
    doc_to_text: str = ""
    doc_to_target: str | int | tuple[str, ...] = ""
    doc_to_choice: str | tuple[str, ...] | None = None
    description: str = ""
    tags: tuple[str, ...] = ()
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    description_prefix: str = ""
    num_fewshot: int = 0
    fewshot_seed: int = 1234
    fewshot_split: str | None = None
    generation: GenerationSpec = GenerationSpec()
    filters: tuple[PluginSpec, ...] = ()
    metrics: tuple[PluginSpec, ...] = ()
    judge: JudgeSpec | None = None
    limit: int | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict that :meth:`from_json` (and :func:`parse_task`) reads back."""
        return _jsonable(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TaskSpec:
        """The spec stored by :meth:`to_json`, validated again."""
        return _task_from(_Ctx({}, "invalid_task"), data)

    @property
    def primary_metric(self) -> str:
        return self.metrics[0].name


@dataclass(frozen=True)
class SuiteTaskSpec:
    task: str  # "name" or "namespace/name"
    weight: float = 1.0


@dataclass(frozen=True)
class SuiteSpec:
    suite: str
    tasks: tuple[SuiteTaskSpec, ...]
    description: str = ""
    aggregation: str = "macro"
    ahp_matrix: tuple[tuple[float, ...], ...] | None = None

    def weights(self) -> dict[str, float]:
        """Per-task weights normalised to sum to 1 (AHP weights when a matrix is given)."""
        if self.ahp_matrix is not None:
            raw = list(ahp_weights(self.ahp_matrix).weights)
        else:
            raw = [t.weight for t in self.tasks]
        total = sum(raw)
        return {t.task: w / total for t, w in zip(self.tasks, raw, strict=True)}

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict that :meth:`from_json` (and :func:`parse_suite`) reads back."""
        return _jsonable(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SuiteSpec:
        return _suite_from(_Ctx({}, "invalid_suite"), data)


def spec_sha256(spec: TaskSpec | SuiteSpec) -> str:
    """sha256 of the spec's canonical JSON (sorted keys, no spaces, UTF-8)."""
    text = json.dumps(spec.to_json(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def parse_task(text: str, *, name: str | None = None) -> TaskSpec:
    """The task in ``text``; ``name`` fills ``task`` when the document has none.

    Raises :class:`SpecError` (code ``invalid_task``) naming the field and reason.
    """
    ctx = _Ctx({}, "invalid_task")
    data = _load(ctx, text)
    if name is not None and isinstance(data, dict):
        data.setdefault("task", name)
    return _task_from(ctx, data)


def parse_suite(text: str) -> SuiteSpec:
    """The suite in ``text``; raises :class:`SpecError` (code ``invalid_suite``)."""
    ctx = _Ctx({}, "invalid_suite")
    return _suite_from(ctx, _load(ctx, text))


# --- errors and field readers -------------------------------------------------------------


@dataclass
class _Ctx:
    lines: dict[str, int]
    code: str

    def fail(self, path: str, reason: str) -> NoReturn:
        line = self.lines.get(path)
        where = f" (line {line})" if line else ""
        raise SpecError(f"{path or 'document'}: {reason}{where}", code=self.code, param=path)


_MISSING: Any = object()


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _mapping(ctx: _Ctx, value: Any, path: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        ctx.fail(path, f"expected a mapping, got {_kind(value)}")
    for key in value:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            ctx.fail(_join(path, str(key)), f"unknown key{hint}")
    return value


def _kind(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}
    return "nothing" if value is None else names.get(type(value), type(value).__name__)


Check = Callable[[_Ctx, Any, str], Any]


def _get(ctx: _Ctx, data: Mapping[str, Any], path: str, key: str, check: Check,
         default: Any = _MISSING) -> Any:  # fmt: skip
    value = data.get(key)
    if value is None:
        if default is _MISSING:
            ctx.fail(_join(path, key), "required")
        return default
    return check(ctx, value, _join(path, key))


def _str(ctx: _Ctx, value: Any, path: str) -> str:
    if not isinstance(value, str):
        ctx.fail(path, f"expected a string, got {_kind(value)}")
    return value


def _int_in(low: int, high: int) -> Check:
    def check(ctx: _Ctx, value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            ctx.fail(path, f"expected an integer, got {_kind(value)}")
        if not low <= value <= high:
            ctx.fail(path, f"must be between {low} and {high}")
        return value

    return check


def _number(ctx: _Ctx, value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        ctx.fail(path, f"expected a number, got {_kind(value)}")
    return float(value)


def _bool(ctx: _Ctx, value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        ctx.fail(path, f"expected true or false, got {_kind(value)}")
    return value


def _str_list(ctx: _Ctx, value: Any, path: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        ctx.fail(path, f"expected a list, got {_kind(value)}")
    return tuple(_str(ctx, item, _join(path, i)) for i, item in enumerate(value))


def _one_of(choices: tuple[str, ...]) -> Check:
    def check(ctx: _Ctx, value: Any, path: str) -> str:
        text = _str(ctx, value, path)
        if text not in choices:
            close = difflib.get_close_matches(text, choices, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            ctx.fail(path, f"unknown value {text!r} ({hint}one of {', '.join(choices)})")
        return text

    return check


def _pattern(regex: str, what: str) -> Check:
    compiled = re.compile(regex)

    def check(ctx: _Ctx, value: Any, path: str) -> str:
        text = _str(ctx, value, path)
        if not compiled.fullmatch(text) or ".." in text:
            ctx.fail(path, f"{text!r} is not a valid {what}")
        return text

    return check


def _template(ctx: _Ctx, value: Any, path: str) -> str:
    text = _str(ctx, value, path)
    try:
        compile_template(text)
    except TemplateError as exc:
        ctx.fail(path, f"template does not compile: {exc.message}")
    return text


# --- YAML loading -------------------------------------------------------------------------


def _load(ctx: _Ctx, text: str) -> Any:
    if len(text.encode("utf-8", "surrogatepass")) > MAX_DOCUMENT_BYTES:
        ctx.fail("", f"the document is larger than {MAX_DOCUMENT_BYTES // 1024} KiB")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None:
            _walk(ctx, node, "", [0], 0)
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        ctx.fail("", f"malformed YAML: {line}{exc.problem or exc.context}")
    except (yaml.YAMLError, RecursionError) as exc:
        ctx.fail("", f"malformed YAML: {exc}")


def _walk(ctx: _Ctx, node: yaml.Node, path: str, count: list[int], depth: int) -> None:
    """Record each path's line; refuse alias bombs, deep nesting and duplicate keys."""
    count[0] += 1
    if count[0] > MAX_NODES:
        ctx.fail("", f"the document expands to more than {MAX_NODES} nodes (YAML aliases?)")
    if depth > MAX_DEPTH:
        ctx.fail(path, f"nested more than {MAX_DEPTH} levels deep")
    ctx.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            child = _join(path, str(key.value))
            ctx.lines.setdefault(child, key.start_mark.line + 1)
            if str(key.value) in seen:
                ctx.fail(child, "duplicate key")
            seen.add(str(key.value))
            _walk(ctx, value, child, count, depth + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(ctx, item, _join(path, i), count, depth + 1)


# --- tasks --------------------------------------------------------------------------------

_TASK_KEYS = tuple(f.name for f in dataclasses.fields(TaskSpec))


def _task_from(ctx: _Ctx, value: Any) -> TaskSpec:
    data = _mapping(ctx, value, "", _TASK_KEYS)
    output_type = _get(ctx, data, "", "output_type", _one_of(OUTPUT_TYPES))
    mc = output_type == "multiple_choice"
    # Perplexity tasks score doc_to_target alone; every other type needs a prompt.
    text_default = "" if output_type == "perplexity" else _MISSING
    spec = TaskSpec(
        task=_get(ctx, data, "", "task", _pattern(NAME_PATTERN, "task name")),
        dataset=_dataset(ctx, data.get("dataset"), "dataset"),
        output_type=output_type,
        doc_to_text=_get(ctx, data, "", "doc_to_text", _template, text_default),
        doc_to_target=_target(ctx, data, output_type),
        doc_to_choice=_choices(ctx, data) if mc else None,
        description=_get(ctx, data, "", "description", _str, ""),
        tags=_get(ctx, data, "", "tags", _str_list, ()),
        target_delimiter=_get(ctx, data, "", "target_delimiter", _str, " "),
        fewshot_delimiter=_get(ctx, data, "", "fewshot_delimiter", _str, "\n\n"),
        description_prefix=_get(ctx, data, "", "description_prefix", _template, ""),
        num_fewshot=_get(ctx, data, "", "num_fewshot", _int_in(0, 64), 0),
        fewshot_seed=_get(ctx, data, "", "fewshot_seed", _int_in(0, 2**63 - 1), 1234),
        fewshot_split=_get(ctx, data, "", "fewshot_split", _str, None),
        generation=_generation(ctx, data.get("generation"), output_type),
        filters=_plugins(ctx, data.get("filters"), "filters", output_type),
        metrics=_plugins(ctx, data.get("metrics"), "metrics", output_type),
        judge=_judge(ctx, data.get("judge"), output_type),
        limit=_get(ctx, data, "", "limit", _int_in(1, 10_000_000), None),
    )
    if not mc and data.get("doc_to_choice") is not None:
        ctx.fail("doc_to_choice", "only multiple_choice tasks have choices")
    return spec


def _dataset(ctx: _Ctx, value: Any, path: str) -> DatasetSpec:
    if value is None:
        ctx.fail(path, "required")
    keys = tuple(f.name for f in dataclasses.fields(DatasetSpec))
    data = _mapping(ctx, value, path, keys)
    spec = DatasetSpec(
        builtin=_get(ctx, data, path, "builtin", _pattern(r"[\w.-]+(/[\w.-]+)*", "file"), None),
        hub=_get(ctx, data, path, "hub", _pattern(r"[\w.-]+/[\w.-]+(@\d+)?", "dataset"), None),
        file=_get(ctx, data, path, "file", _pattern(r"[\w.-]+(/[\w.-]+)*", "file"), None),
        split=_get(ctx, data, path, "split", _pattern(r"[\w.-]{1,64}", "split"), "test"),
        layout=_get(ctx, data, path, "layout", _one_of(LAYOUTS), None),
    )
    if (spec.builtin is None) == (spec.hub is None):
        ctx.fail(path, "name exactly one source: builtin or hub")
    if spec.file is not None and spec.hub is None:
        ctx.fail(_join(path, "file"), "only a hub dataset has files")
    return spec


def _target(ctx: _Ctx, data: Mapping[str, Any], output_type: str) -> str | int | tuple[str, ...]:
    value = data.get("doc_to_target")
    needed = output_type in ("multiple_choice", "generate_until", "perplexity")
    if value is None:
        if needed:
            ctx.fail("doc_to_target", "required")
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, list):
        return _str_list(ctx, value, "doc_to_target")
    return _template(ctx, value, "doc_to_target")


def _choices(ctx: _Ctx, data: Mapping[str, Any]) -> str | tuple[str, ...]:
    value = data.get("doc_to_choice")
    if value is None:
        ctx.fail("doc_to_choice", "required for multiple_choice")
    if isinstance(value, list):
        return _str_list(ctx, value, "doc_to_choice")
    return _template(ctx, value, "doc_to_choice")


def _generation(ctx: _Ctx, value: Any, output_type: str) -> GenerationSpec:
    chat_default = output_type in ("refusal", "judge")
    if value is None:
        return GenerationSpec(chat=chat_default)
    path = "generation"
    data = _mapping(ctx, value, path, tuple(f.name for f in dataclasses.fields(GenerationSpec)))
    return GenerationSpec(
        max_tokens=_get(ctx, data, path, "max_tokens", _int_in(1, 32_768), 256),
        until=_get(ctx, data, path, "until", _str_list, ()),
        temperature=_get(ctx, data, path, "temperature", _number, 0.0),
        chat=_get(ctx, data, path, "chat", _bool, chat_default),
    )


def _judge(ctx: _Ctx, value: Any, output_type: str) -> JudgeSpec | None:
    if output_type != "judge":
        if value is not None:
            ctx.fail("judge", "only judge tasks have a judge")
        return None
    if value is None:
        ctx.fail("judge", "required for output_type judge")
    data = _mapping(ctx, value, "judge", ("model", "rubric", "scale", "prompt"))
    scale = _get(ctx, data, "judge", "scale", _scale, (1.0, 10.0))
    return JudgeSpec(
        model=_get(ctx, data, "judge", "model", _str),
        rubric=_get(ctx, data, "judge", "rubric", _str),
        scale=scale,
        prompt=_get(ctx, data, "judge", "prompt", _template, None),
    )


def _scale(ctx: _Ctx, value: Any, path: str) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2:
        ctx.fail(path, "expected [lowest, highest]")
    low, high = (_number(ctx, v, _join(path, i)) for i, v in enumerate(value))
    if low >= high:
        ctx.fail(path, "the lowest score must be below the highest")
    return low, high


def _plugins(ctx: _Ctx, value: Any, path: str, output_type: str) -> tuple[PluginSpec, ...]:
    if value is None:
        value = list(DEFAULT_METRICS[output_type]) if path == "metrics" else []
    if not isinstance(value, list):
        ctx.fail(path, f"expected a list, got {_kind(value)}")
    if path == "metrics" and not value:
        ctx.fail(path, "at least one metric")
    specs = tuple(_plugin(ctx, item, _join(path, i), output_type) for i, item in enumerate(value))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        ctx.fail(path, "a name appears twice")
    return specs


def _plugin(ctx: _Ctx, value: Any, path: str, output_type: str) -> PluginSpec:
    entry = {"name": value} if isinstance(value, str) else value
    if not isinstance(entry, Mapping):
        ctx.fail(path, f"expected a name or a mapping, got {_kind(value)}")
    name = _get(ctx, entry, path, "name", _str)
    registry = METRICS if path.startswith("metrics") else FILTERS
    if name not in registry:
        close = difflib.get_close_matches(name, registry.names(), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        known = ", ".join(registry.names())
        ctx.fail(_join(path, "name"), f"unknown {registry.name} {name!r} ({hint}known: {known})")
    cls: type[Plugin] = registry.get(name)
    options = {k: v for k, v in entry.items() if k != "name"}
    _check_options(ctx, cls, options, path)
    if registry is METRICS:
        if output_type not in METRICS.get(name).output_types:
            ctx.fail(_join(path, "name"), f"{name!r} does not apply to {output_type} tasks")
        _construct(ctx, lambda: make_metric(name, options), path)
    else:
        _construct(ctx, lambda: cls(**options), path)
    return PluginSpec(name, options)


def _check_options(ctx: _Ctx, cls: type[Plugin], options: Mapping[str, Any], path: str) -> None:
    allowed: Mapping[str, Option] = cls.options
    _mapping(ctx, options, path, ("name", *allowed))
    for key, option in allowed.items():
        value = options.get(key)
        if value is None:
            if option.required:
                ctx.fail(_join(path, key), "required")
            continue
        if isinstance(value, bool) and bool not in option.types:
            ctx.fail(_join(path, key), f"expected {option.types[0].__name__}, got a boolean")
        if not isinstance(value, option.types):
            ctx.fail(_join(path, key), f"expected {option.types[0].__name__}, got {_kind(value)}")


def _construct(ctx: _Ctx, build: Callable[[], object], path: str) -> None:
    try:
        build()
    except (ValueError, PlatformError) as exc:
        ctx.fail(path, str(exc))


# --- suites -------------------------------------------------------------------------------


def _suite_from(ctx: _Ctx, value: Any) -> SuiteSpec:
    data = _mapping(ctx, value, "", ("suite", "description", "tasks", "aggregation", "ahp"))
    tasks = _get(ctx, data, "", "tasks", _suite_tasks)
    ahp = data.get("ahp")
    default_aggregation = "weighted" if ahp is not None else "macro"
    aggregation = _get(ctx, data, "", "aggregation", _one_of(AGGREGATIONS), default_aggregation)
    spec = SuiteSpec(
        suite=_get(ctx, data, "", "suite", _pattern(NAME_PATTERN, "suite name")),
        description=_get(ctx, data, "", "description", _str, ""),
        tasks=tasks,
        aggregation=aggregation,
        ahp_matrix=_ahp(ctx, ahp, len(tasks)) if ahp is not None else None,
    )
    if spec.ahp_matrix is not None and aggregation != "weighted":
        ctx.fail("aggregation", "AHP weights need aggregation: weighted")
    return spec


_TASK_REF = r"([A-Za-z0-9][\w.-]{0,63}/)?" + NAME_PATTERN


def _suite_tasks(ctx: _Ctx, value: Any, path: str) -> tuple[SuiteTaskSpec, ...]:
    if not isinstance(value, list) or not value:
        ctx.fail(path, "expected a non-empty list of tasks")
    tasks = []
    for i, item in enumerate(value):
        here = _join(path, i)
        entry = _mapping(ctx, {"task": item} if isinstance(item, str) else item, here,
                         ("task", "weight"))  # fmt: skip
        weight = _get(ctx, entry, here, "weight", _number, 1.0)
        if weight <= 0:
            ctx.fail(_join(here, "weight"), "must be positive")
        tasks.append(SuiteTaskSpec(_get(ctx, entry, here, "task", _pattern(_TASK_REF, "task")),
                                   weight))  # fmt: skip
    if len({t.task for t in tasks}) != len(tasks):
        ctx.fail(path, "a task appears twice")
    return tuple(tasks)


def _ahp(ctx: _Ctx, value: Any, n_tasks: int) -> tuple[tuple[float, ...], ...]:
    data = _mapping(ctx, value, "ahp", ("matrix",))
    raw = data.get("matrix")
    if not isinstance(raw, list) or len(raw) != n_tasks:
        ctx.fail("ahp.matrix", f"expected {n_tasks} rows, one per task in order")
    matrix = []
    for i, row in enumerate(raw):
        if not isinstance(row, list) or len(row) != n_tasks:
            ctx.fail(f"ahp.matrix[{i}]", f"expected a row of {n_tasks} numbers")
        matrix.append(tuple(_number(ctx, v, f"ahp.matrix[{i}][{j}]") for j, v in enumerate(row)))
    try:
        ahp_weights(matrix)
    except ValueError as exc:
        ctx.fail("ahp.matrix", str(exc))
    return tuple(matrix)


def _jsonable(spec: Any) -> dict[str, Any]:
    def clean(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: clean(v) for k, v in value.items() if v is not None}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    data = clean(dataclasses.asdict(spec))
    if isinstance(spec, TaskSpec):
        for key in ("filters", "metrics"):
            data[key] = [{"name": p.name, **p.options} for p in getattr(spec, key)]
    if isinstance(spec, SuiteSpec) and "ahp_matrix" in data:
        data["ahp"] = {"matrix": data.pop("ahp_matrix")}
    return data
