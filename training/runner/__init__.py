"""The fine-tuning runner: a node-side process the agent starts for one training job.

``python -m training.runner --spec spec.json`` (see ``/work``'s contract: the spec format,
the events and uploads). It imports torch, transformers, peft, httpx, numpy and
safetensors only; never Django, Celery, the portal or the compute control plane.
"""
