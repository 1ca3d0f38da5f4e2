"""Dataset processing pipelines: steps that turn a version's rows into a new version's.

Pure Python (no Django): the dataset services run :func:`run_pipeline` in a worker and
record each step's ``describe()`` in the new version's manifest. Steps are plug-ins in
:data:`STEPS`, imported on first use.
"""

from __future__ import annotations

from datasets.pipelines.base import STEPS, PipelineCancelled, PipelineError, Row, Step
from datasets.pipelines.runner import PipelineResult, parse_steps, run_pipeline

for _name, _target in {
    "dedup_exact": "datasets.pipelines.dedup:DedupExact",
    "dedup_near": "datasets.pipelines.dedup:DedupNear",
    "redact_pii": "datasets.pipelines.redact:RedactPii",
    "filter_length": "datasets.pipelines.filters:FilterLength",
    "filter_language": "datasets.pipelines.filters:FilterLanguage",
    "filter_regex": "datasets.pipelines.filters:FilterRegex",
    "split": "datasets.pipelines.split:Split",
    "to_chat": "datasets.pipelines.chat:ToChat",
}.items():
    STEPS.register_lazy(_name, _target)

__all__ = [
    "STEPS",
    "PipelineCancelled",
    "PipelineError",
    "PipelineResult",
    "Row",
    "Step",
    "parse_steps",
    "run_pipeline",
]
