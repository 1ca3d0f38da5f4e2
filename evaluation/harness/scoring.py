"""From docs to requests, and from responses to scored samples — as lm-evaluation-harness.

Prompts are built like lm-eval's ``ConfigurableTask.fewshot_context`` without a chat
template: ``description`` + few-shot examples + ``doc_to_text(doc)``, each example being
``doc_to_text + target_delimiter + target + fewshot_delimiter``. Few-shot docs come
from one ``random.Random(fewshot_seed)`` consumed doc after doc in order, with
``rnd.sample(pool, k)`` (``k + 1`` when the pool is the evaluated docs, then the doc
itself dropped), which is what lm-eval's default sampler does — so the same docs, seed
and order give lm-eval's prompts. A multiple-choice doc asks one log-likelihood per
choice: ``(context, target_delimiter + choice)``.
"""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from evaluation.harness.filters import FILTERS, Filter, run_filters
from evaluation.harness.metrics import Metric, Observation, make_metric, parse_judge_score
from evaluation.harness.requests import (
    GenerationRequest,
    GenerationResult,
    Instance,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    RollingRequest,
    RollingResult,
    SampleResult,
)
from evaluation.harness.spec import TaskSpec
from evaluation.harness.template import TemplateError, render

JUDGE_PROMPT = """Please act as an impartial judge and rate the answer to the question below.
Rubric: {{ rubric }}

[Question]
{{ question }}
{% if reference %}
[Reference answer]
{{ reference }}
{% endif %}
[Answer]
{{ answer }}

Give a short explanation, then the rating from {{ scale_min }} to {{ scale_max }} \
in the form "Rating: [[N]]"."""


# --- lm-eval's doc_to_* -------------------------------------------------------------------


def _apply(source: str, doc: Mapping[str, Any]) -> Any:
    """A doc field when ``source`` names one (lm-eval's feature shortcut), else the render."""
    return doc[source] if source in doc else render(source, doc)


def doc_text(task: TaskSpec, doc: Mapping[str, Any]) -> str:
    return str(_apply(task.doc_to_text, doc))


def doc_target(task: TaskSpec, doc: Mapping[str, Any]) -> Any:
    """The target as lm-eval's ``doc_to_target``: digits become the gold index of a
    multiple-choice task, ``[...]`` a list of acceptable answers."""
    source = task.doc_to_target
    if not isinstance(source, str):
        return list(source) if isinstance(source, tuple) else source
    value = _apply(source, doc)
    if not isinstance(value, str):
        return value
    if value.isdigit() and task.doc_to_choice is not None:
        return int(value)
    if len(value) >= 2 and value[0] == "[" and value[-1] == "]":
        try:
            return ast.literal_eval(value)
        except (SyntaxError, ValueError):
            return value
    return value


def doc_choices(task: TaskSpec, doc: Mapping[str, Any]) -> list[str]:
    """The choices of a multiple-choice doc; :class:`TemplateError` unless a list of strings."""
    source = task.doc_to_choice
    if isinstance(source, tuple):
        return list(source)
    value = _apply(source or "", doc)
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (SyntaxError, ValueError) as exc:
            raise TemplateError(f"doc_to_choice did not give a list: {value[:100]!r}") from exc
    if not isinstance(value, (list, tuple)) or not value:
        raise TemplateError("doc_to_choice must give a non-empty list of choices")
    return [str(choice) for choice in value]


def gold_indices(target: Any, choices: Sequence[str]) -> tuple[int, ...]:
    """lm-eval's gold: indices below ``len(choices)`` or choice texts (a list: any of them).

    An entry that is neither is dropped (lm-eval's -100: it never matches).
    """
    golds = target if isinstance(target, list) else [target]
    found = []
    for gold in golds:
        if isinstance(gold, int) and not isinstance(gold, bool) and 0 <= gold < len(choices):
            found.append(gold)
        elif isinstance(gold, str) and gold in choices:
            found.append(list(choices).index(gold))
    return tuple(found)


# --- prompts ------------------------------------------------------------------------------


