"""The evaluation sub-platform: tasks and suites as data, runs (jobs) against served
models or external endpoints with per-sample logs, leaderboards with a submission queue,
and an arena of anonymous pairwise battles.

A task is a YAML document (parsed and checked by :mod:`evaluation.harness.spec`) kept
with its source; a suite groups tasks with an aggregation. A run follows the shared job
convention (:mod:`portal.models.jobs`); its samples are rows, so a resumed run skips
the ones already scored. Everything a user creates is owned (``OwnedModel``): an
outsider gets 404.
"""

from __future__ import annotations

from typing import ClassVar

from django.conf import settings
from django.db import models

from portal.models import ModelVersion
from portal.models.ids import public_id
from portal.models.jobs import Job, JobEvent
from portal.models.ownership import OwnedModel


def run_id() -> str:
    return public_id("evalrun-")


def battle_id() -> str:
    return public_id("battle-")


class OutputType(models.TextChoices):
    MULTIPLE_CHOICE = "multiple_choice", "Multiple choice (log-likelihood)"
    GENERATE_UNTIL = "generate_until", "Generation with answer extraction"
    PERPLEXITY = "perplexity", "Perplexity / bits per byte"
    REFUSAL = "refusal", "Refusal rate on a question bank"
    JUDGE = "judge", "LLM as judge"


class EvalTask(OwnedModel):
    """One benchmark task: its YAML source, the parsed spec and the spec's hash."""

    name = models.CharField(max_length=96)
    description = models.TextField(blank=True)
    output_type = models.CharField(max_length=24, choices=OutputType.choices)
    source = models.TextField(help_text="The task's YAML as written")
    spec = models.JSONField(default=dict, help_text="The parsed, normalised spec")
    spec_sha256 = models.CharField(max_length=64)
    # Built-in tasks ship with the project (evaluation/builtin/) and are synced, not edited.
    builtin = models.BooleanField(default=False)
    tags = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["namespace", "name"]
        constraints = [
            models.UniqueConstraint(fields=["namespace", "name"], name="unique_eval_task"),
        ]

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class Aggregation(models.TextChoices):
    MICRO = "micro", "Micro (every sample counts once)"
    MACRO = "macro", "Macro (every task counts once)"
    WEIGHTED = "weighted", "Weighted (declared or AHP weights)"


class EvalSuite(OwnedModel):
    """Tasks grouped with a declared aggregation into one composite score."""

    name = models.CharField(max_length=96)
    description = models.TextField(blank=True)
    aggregation = models.CharField(
        max_length=16, choices=Aggregation.choices, default=Aggregation.MACRO
    )
    # AHP: {"criteria": [task names], "matrix": [[…]], "weights": [...], "consistency_ratio": x}
    ahp = models.JSONField(default=dict, blank=True)
    source = models.TextField(blank=True, help_text="The suite's YAML as written")
    builtin = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["namespace", "name"]
        constraints = [
            models.UniqueConstraint(fields=["namespace", "name"], name="unique_eval_suite"),
        ]

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class SuiteTask(models.Model):
    suite = models.ForeignKey(EvalSuite, on_delete=models.CASCADE, related_name="members")
    task = models.ForeignKey(EvalTask, on_delete=models.PROTECT, related_name="+")
    weight = models.FloatField(default=1.0)
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["position", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["suite", "task"], name="unique_suite_task"),
        ]

    def __str__(self) -> str:
        return f"{self.suite} ∋ {self.task}"


class Endpoint(OwnedModel):
    """An external OpenAI-compatible endpoint (an application, another provider): its
    base URL, the model name it expects, and a key kept encrypted at rest."""

    name = models.CharField(max_length=96)
    base_url = models.URLField(max_length=500)
    model = models.CharField(max_length=200)
    api_key_encrypted = models.TextField(blank=True)
    key_hint = models.CharField(max_length=8, blank=True, help_text="Last characters of the key")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["namespace", "name"]
        constraints = [
            models.UniqueConstraint(fields=["namespace", "name"], name="unique_eval_endpoint"),
        ]

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class RunSource(models.TextChoices):
    MANUAL = "manual", "Started by a user"
    AUTO_EVAL = "auto_eval", "A fine-tune's auto_eval"
    LEADERBOARD = "leaderboard", "A leaderboard submission"


