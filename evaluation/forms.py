"""The forms of the evaluation pages. Each one only gathers what a person chooses; the
verbs are the services' (:func:`evaluation.services.runs.start_run`,
:func:`evaluation.services.leaderboards.submit`, :func:`evaluation.services.arena.start_battle`)
and their errors are shown on the field their ``param`` names."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from evaluation.models import Endpoint, EvalSuite, EvalTask, Winner
from portal.models import ModelRepo
from training.services.jobs import jobs_of

MAX_CHOICES = 500
# The training sub-platform is reached through its services only (the import contract).
SUCCEEDED = "succeeded"  # FineTuneStatus.SUCCEEDED
PARAMS = ("limit", "max_tokens", "temperature", "seed", "concurrency", "batch_size")
ENDPOINT_PREFIX = "endpoint:"
SUITE_PREFIX = "suite:"
TASK_PREFIX = "task:"
# The run service's ``param`` (as the API names it) → the form field showing it.
RUN_PARAMS = {
    "suite": "target",
    "task": "target",
    "model": "model",
    "endpoint": "model",
    **{f"params.{name}": name for name in PARAMS},
}


def model_choices(user: Any) -> list[tuple[str, str]]:
    """The hub models ``user`` may read, by name (the gateway's own access rule), then
    the user's succeeded fine-tunes by the name the gateway serves them as."""
    repos = ModelRepo.objects.restrict(user, "read").order_by("namespace", "name")
    choices = [(repo.full_name, repo.full_name) for repo in repos[:MAX_CHOICES]]
    tuned = (
        jobs_of(user)
        .filter(status=SUCCEEDED)
        .exclude(fine_tuned_model="")
        .order_by("-created_at")
        .values_list("fine_tuned_model", flat=True)
    )
    return choices + [(name, name) for name in tuned[:MAX_CHOICES]]


def endpoint_choices(user: Any) -> list[tuple[str, str]]:
    """The external endpoints ``user`` may use (value ``endpoint:<ns>/<name>``)."""
    endpoints = Endpoint.objects.restrict(user, "read")[:MAX_CHOICES]
    return [(f"{ENDPOINT_PREFIX}{e}", f"{e} · {e.model} @ {e.base_url}") for e in endpoints]


def target_choices(user: Any) -> list[tuple[Any, Any]]:
    """Suites, then single tasks, the user may read (values ``suite:ns/name``, ``task:…``),
    grouped for the select."""
    suites = EvalSuite.objects.restrict(user, "read")[:MAX_CHOICES]
    tasks = EvalTask.objects.restrict(user, "read")[:MAX_CHOICES]
    return [
        (_("评测套件"), [(f"{SUITE_PREFIX}{s}", f"{s} · {s.description[:60]}") for s in suites]),
        (_("单个任务"), [(f"{TASK_PREFIX}{t}", f"{t} · {t.description[:60]}") for t in tasks]),
    ]


class RunForm(forms.Form):
    """What ``POST /api/evaluation/runs/`` takes that a person sets by hand."""

    target = forms.ChoiceField(label=_("评测内容"))
    model = forms.ChoiceField(label=_("模型"))
    limit = forms.IntegerField(
        label=_("每个任务最多样本数"), required=False, min_value=1, help_text=_("留空则全部")
    )
    max_tokens = forms.IntegerField(
        label=_("最大生成长度"), required=False, min_value=1, help_text=_("留空则按任务设置")
    )
    temperature = forms.FloatField(label=_("温度"), initial=0.0, min_value=0.0, max_value=2.0)
    seed = forms.IntegerField(label=_("随机种子"), initial=1234)
    concurrency = forms.IntegerField(label=_("并发数"), initial=8, min_value=1, max_value=64)
    batch_size = forms.IntegerField(label=_("批大小"), initial=16, min_value=1, max_value=256)

    def __init__(self, user: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        self._choices("target", target_choices(user))
        models: list[tuple[Any, Any]] = [(_("平台模型"), model_choices(user))]
        endpoints = endpoint_choices(user)
        if endpoints:
            models.append((_("外部接口"), endpoints))
        self._choices("model", models)

    def _choices(self, name: str, choices: list[tuple[Any, Any]]) -> None:
        field = self.fields[name]
        assert isinstance(field, forms.ChoiceField)
        field.choices = choices

    def arguments(self) -> dict[str, Any]:
        """The keyword arguments of ``start_run`` the cleaned form stands for (suite,
        task and endpoint as the rows the user may read; the model by name)."""
        data = self.cleaned_data
        target: str = data["target"]
        choice: str = data["model"]
        arguments: dict[str, Any] = {
            "params": {name: data[name] for name in PARAMS if data.get(name) is not None}
        }
        if target.startswith(SUITE_PREFIX):
            arguments["suite"] = _by_name(EvalSuite, self.user, target[len(SUITE_PREFIX) :])
        else:
            arguments["task"] = _by_name(EvalTask, self.user, target[len(TASK_PREFIX) :])
        if choice.startswith(ENDPOINT_PREFIX):
            ref = choice[len(ENDPOINT_PREFIX) :]
            arguments["endpoint"] = _by_name(Endpoint, self.user, ref)
        else:
            arguments["model"] = choice
        return arguments

    def show_error(self, param: str | None, message: str) -> None:
        """A service's error on the field its ``param`` names (else on the form)."""
        field = RUN_PARAMS.get(param or "", param)
        self.add_error(field if field in self.fields else None, message)


def _by_name(model: Any, user: Any, ref: str) -> Any:
    """The ``namespace/name`` row ``user`` may read (the choices offered only those)."""
    namespace, _slash, name = ref.partition("/")
    return model.objects.restrict(user, "read").get(namespace=namespace, name=name)


class SubmitForm(forms.Form):
    """Enter a model on a leaderboard."""

    model = forms.ChoiceField(label=_("模型"))

    def __init__(self, user: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["model"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = model_choices(user)


class StandingsFilter(forms.Form):
    """The leaderboard's filters (all optional): parameter count range in billions,
    license, base model."""

    min_params = forms.FloatField(label=_("最少参数量（B）"), required=False, min_value=0)
    max_params = forms.FloatField(label=_("最多参数量（B）"), required=False, min_value=0)
    BILLION = 1_000_000_000
    license = forms.CharField(label=_("许可证"), required=False, max_length=100)
    base_model = forms.CharField(label=_("基础模型"), required=False, max_length=300)

    def filters(self) -> dict[str, Any]:
        """The non-empty filters as the standings take them (parameter counts in
        weights); an invalid form filters nothing."""
        if not self.is_valid():
            return {}
        chosen = {k: v for k, v in self.cleaned_data.items() if v not in (None, "")}
        for name in ("min_params", "max_params"):
            if name in chosen:
                chosen[name] = round(chosen[name] * self.BILLION)
        return chosen


class BattleForm(forms.Form):
    prompt = forms.CharField(
        label=_("你的问题"), max_length=4000, widget=forms.Textarea(attrs={"rows": 3})
    )


class VoteForm(forms.Form):
    winner = forms.ChoiceField(choices=Winner.choices)