class _FewShot:
    """lm-eval's default sampler: one seeded generator shared by all docs in order."""

    def __init__(self, task: TaskSpec, docs: list[dict], pool: list[dict] | None) -> None:
        self.task = task
        self.rnd = random.Random(task.fewshot_seed)
        self.pool = docs if pool is None else pool
        self.same = pool is None or task.fewshot_split in (None, task.dataset.split)

    def context(self, doc: dict) -> str:
        k = self.task.num_fewshot
        if k == 0:
            return ""
        drawn = self.rnd.sample(self.pool, min(k + 1 if self.same else k, len(self.pool)))
        return "".join(self._example(shot) for shot in [d for d in drawn if d != doc][:k])

    def _example(self, shot: dict) -> str:
        task = self.task
        target = doc_target(task, shot)
        text = doc_text(task, shot)
        if target == "":
            return text
        if isinstance(target, list):
            answer = str(target[0])
        elif isinstance(target, int) and task.doc_to_choice is not None:
            answer = doc_choices(task, shot)[target]
        else:
            answer = str(target)
        return text + task.target_delimiter + answer + task.fewshot_delimiter


def build_prompt(task: TaskSpec, doc: dict, fewshot: str) -> str:
    description = render(task.description_prefix, doc) if task.description_prefix else ""
    return description + fewshot + doc_text(task, doc)


def build_instances(
    task: TaskSpec,
    docs: list[dict],
    fewshot_docs: list[dict] | None = None,
    *,
    seed: int | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    limit: int | None = None,
) -> list[Instance]:
    """One :class:`Instance` per doc, in order, with its prompt, target and requests.

    ``fewshot_docs`` is the ``fewshot_split`` (None: few-shots come from all of ``docs``,
    never the doc itself). ``limit`` keeps the first docs only — few-shots are still drawn
    from the whole pool, as lm-eval's ``--limit`` does. ``seed``/``temperature``/
    ``max_tokens`` override the task's decoding for a run. Raises :class:`TemplateError`
    naming the doc whose fields do not fit the templates.
    """
    sampler = _FewShot(task, docs, fewshot_docs)
    decoding = _Decoding(task, seed, temperature, max_tokens)
    instances = []
    for index, doc in enumerate(docs[:limit] if limit is not None else docs):
        try:
            instances.append(_instance(task, index, doc, sampler, decoding))
        except TemplateError as exc:
            raise TemplateError(f"doc {index}: {exc.message}") from exc
    return instances


class _Decoding:
    def __init__(self, task: TaskSpec, seed: int | None, temperature: float | None,
                 max_tokens: int | None) -> None:  # fmt: skip
        gen = task.generation
        self.chat = gen.chat
        self.seed = seed
        self.temperature = gen.temperature if temperature is None else temperature
        self.max_tokens = gen.max_tokens if max_tokens is None else max_tokens
        # lm-eval stops a completion at the few-shot delimiter unless told otherwise.
        self.until = gen.until or (() if gen.chat else (task.fewshot_delimiter,))

    def request(self, prompt: str) -> GenerationRequest:
        messages = [{"role": "user", "content": prompt}] if self.chat else None
        return GenerationRequest(prompt, messages, self.max_tokens, self.until,
                                 self.temperature, self.seed)  # fmt: skip


def _instance(task: TaskSpec, index: int, doc: dict, sampler: _FewShot,
              decoding: _Decoding) -> Instance:  # fmt: skip
    if task.output_type == "perplexity":
        text = str(doc_target(task, doc))
        return Instance(index, doc, text, text, [RollingRequest(text)])
    prompt = build_prompt(task, doc, sampler.context(doc))
    target = doc_target(task, doc)
    if task.output_type == "multiple_choice":
        choices = doc_choices(task, doc)
        requests: list[Any] = [
            LoglikelihoodRequest(prompt, task.target_delimiter + choice) for choice in choices
        ]
        return Instance(index, doc, prompt, target, requests)
    return Instance(index, doc, prompt, target, [decoding.request(prompt)])


def build_judge_request(task: TaskSpec, instance: Instance, answer: str) -> GenerationRequest:
    """The request asking ``task.judge.model`` to rate ``answer`` (temperature 0)."""
    judge = task.judge
    if judge is None:
        raise ValueError(f"task {task.task} has no judge")
    variables = {
        "question": instance.prompt,
        "answer": answer,
        "reference": "" if instance.target in (None, "") else str(instance.target),
        "rubric": judge.rubric,
        "scale_min": f"{judge.scale[0]:g}",
        "scale_max": f"{judge.scale[1]:g}",
        "doc": instance.doc,
    }
    prompt = render(judge.prompt or JUDGE_PROMPT, variables)
    messages = [{"role": "user", "content": prompt}]
    return GenerationRequest(prompt, messages, 512, (), 0.0, None)


