"""Deployments: serve a model version under its repo's name with N replicas."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from compute.models import Deployment, DeploymentStatus, Engine, ServedAdapter
from compute.services.engine_args import check_engine_args
from compute.services.scheduler import place_pending, reconcile_deployment
from portal.errors import Conflict, NotFound, PermissionDenied, PlatformError
from portal.models import ModelRepo, ModelVersion

MAX_REPLICAS = 64


def _check_replicas(replicas: int) -> None:
    if not isinstance(replicas, int) or not 0 <= replicas <= MAX_REPLICAS:
        raise PlatformError(
            f"replicas must be an integer from 0 to {MAX_REPLICAS}.", param="replicas"
        )


def deploy_model(
    actor: Any,
    repo: ModelRepo,
    *,
    version: ModelVersion | None = None,
    replicas: int = 1,
    engine: str = Engine.AUTO,
    gpus_per_replica: int = 0,
    engine_args: dict[str, Any] | None = None,
) -> Deployment:
    """Serve ``version`` (default: the newest) of ``repo`` as ``namespace/name``.

    An active deployment of the same name is replaced: it is stopped and the new one
    takes the name. Only a writer of the repo (or an admin) may deploy it. ``engine_args``
    are checked against the engine's schema here (400 on unknown or unsafe ones).
    """
    if not (
        actor.is_staff or ModelRepo.objects.restrict(actor, "write").filter(pk=repo.pk).exists()
    ):
        raise PermissionDenied("You may not deploy this model.")
    _check_replicas(replicas)
    if engine not in Engine.values:
        raise PlatformError(f"Unknown engine '{engine}'.", param="engine")
    version = version or repo.latest_version()
    if version is None or version.repo_id != repo.pk:
        raise NotFound("The model has no such version.")
    engine_args = engine_args or {}
    gpus_per_replica = check_engine_args(engine, engine_args, version, gpus_per_replica)
    with transaction.atomic():
        replaced = list(
            Deployment.objects.select_for_update().filter(
                served_name=repo.full_name, status=DeploymentStatus.ACTIVE
            )
        )
        for old in replaced:
            old.status = DeploymentStatus.STOPPED
            old.save(update_fields=["status", "updated_at"])
        dep = Deployment.objects.create(
            model_version=version,
            served_name=repo.full_name,
            engine=engine,
            replicas=replicas,
            gpus_per_replica=gpus_per_replica,
            engine_args=engine_args,
            created_by=actor,
        )
        # Adapters of this very base version follow it to its new deployment (from the
        # replaced one, or one stopped earlier).
        ServedAdapter.objects.filter(
            model_version__base_version=version, deployment__status=DeploymentStatus.STOPPED
        ).update(deployment=dep)
    for old in replaced:
        reconcile_deployment(old)
    reconcile_deployment(dep)
    place_pending()
    return dep


def scale_deployment(actor: Any, dep: Deployment, replicas: int) -> Deployment:
    _check_replicas(replicas)
    if dep.status != DeploymentStatus.ACTIVE:
        raise Conflict("A stopped deployment cannot be scaled.", code="deployment_stopped")
    Deployment.objects.filter(pk=dep.pk).update(replicas=replicas)
    dep.refresh_from_db()
    reconcile_deployment(dep)
    place_pending()
    return dep


def stop_deployment(actor: Any, dep: Deployment) -> Deployment:
    Deployment.objects.filter(pk=dep.pk).update(status=DeploymentStatus.STOPPED)
    dep.refresh_from_db()
    reconcile_deployment(dep)
    return dep


def is_served(full_name: str) -> bool:
    """Whether an active deployment serves ``full_name`` (the hub's model page asks this)."""
    return Deployment.objects.filter(served_name=full_name, status=DeploymentStatus.ACTIVE).exists()


MAX_SERVED_NAME = 300


def serve_adapter(version: ModelVersion, served_name: str) -> ServedAdapter | None:
    """Serve the LoRA adapter ``version`` as ``served_name`` on the replicas of the active
    deployment of its base version: their agents load it, and once an engine reports it
    loaded the gateway routes ``served_name`` there. None when the base version is not
    deployed. Idempotent; serving an existing name again moves it to this version and the
    base's current deployment. The caller checks who may do this."""
    if version.base_version_id is None:
        raise PlatformError("Only an adapter version (one with a base) can be served this way.")
    if not served_name or len(served_name) > MAX_SERVED_NAME:
        raise PlatformError(
            f"served_name must be 1 to {MAX_SERVED_NAME} characters.", param="served_name"
        )
    dep = Deployment.objects.filter(
        model_version_id=version.base_version_id, status=DeploymentStatus.ACTIVE
    ).first()
    if dep is None:
        return None
    if Deployment.objects.filter(served_name=served_name, status=DeploymentStatus.ACTIVE).exists():
        raise Conflict(f"A deployment is served as '{served_name}'.", code="name_taken")
    adapter, _ = ServedAdapter.objects.update_or_create(
        served_name=served_name, defaults={"deployment": dep, "model_version": version}
    )
    return adapter


def unserve_adapter(served_name: str) -> bool:
    """Stop serving ``served_name``: its route goes with the next route-table refresh and
    the agents unload it. False if it was not served."""
    deleted, _ = ServedAdapter.objects.filter(served_name=served_name).delete()
    return deleted > 0