class EvalRun(OwnedModel, Job):
    """One evaluation of a suite (or a single task) on a served model or an endpoint.

    ``model_name`` is what the gateway routes (a hub model, ``owner/name@N`` or a
    fine-tune's name); ``endpoint`` replaces the gateway when set. ``params`` hold the
    decoding and batching settings, ``record`` the reproducibility record, ``scores`` the
    per-task metrics with standard errors and the suite's aggregate (see the contract)."""

    id = models.CharField(primary_key=True, max_length=40, default=run_id, editable=False)
    suite = models.ForeignKey(
        EvalSuite, null=True, blank=True, on_delete=models.PROTECT, related_name="runs"
    )
    task = models.ForeignKey(
        EvalTask, null=True, blank=True, on_delete=models.PROTECT, related_name="runs"
    )
    model_name = models.CharField(max_length=300, blank=True, db_index=True)
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    endpoint = models.ForeignKey(
        Endpoint, null=True, blank=True, on_delete=models.PROTECT, related_name="runs"
    )
    params = models.JSONField(default=dict, blank=True)
    record = models.JSONField(default=dict, blank=True)
    scores = models.JSONField(default=dict, blank=True)
    total_samples = models.PositiveIntegerField(default=0)
    done_samples = models.PositiveIntegerField(default=0)
    source = models.CharField(max_length=16, choices=RunSource.choices, default=RunSource.MANUAL)
    fine_tuning_job_id = models.CharField(max_length=40, blank=True, db_index=True)
    # The run's own gateway key (created per attempt, revoked when the run ends); its
    # secret is kept encrypted so that a resumed attempt can use it.
    api_key = models.ForeignKey(
        "portal.APIKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    api_key_encrypted = models.TextField(blank=True)
    error_code = models.CharField(max_length=64, blank=True)

    event_model: ClassVar[type[JobEvent]]

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["owner_user", "status"])]

    def __str__(self) -> str:
        return self.id


class EvalRunEvent(JobEvent):
    job = models.ForeignKey(EvalRun, on_delete=models.CASCADE, related_name="events")


EvalRun.event_model = EvalRunEvent


class EvalSample(models.Model):
    """One scored document of one task in one run: what was asked, what came back, the
    extracted answer and each metric's value. Unique per (run, task, doc) so a resumed
    run skips what is already here."""

    run = models.ForeignKey(EvalRun, on_delete=models.CASCADE, related_name="samples")
    task = models.ForeignKey(EvalTask, on_delete=models.CASCADE, related_name="+")
    doc_index = models.PositiveIntegerField()
    prompt = models.TextField(blank=True)
    target = models.JSONField(default=None, null=True, blank=True)
    # The raw answer: generated text, or per-choice log-likelihoods and greedy flags.
    output = models.JSONField(default=None, null=True, blank=True)
    extracted = models.TextField(blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["task_id", "doc_index"]
        constraints = [
            models.UniqueConstraint(fields=["run", "task", "doc_index"], name="unique_eval_sample"),
        ]

    def __str__(self) -> str:
        return f"{self.run_id} {self.task_id}#{self.doc_index}"


class Leaderboard(OwnedModel):
    """A ranking of models on one suite, built from finished runs of that suite."""

    name = models.CharField(max_length=96)
    title = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    suite = models.ForeignKey(EvalSuite, on_delete=models.PROTECT, related_name="leaderboards")
    # The metric each task is ranked by defaults to the task's first metric.
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["namespace", "name"]
        constraints = [
            models.UniqueConstraint(fields=["namespace", "name"], name="unique_leaderboard"),
        ]

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class SubmissionStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    FINISHED = "finished", "Finished"
    FAILED = "failed", "Failed"


class Submission(models.Model):
    """A model entered on a leaderboard: queued, evaluated by a run, then ranked."""

    leaderboard = models.ForeignKey(
        Leaderboard, on_delete=models.CASCADE, related_name="submissions"
    )
    model_name = models.CharField(max_length=300)
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    run = models.ForeignKey(
        EvalRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="submissions"
    )
    status = models.CharField(
        max_length=16, choices=SubmissionStatus.choices, default=SubmissionStatus.PENDING
    )
    error = models.TextField(blank=True)
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.model_name} on {self.leaderboard}"


class Arena(OwnedModel):
    """Anonymous side-by-side battles between the models it lists; ratings by
    Bradley-Terry with bootstrap intervals (cached in ``ratings``)."""

    name = models.CharField(max_length=96)
    title = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    contenders = models.JSONField(default=list, help_text="Served model names that may be drawn")
    ratings = models.JSONField(default=dict, blank=True)
    ratings_votes = models.PositiveIntegerField(default=0, help_text="Votes the ratings counted")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["namespace", "name"]
        constraints = [
            models.UniqueConstraint(fields=["namespace", "name"], name="unique_arena"),
        ]

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class Winner(models.TextChoices):
    A = "a", "A is better"
    B = "b", "B is better"
    TIE = "tie", "Tie"
    BOTH_BAD = "both_bad", "Both are bad"


class Battle(models.Model):
    """One anonymous battle: a prompt, two answers from two drawn models, one vote.
    The models' names are hidden from the voter until the vote is in."""

    id = models.CharField(primary_key=True, max_length=40, default=battle_id, editable=False)
    arena = models.ForeignKey(Arena, on_delete=models.CASCADE, related_name="battles")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    model_a = models.CharField(max_length=300)
    model_b = models.CharField(max_length=300)
    prompt = models.TextField()
    answer_a = models.TextField(blank=True)
    answer_b = models.TextField(blank=True)
    error = models.TextField(blank=True)
    winner = models.CharField(max_length=16, choices=Winner.choices, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    voted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["arena", "voted_at"])]

    def __str__(self) -> str:
        return self.id


__all__ = [
    "Aggregation",
    "Arena",
    "Battle",
    "Endpoint",
    "EvalRun",
    "EvalRunEvent",
    "EvalSample",
    "EvalSuite",
    "EvalTask",
    "Leaderboard",
    "OutputType",
    "RunSource",
    "Submission",
    "SubmissionStatus",
    "SuiteTask",
    "Winner",
]