# --- scoring ------------------------------------------------------------------------------


def score(task: TaskSpec, instance: Instance, responses: Sequence[Any]) -> SampleResult:
    """The scored sample for ``instance`` given the responses to its requests, in order.

    Judge tasks take two generation results: the answer, then the judge's verdict (from
    :func:`build_judge_request`). A response that cannot be scored (wrong count, a judge
    answer without a score, a gold label outside the choices) gives a sample with
    ``error`` set, never an exception.
    """
    sample = SampleResult(instance.doc_index, instance.prompt, instance.target, None, "", {})
    try:
        _SCORERS[task.output_type](task, instance, list(responses), sample)
    except (ValueError, TypeError, IndexError, KeyError, TemplateError) as exc:
        sample.error = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return sample


def _metrics(task: TaskSpec) -> list[Metric]:
    return [make_metric(p.name, p.options) for p in task.metrics]


def _compute(task: TaskSpec, obs: Observation, sample: SampleResult) -> None:
    for metric in _metrics(task):
        sample.metrics.update(metric.compute(obs))


def _expect(responses: list[Any], kind: type, count: int) -> None:
    if len(responses) != count or not all(isinstance(r, kind) for r in responses):
        raise ValueError(f"expected {count} {kind.__name__}, got {len(responses)} responses")


def _score_mc(task: TaskSpec, inst: Instance, responses: list[Any], sample: SampleResult) -> None:
    choices = doc_choices(task, inst.doc)
    _expect(responses, LoglikelihoodResult, len(choices))
    lls = [r.logprob for r in responses]
    gold = gold_indices(inst.target, choices)
    sample.output = {"logprobs": lls, "is_greedy": [r.is_greedy for r in responses]}
    sample.extracted = choices[max(range(len(lls)), key=lambda i: (lls[i], -i))]
    _compute(task, Observation(inst.doc, inst.target, lls=lls, choices=choices, gold=gold), sample)
    if not gold:
        raise ValueError(f"the gold answer {inst.target!r} is not one of the choices")


def _filters(task: TaskSpec) -> list[Filter]:
    return [FILTERS.get(p.name)(**p.options) for p in task.filters]


def _score_generation(task: TaskSpec, inst: Instance, responses: list[Any],
                      sample: SampleResult) -> None:  # fmt: skip
    _expect(responses, GenerationResult, 1)
    output = responses[0].text
    sample.output = output
    sample.extracted = run_filters(_filters(task), output)
    _compute(task, Observation(inst.doc, inst.target, output, sample.extracted), sample)


def _score_rolling(task: TaskSpec, inst: Instance, responses: list[Any],
                   sample: SampleResult) -> None:  # fmt: skip
    _expect(responses, RollingResult, 1)
    text = inst.prompt
    # lm-eval's count_words / count_bytes.
    words, size = len(re.split(r"\s+", text)), len(text.encode("utf-8"))
    sample.output = {"logprob": responses[0].logprob, "tokens": responses[0].tokens}
    obs = Observation(inst.doc, inst.target, logprob=responses[0].logprob, words=words, bytes=size)
    _compute(task, obs, sample)


def _score_judge(task: TaskSpec, inst: Instance, responses: list[Any],
                 sample: SampleResult) -> None:  # fmt: skip
    _expect(responses, GenerationResult, 2)
    answer, verdict = responses[0].text, responses[1].text
    sample.output = {"answer": answer, "judgement": verdict}
    scale = task.judge.scale if task.judge else (1.0, 10.0)
    value = parse_judge_score(verdict, scale)
    sample.extracted = f"{value:g}"
    obs = Observation(inst.doc, inst.target, answer, sample.extracted, judge_score=value)
    _compute(task, obs, sample)


_SCORERS: dict[str, Callable[[TaskSpec, Instance, list[Any], SampleResult], None]] = {
    "multiple_choice": _score_mc,
    "generate_until": _score_generation,
    "refusal": _score_generation,
    "perplexity": _score_rolling,
    "judge": _score_judge,
}
