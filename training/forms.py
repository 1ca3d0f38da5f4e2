"""The create form of the fine-tuning pages; it calls the same service as ``/v1``
(:func:`training.services.jobs.create_job`) and shows its errors on the field they name."""

from __future__ import annotations

from typing import Any

from django import forms
from django.apps import apps
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from datasets.services.files import list_files
from portal.errors import PlatformError
from portal.models import ModelRepo
from training.models import FineTuningJob, Method
from training.services import hyper
from training.services.jobs import create_job

MAX_CHOICES = 500
# The datasets sub-platform is reached through its services only (the import contract):
# its models by name, as the jobs' foreign keys name them, and these values of theirs.
READY = "ready"  # VersionState.READY
HUB = "hub"  # Origin.HUB: a dataset of the hub, not a /v1/files upload
FINE_TUNE = "fine-tune"  # FilePurpose.FINE_TUNE
AUTO = hyper.AUTO
# The service's ``param`` (its name in the /v1 request) → the form field showing it.
PARAMS = {
    "method": "method",
    "method.type": "method",
    "adapter": "adapter_type",
    "adapter.type": "adapter_type",
    "adapter.r": "lora_r",
    "adapter.alpha": "lora_alpha",
    "adapter.dropout": "lora_dropout",
    "adapter.target_modules": "lora_target_modules",
    **{f"hyperparameters.{name}": name for name in hyper.DPO_KEYS},
}
ADAPTER_CHOICES = [("lora", _("LoRA（低秩适配器）")), ("full", _("全参数微调"))]
METHOD_CHOICES = [
    (Method.SUPERVISED, _("监督微调（SFT）")),
    (Method.DPO, _("直接偏好优化（DPO）")),
]


def _auto(label: Any, help_text: Any) -> forms.CharField:
    return forms.CharField(label=label, initial=AUTO, max_length=32, help_text=help_text)


def model_choices(user: Any) -> list[tuple[str, str]]:
    """The models ``user`` may read that have a full (non-adapter) version, by name."""
    repos = (
        ModelRepo.objects.restrict(user, "read")
        .filter(versions__base_version__isnull=True)
        .distinct()
        .order_by("namespace", "name")
    )
    return [(repo.full_name, repo.full_name) for repo in repos[:MAX_CHOICES]]


def dataset_choices(user: Any) -> list[tuple[str, str]]:
    """The user's ready dataset versions (``owner/name@N``; theirs and their
    organisations') and their processed fine-tune files (``file-…``), newest first."""
    repos = apps.get_model("datasets", "DatasetRepo")
    mine = Q(repo__owner_user=user) | Q(repo__owner_org__memberships__user=user)
    readable = repos.objects.restrict(user, "read").filter(origin=HUB)
    versions = (
        apps.get_model("datasets", "DatasetVersion")
        .objects.filter(mine, repo__in=readable, state=READY)
        .select_related("repo")
        .distinct()
        .order_by("-created_at", "-pk")[:MAX_CHOICES]
    )
    choices = [
        (f"{v.repo.full_name}@{v.number}", f"{v.repo.full_name} v{v.number} · {v.format}")
        for v in versions
    ]
    files = list_files(user, purpose=FINE_TUNE, limit=MAX_CHOICES).files
    choices += [(f.id, f"{f.filename} ({f.id})") for f in files if f.version.state == READY]
    return choices


def _number(value: str, kind: type) -> Any:
    """``auto``, or the text as ``kind`` (the service checks the range)."""
    text = value.strip().lower()
    if text == AUTO:
        return AUTO
    try:
        number = float(text)
    except ValueError:
        raise forms.ValidationError(_("请填写 auto 或一个数字。")) from None
    if kind is int and number.is_integer():
        return int(number)
    return number


class FineTuneForm(forms.Form):
    """Everything ``POST /v1/fine_tuning/jobs`` takes that a person sets by hand."""

    model = forms.ChoiceField(label=_("基础模型"))
    training_file = forms.ChoiceField(label=_("训练数据"))
    validation_file = forms.ChoiceField(label=_("验证数据（可选）"), required=False)
    method = forms.ChoiceField(label=_("方法"), choices=METHOD_CHOICES, initial=Method.SUPERVISED)
    n_epochs = _auto(_("训练轮数"), _("auto 或 1–50"))
    batch_size = _auto(_("批大小"), _("auto 或 1–256"))
    learning_rate_multiplier = _auto(_("学习率倍数"), _("auto 或 (0, 10]"))
    beta = _auto(_("DPO beta"), _("仅 DPO：auto 或 (0, 2]"))
    adapter_type = forms.ChoiceField(label=_("微调方式"), choices=ADAPTER_CHOICES, initial="lora")
    lora_r = forms.IntegerField(label=_("LoRA 秩 r"), initial=8)
    lora_alpha = forms.FloatField(label=_("LoRA alpha"), initial=16)
    lora_dropout = forms.FloatField(label=_("LoRA dropout"), initial=0.0)
    lora_target_modules = forms.CharField(
        label=_("LoRA 目标模块"), initial="q_proj, v_proj", max_length=1000
    )
    suffix = forms.CharField(
        label=_("模型名后缀"), required=False, max_length=64, help_text=_("a-z、0-9 和 -")
    )
    seed = forms.IntegerField(label=_("随机种子"), required=False, help_text=_("留空则随机"))

    def __init__(self, user: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        data = dataset_choices(user)
        self._choices("model", model_choices(user))
        self._choices("training_file", data)
        self._choices("validation_file", [("", _("（不使用）")), *data])

    def _choices(self, name: str, choices: list[tuple[str, Any]]) -> None:
        field = self.fields[name]
        assert isinstance(field, forms.ChoiceField)
        field.choices = choices

    def clean_n_epochs(self) -> Any:
        return _number(self.cleaned_data["n_epochs"], int)

    def clean_batch_size(self) -> Any:
        return _number(self.cleaned_data["batch_size"], int)

    def clean_learning_rate_multiplier(self) -> Any:
        return _number(self.cleaned_data["learning_rate_multiplier"], float)

    def clean_beta(self) -> Any:
        return _number(self.cleaned_data["beta"], float)

    def arguments(self) -> dict[str, Any]:
        """The keyword arguments of :func:`create_job` the cleaned form stands for."""
        data = self.cleaned_data
        method = data["method"]
        names = hyper.DPO_KEYS if method == Method.DPO else hyper.SUPERVISED_KEYS
        adapter: dict[str, Any] = {"type": "full"}
        if data["adapter_type"] == "lora":
            modules = [m.strip() for m in data["lora_target_modules"].split(",") if m.strip()]
            adapter = {
                "type": "lora",
                "r": data["lora_r"],
                "alpha": data["lora_alpha"],
                "dropout": data["lora_dropout"],
                "target_modules": modules,
            }
        return {
            "model": data["model"],
            "training_file": data["training_file"],
            "validation_file": data["validation_file"] or None,
            "suffix": data["suffix"],
            "seed": data["seed"],
            "method": {
                "type": method,
                method: {"hyperparameters": {name: data[name] for name in names}},
            },
            "adapter": adapter,
        }

    def save(self, grant: Any = None) -> FineTuningJob | None:
        """Create the job (billed as ``grant`` says, as on /v1); the service's error goes
        on the field its ``param`` names."""
        try:
            return create_job(self.user, grant=grant, **self.arguments())
        except PlatformError as exc:
            field = PARAMS.get(exc.param or "", exc.param)
            self.add_error(field if field in self.fields else None, exc.message)
            return None
