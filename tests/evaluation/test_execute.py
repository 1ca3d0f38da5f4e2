"""``run_task``: instances run concurrently against the real engine (or a stand-in endpoint
that fails on purpose), scored as they finish and handed over in chunks."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from compute.agent.procs import free_port
from evaluation.harness.client import EndpointError, OpenAIClient
from evaluation.harness.execute import run_task
from evaluation.harness.requests import (
    GenerationRequest,
    GenerationResult,
    Instance,
    LoglikelihoodRequest,
    SampleResult,
)
from tests.compute.conftest import (
    ENGINE_API_KEY,
    SERVED_NAME,
    EngineProcess,
)
from tests.evaluation.conftest import Reply
from tests.evaluation.test_client import echo_answer

CHOICES = [" yes", " no"]


def mc_instances(n: int, marker: str = "") -> list[Instance]:
    """``n`` two-choice instances; doc ``i`` asks question ``i`` (``marker`` in doc 3's)."""
    instances = []
    for i in range(n):
        context = f"Question {i}{marker if i == 3 else ''}: is the sky blue?\nAnswer:"
        requests: list[Any] = [LoglikelihoodRequest(context, choice) for choice in CHOICES]
        instances.append(Instance(i, {"q": i}, context, 0, requests))
    return instances


def mc_score(task: Any, instance: Instance, responses: list[Any]) -> SampleResult:
    """Accuracy by the highest log-likelihood (what the harness's scoring does for MC)."""
    lls = [r.logprob for r in responses]
    pred = max(range(len(lls)), key=lls.__getitem__)
    acc = float(pred == instance.target)
    return SampleResult(
        instance.doc_index, instance.prompt, instance.target, lls, str(pred), {"acc": acc}
    )


class Store:
    """What a caller of ``run_task`` keeps: every ``on_samples`` call and its samples."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.calls: list[list[SampleResult]] = []
        self.stop_after = stop_after

    def on_samples(self, samples: list[SampleResult]) -> None:
        self.calls.append(samples)

    def should_stop(self) -> bool:
        return self.stop_after is not None and len(self.samples) >= self.stop_after

    @property
    def samples(self) -> list[SampleResult]:
        return [s for call in self.calls for s in call]


def run(instances: list[Instance], client: OpenAIClient, store: Store, **options: Any) -> None:
    options.setdefault("score", mc_score)
    coro = run_task(
        options.pop("task", "task"),
        instances,
        client,
        on_samples=store.on_samples,
        should_stop=store.should_stop,
        **options,
    )
    asyncio.run(coro)


def test_every_instance_is_scored_once_with_the_clients_numbers(engine: EngineProcess) -> None:
    # given 40 two-choice instances (80 log-likelihood requests)
    instances = mc_instances(40)
    client = OpenAIClient(
        engine.base_url, ENGINE_API_KEY, SERVED_NAME, concurrency=4, batch_size=16
    )
    store = Store()

    # when they run
    run(instances, client, store)

    # then each doc arrives once, in more than one chunk, with the client's own log-likelihoods
    assert sorted(s.doc_index for s in store.samples) == list(range(40))
    assert len(store.calls) >= 2
    direct = asyncio.run(client.loglikelihood([r for i in instances for r in i.requests]))
    by_doc = {s.doc_index: s for s in store.samples}
    for i in range(40):
        assert by_doc[i].output == [r.logprob for r in direct[2 * i : 2 * i + 2]]
        assert not by_doc[i].error


def test_generation_instances_are_answered_and_scored(engine: EngineProcess) -> None:
    request = GenerationRequest("The weather today is", None, 4, ("\n",), 0.0, None)
    instances = [Instance(i, {}, request.prompt, "", [request]) for i in range(3)]

    def keep_text(task: Any, instance: Instance, responses: list[Any]) -> SampleResult:
        assert isinstance(responses[0], GenerationResult)
        text = responses[0].text
        return SampleResult(instance.doc_index, instance.prompt, "", text, text, {"len": len(text)})

    store = Store()
    run(
        instances,
        OpenAIClient(engine.base_url, ENGINE_API_KEY, SERVED_NAME),
        store,
        score=keep_text,
    )

    texts = {s.output for s in store.samples}
    assert len(store.samples) == 3 and len(texts) == 1  # temperature 0: the same answer


def test_stop_request_ends_the_run_early_without_losing_finished_samples(
    engine: EngineProcess,
) -> None:
    # given a caller that asks to stop once it has stored something
    store = Store(stop_after=1)
    client = OpenAIClient(engine.base_url, ENGINE_API_KEY, SERVED_NAME, concurrency=2, batch_size=8)

    run(mc_instances(200), client, store)

    indexes = [s.doc_index for s in store.samples]
    assert 0 < len(indexes) < 200
    assert len(set(indexes)) == len(indexes)


def test_a_prompt_the_endpoint_rejects_fails_only_its_own_sample(stand_in: Any) -> None:
    # given an endpoint that rejects any batch holding doc 3's prompt
    def answer(body: dict[str, Any]) -> Reply:
        if any("REJECT" in p for p in body["prompt"]):
            return 400, {"error": {"message": "prompt too long"}}
        return 200, echo_answer(body["prompt"])

    endpoint = stand_in(answer)
    client = OpenAIClient(endpoint.url, "k", "m", batch_size=16)
    store = Store()

    run(mc_instances(30, marker="REJECT"), client, store)

    errors = {s.doc_index: s.error for s in store.samples if s.error}
    assert len(store.samples) == 30
    assert list(errors) == [3]
    assert "rejected the request (400): prompt too long" in errors[3]


def test_scoring_failure_is_the_samples_error_not_a_crash(stand_in: Any) -> None:
    endpoint = stand_in(lambda body: (200, echo_answer(body["prompt"])))

    def fussy(task: Any, instance: Instance, responses: list[Any]) -> SampleResult:
        if instance.doc_index == 5:
            raise ValueError("judge said nothing")
        return mc_score(task, instance, responses)

    store = Store()
    run(mc_instances(8), OpenAIClient(endpoint.url, "k", "m"), store, score=fussy)

    errors = [s for s in store.samples if s.error]
    assert len(store.samples) == 8
    assert [s.doc_index for s in errors] == [5]
    assert "judge said nothing" in errors[0].error


def test_mostly_failing_first_samples_abort_the_task(stand_in: Any) -> None:
    # given an endpoint that fails every other batch with a server error
    answered = iter(range(10_000))

    def answer(body: dict[str, Any]) -> Reply:
        if next(answered) % 3:
            return 500, {"error": {"message": "engine crashed"}}
        return 200, echo_answer(body["prompt"])

    endpoint = stand_in(answer)
    client = OpenAIClient(endpoint.url, "k", "m", batch_size=2, max_retries=0, concurrency=1)
    store = Store()

    with pytest.raises(EndpointError) as caught:
        run(mc_instances(100), client, store)

    assert "of the first 20 samples failed" in caught.value.message
    assert "engine crashed" in caught.value.message
    # the good samples are kept, the failed ones are not, so a resumed run retries them
    assert store.samples and all(not s.error for s in store.samples)
    assert len(store.samples) < 20


def test_unreachable_endpoint_aborts_with_endpoint_unreachable() -> None:
    client = OpenAIClient(f"http://127.0.0.1:{free_port()}", "k", "m", max_retries=0)
    store = Store()

    with pytest.raises(EndpointError) as caught:
        run(mc_instances(5), client, store)

    assert caught.value.code == "endpoint_unreachable"
    assert store.samples == []


def test_throughput_of_two_hundred_mc_instances(
    engine: EngineProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    """200 two-choice instances, batch size 16, at concurrency 1 and 4 (rates printed)."""
    rates = {}
    for concurrency in (1, 4):
        client = OpenAIClient(
            engine.base_url, ENGINE_API_KEY, SERVED_NAME, concurrency=concurrency, batch_size=16
        )
        store = Store()
        started = time.perf_counter()
        run(mc_instances(200), client, store)
        rates[concurrency] = 200 / (time.perf_counter() - started)
        assert sorted(s.doc_index for s in store.samples) == list(range(200))
        assert not any(s.error for s in store.samples)
    with capsys.disabled():
        print(f"\nsamples/s: concurrency 1: {rates[1]:.1f}, concurrency 4: {rates[4]:.1f}")


JUDGE_TASK = """\
task: helpful
dataset: {builtin: h.jsonl}
output_type: judge
doc_to_text: "{{ prompt }}"
generation: {max_tokens: 6}
judge: {model: judge-model, rubric: 回答是否有帮助, scale: [1, 10]}
"""


def test_a_judge_task_sends_each_answer_to_the_judge_and_scores_its_verdict(
    engine: EngineProcess, stand_in: Any
) -> None:
    from evaluation.harness.scoring import build_instances, score
    from evaluation.harness.spec import parse_task

    # given a judge task answered by the real engine and judged by a stand-in judge
    task = parse_task(JUDGE_TASK)
    instances = build_instances(task, [{"prompt": f"写一句关于第{i}天的话"} for i in range(3)])
    asked: list[dict[str, Any]] = []

    def verdict(body: dict[str, Any]) -> Reply:
        asked.append(body)
        message = {"role": "assistant", "content": "很有帮助。评分：7"}
        return 200, {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}

    judge = OpenAIClient(stand_in(verdict).url, "judge-key", "judge-model")
    store = Store()

    # when the task runs with the judge's client
    run(
        instances,
        OpenAIClient(engine.base_url, ENGINE_API_KEY, SERVED_NAME),
        store,
        task=task,
        score=score,
        judge=judge,
    )

    # then every answer reached the judge with the rubric, and its score is the metric
    assert sorted(s.doc_index for s in store.samples) == [0, 1, 2]
    assert all(s.metrics == {"judge_score": 7.0} and not s.error for s in store.samples)
    assert len(asked) == 3 and all(b["model"] == "judge-model" for b in asked)
    assert all("回答是否有帮助" in b["messages"][0]["content"] for b in asked)
