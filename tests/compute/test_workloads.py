"""Workloads on the pool: placement against the same GPUs and slots as replicas, the
agent's heartbeat round trip (through the real agent API, with a node token), requeues
on failure or node loss with a new attempt and token, and stopping."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from compute.models import Node, NodeStatus, ReplicaStatus, Workload, WorkloadStatus
from compute.services import workloads
from compute.services.deployments import deploy_model, scale_deployment
from compute.services.nodes import create_node
from compute.services.workloads import kinds
from compute.tasks import reconcile_pool
from tests.compute.test_nodes_api import INVENTORY, agent_client
from tests.factories import model_repo


class RecordingKind:
    """A workload kind that describes a fixed spec and records every status change."""

    entry = "training.runner"

    def __init__(self) -> None:
        self.changes: list[tuple[str, str, str]] = []

    def describe(self, workload: Workload) -> dict[str, Any]:
        data = {"path": "data/train.jsonl", "size": 2, "sha256": "a" * 64, "url": "http://s3/x"}
        return {"spec": {"job": workload.ref, "attempt": workload.attempt}, "files": [data]}

    def on_status(self, workload: Workload, old: str, new: str, reason: str) -> None:
        self.changes.append((workload.ref, old, new))


@pytest.fixture
def kind():
    recorder = RecordingKind()
    kinds.register("test", recorder)
    yield recorder
    kinds.unregister("test")


@pytest.fixture(autouse=True)
def node_networks(settings):
    settings.COMPUTE_NODE_NETWORKS = ["10.0.0.0/8"]


@pytest.fixture
def base(owner):
    return model_repo(owner.user, "base-model")


class Agent:
    """A node's agent as the portal sees it: registers and heartbeats over the agent API."""

    def __init__(
        self,
        admin: Any,
        name: str,
        address: str,
        gpus: tuple[str, ...] = (),
        engines: tuple[str, ...] = ("transformers", "trainer"),
        slots: int | None = None,
    ) -> None:
        node, token = create_node(admin.user, name)
        if slots is not None:
            Node.objects.filter(pk=node.pk).update(max_replicas=slots)
        self.pk = node.pk
        self.client = agent_client(token)
        self.inventory = dict(
            INVENTORY,
            hostname=name,
            address=address,
            engines=list(engines),
            gpus=[{"index": i, "name": n, "memory_bytes": 80 << 30} for i, n in enumerate(gpus)],
        )
        self.register()

    def register(self) -> None:
        response = self.client.post("/api/compute/agent/register", self.inventory, format="json")
        assert response.status_code == 200, response.content

    def beat(self, *reports: dict[str, Any], replicas: list[Any] | None = None) -> dict[str, Any]:
        body = {"replicas": replicas or [], "workloads": list(reports)}
        response = self.client.post("/api/compute/agent/heartbeat", body, format="json")
        assert response.status_code == 200, response.content
        return response.json()

    def desired(self) -> list[dict[str, Any]]:
        return self.beat()["workloads"]


def report(workload: Workload, status: str, **extra: Any) -> dict[str, Any]:
    return {"id": workload.pk, "attempt": workload.attempt, "status": status, **extra}


def submit(base: Any, ref: str, **options: Any) -> Workload:
    return workloads.submit("test", ref, model_version=base.versions.get(), **options)


def fresh(workload: Workload) -> Workload:
    workload.refresh_from_db()
    return workload


# Placement


def test_gpu_workloads_and_replicas_never_share_a_gpu(admin, owner, base):
    Agent(admin, "gpu-box", "10.0.0.41", gpus=("NVIDIA H100",) * 4, engines=("vllm", "trainer"))
    dep = deploy_model(owner.user, base, replicas=2)  # vLLM: one GPU each
    replica_gpus = {i for r in dep.replica_set.all() for i in r.gpu_indices}
    assert replica_gpus == {0, 1}

    training = submit(base, "job-a", gpus=2)
    assert training.status == WorkloadStatus.ASSIGNED
    assert sorted(training.gpu_indices) == [2, 3]
    assert submit(base, "job-b", gpus=1).status == WorkloadStatus.PENDING  # no GPU left

    scale_deployment(owner.user, dep, 3)  # a replica waits too: the workload holds 2 and 3
    assert dep.replica_set.filter(status=ReplicaStatus.PENDING).count() == 1


def test_replica_placed_first_keeps_its_gpu_while_a_workload_waits(admin, owner, base):
    Agent(admin, "gpu-box", "10.0.0.42", gpus=("NVIDIA H100",) * 2, engines=("vllm", "trainer"))
    training = submit(base, "job-a", gpus=1)
    deploy_model(owner.user, base, replicas=1)
    waiting = submit(base, "job-b", gpus=1)
    assert training.gpu_indices == [0]
    assert base.versions.get().deployments.get().replica_set.get().gpu_indices == [1]
    assert waiting.status == WorkloadStatus.PENDING


def test_gpu_model_is_matched_in_the_reported_name_case_insensitively(admin, base):
    Agent(admin, "a100-box", "10.0.0.43", gpus=("NVIDIA A100-SXM4-80GB",) * 2)
    Agent(admin, "h100-box", "10.0.0.44", gpus=("NVIDIA H100 80GB HBM3",))
    on_h100 = submit(base, "job-h", gpus=1, gpu_model="h100")
    assert on_h100.node.name == "h100-box"
    assert submit(base, "job-a", gpus=2, gpu_model="A100").node.name == "a100-box"
    assert submit(base, "job-b", gpus=1, gpu_model="b200").status == WorkloadStatus.PENDING
    assert submit(base, "job-2h", gpus=2, gpu_model="h100").status == WorkloadStatus.PENDING


def test_cpu_workloads_need_a_node_with_the_trainer(admin, base):
    Agent(admin, "serving-only", "10.0.0.45", engines=("transformers",))
    workload = submit(base, "job-cpu")
    assert workload.status == WorkloadStatus.PENDING
    Agent(admin, "trainer-box", "10.0.0.46")  # registering places pending work
    workload = fresh(workload)
    assert workload.status == WorkloadStatus.ASSIGNED and workload.node.name == "trainer-box"
    assert workload.gpu_indices == []


def test_a_workload_takes_one_of_the_nodes_slots(admin, owner, base):
    Agent(admin, "small", "10.0.0.47", slots=2)
    first, second = submit(base, "job-1"), submit(base, "job-2")
    assert {first.status, second.status} == {WorkloadStatus.ASSIGNED}
    assert submit(base, "job-3").status == WorkloadStatus.PENDING
    dep = deploy_model(owner.user, base, replicas=1, engine="transformers")
    assert dep.replica_set.get().status == ReplicaStatus.PENDING  # both slots are taken


def test_higher_priority_first_then_oldest(admin, base):
    low = submit(base, "job-low", priority=0)
    high_old = submit(base, "job-high-old", priority=5)
    high_new = submit(base, "job-high-new", priority=5)
    node = Agent(admin, "one-slot", "10.0.0.48", slots=1)
    assert fresh(high_old).status == WorkloadStatus.ASSIGNED
    assert fresh(high_new).status == fresh(low).status == WorkloadStatus.PENDING

    workloads.stop(high_old, "cancelled")
    node.beat()  # the agent no longer runs it: stopped, and the slot is free
    assert fresh(high_old).status == WorkloadStatus.STOPPED
    reconcile_pool()
    assert fresh(high_new).status == WorkloadStatus.ASSIGNED
    assert fresh(low).status == WorkloadStatus.PENDING


# Heartbeat round trip


def test_heartbeat_hands_out_the_run_and_applies_its_reports(admin, base, kind):
    node = Agent(admin, "trainer", "10.0.0.51", gpus=("L4",) * 2)
    workload = submit(base, "job-1", gpus=2)
    (desired,) = node.desired()
    assert desired["id"] == workload.pk and desired["attempt"] == 1
    assert desired["kind"] == "test" and desired["entry"] == "training.runner"
    assert desired["gpu_indices"] == [0, 1] and desired["nproc"] == 2
    assert desired["model"]["version_id"] == base.versions.get().pk
    assert desired["spec"] == {"job": "job-1", "attempt": 1}
    assert desired["files"][0]["path"] == "data/train.jsonl"
    assert workloads.authenticate(desired["token"]) == workload

    node.beat(report(workload, "fetching"))
    assert fresh(workload).status == WorkloadStatus.ASSIGNED
    node.beat(report(workload, "running", pid=4242))
    assert (fresh(workload).status, workload.pid) == (WorkloadStatus.RUNNING, 4242)
    assert workload.started_at is not None
    node.beat(report(workload, "succeeded", exit_code=0))
    assert fresh(workload).status == WorkloadStatus.SUCCEEDED and workload.exit_code == 0
    assert workloads.authenticate(desired["token"]) is None  # finished: the token is dead
    assert node.desired() == []
    assert kind.changes == [
        ("job-1", "pending", "assigned"),
        ("job-1", "assigned", "running"),
        ("job-1", "running", "succeeded"),
    ]


def test_a_cpu_workload_gets_one_process(admin, base, kind):
    node = Agent(admin, "trainer", "10.0.0.52")
    submit(base, "job-1")
    (desired,) = node.desired()
    assert desired["nproc"] == 1 and desired["gpu_indices"] == []


def test_failed_run_is_requeued_with_a_new_attempt_and_token(admin, base, kind):
    node = Agent(admin, "trainer", "10.0.0.53")
    workload = submit(base, "job-1")
    old_token = node.desired()[0]["token"]
    node.beat(report(workload, "running"))
    node.beat(report(workload, "failed", exit_code=1, error="CUDA out of memory"))

    workload = fresh(workload)
    assert workload.attempt == 2
    assert workload.status == WorkloadStatus.ASSIGNED  # placed again at once
    assert workload.last_error == "CUDA out of memory" and workload.exit_code is None
    assert workloads.authenticate(old_token) is None
    (desired,) = node.desired()
    assert desired["attempt"] == 2 and desired["token"] != old_token
    assert workloads.authenticate(desired["token"]) == workload
    assert desired["spec"]["attempt"] == 2
    assert kind.changes[2:] == [
        ("job-1", "running", "failed"),
        ("job-1", "failed", "pending"),
        ("job-1", "pending", "assigned"),
    ]


def test_reports_of_a_superseded_attempt_are_ignored(admin, base, kind):
    node = Agent(admin, "trainer", "10.0.0.54")
    workload = submit(base, "job-1")
    first = report(workload, "running")
    node.beat(first)
    node.beat(report(workload, "failed", exit_code=1))
    assert fresh(workload).attempt == 2
    node.beat(first, dict(first, status="succeeded", exit_code=0))
    assert fresh(workload).status == WorkloadStatus.ASSIGNED


def test_after_the_last_attempt_the_workload_stays_failed(admin, base, kind):
    node = Agent(admin, "trainer", "10.0.0.55")
    workload = submit(base, "job-1")
    for _ in range(workload.max_attempts):
        node.beat(report(fresh(workload), "running"))
        node.beat(report(fresh(workload), "failed", exit_code=2, error="bad data"))
    workload = fresh(workload)
    assert (workload.status, workload.attempt, workload.exit_code) == ("failed", 3, 2)
    assert node.desired() == []
    assert kind.changes[-1] == ("job-1", "running", "failed")
    assert kind.changes.count(("job-1", "failed", "pending")) == 2


def test_a_run_the_agent_no_longer_reports_is_requeued(admin, base, kind):
    node = Agent(admin, "trainer", "10.0.0.56")
    workload = submit(base, "job-1")
    node.beat(report(workload, "running"))
    node.beat()  # the process vanished without a word
    workload = fresh(workload)
    assert workload.attempt == 2 and workload.status == WorkloadStatus.ASSIGNED
    assert "lost the run" in workload.last_error


def test_an_assigned_run_not_yet_reported_is_left_alone(admin, base, kind):
    node = Agent(admin, "trainer", "10.0.0.57")
    workload = submit(base, "job-1")
    node.beat()  # the agent has not picked it up yet
    assert (fresh(workload).status, workload.attempt) == (WorkloadStatus.ASSIGNED, 1)


# Node loss


def test_silent_node_runs_are_requeued_on_another_node(admin, base, kind):
    first = Agent(admin, "first", "10.0.0.61")
    workload = submit(base, "job-1")
    token = first.desired()[0]["token"]
    first.beat(report(workload, "running"))
    Agent(admin, "second", "10.0.0.62")
    Node.objects.filter(pk=first.pk).update(
        last_heartbeat_at=timezone.now() - timedelta(minutes=10)
    )
    reconcile_pool()
    workload = fresh(workload)
    assert Node.objects.get(pk=first.pk).status == NodeStatus.OFFLINE
    assert (workload.attempt, workload.node.name) == (2, "second")
    assert workloads.authenticate(token) is None
    assert ("job-1", "running", "pending") in kind.changes


def test_a_restarted_agent_gets_its_runs_back_as_new_attempts(admin, base, kind):
    node = Agent(admin, "trainer", "10.0.0.63")
    workload = submit(base, "job-1")
    old_token = node.desired()[0]["token"]
    node.beat(report(workload, "running"))
    node.register()  # the agent restarted: its runners died with it
    workload = fresh(workload)
    assert workload.attempt == 2 and workload.status == WorkloadStatus.ASSIGNED
    new_token = node.desired()[0]["token"]
    assert new_token != old_token
    assert workloads.authenticate(old_token) is None
    assert workloads.authenticate(new_token) == workload


def test_disabled_nodes_runs_are_requeued(admin, base, kind):
    node = Agent(admin, "trainer", "10.0.0.64")
    workload = submit(base, "job-1")
    node.beat(report(workload, "running"))
    response = admin.client().patch(
        f"/api/compute/nodes/{node.pk}/", {"status": "disabled"}, format="json"
    )
    assert response.status_code == 200
    workload = fresh(workload)
    assert (workload.status, workload.attempt, workload.node) == ("pending", 2, None)


# Stop and submit


def test_stop_is_stopping_until_the_agent_has_stopped_it(admin, base, kind):
    node = Agent(admin, "trainer", "10.0.0.71")
    workload = submit(base, "job-1")
    node.beat(report(workload, "running"))
    workloads.stop(workload, "cancelled by the user")
    assert fresh(workload).status == WorkloadStatus.STOPPING
    answer = node.beat(report(workload, "running"))
    assert answer["workloads"] == []  # not desired any more: the agent stops it
    node.beat(report(workload, "stopped", exit_code=-15))
    assert fresh(workload).status == WorkloadStatus.STOPPED
    assert kind.changes[-2:] == [
        ("job-1", "running", "stopping"),
        ("job-1", "stopping", "stopped"),
    ]


def test_stopping_a_pending_workload_stops_it_at_once(base, kind):
    workload = submit(base, "job-1")
    workloads.stop(workload, "cancelled")
    assert fresh(workload).status == WorkloadStatus.STOPPED
    assert kind.changes == [("job-1", "pending", "stopped")]


def test_submit_is_idempotent_and_a_finished_ref_starts_over(base, kind):
    workload = submit(base, "job-1")
    assert submit(base, "job-1").pk == workload.pk
    assert workloads.for_ref("test", "job-1") == workload
    workloads.stop(workload, "cancelled")
    again = submit(base, "job-1", priority=3)
    assert (again.pk, again.status, again.attempt, again.priority) == (
        workload.pk,
        "pending",
        2,
        3,
    )
    assert again.max_attempts == 4  # a fresh budget of three attempts


def test_tokens_are_checked(base, kind, admin):
    Agent(admin, "trainer", "10.0.0.72")
    workload = submit(base, "job-1")
    token = workloads.token_for(workload)
    assert workloads.authenticate(token) == workload
    forged = token[:-1] + ("0" if token[-1] != "0" else "1")
    for bad in [forged, "mrun-1.1", "mrun-x.1.abc", "", token + "x", "mnode-" + token]:
        assert workloads.authenticate(bad) is None


def test_an_unregistered_kind_is_failed_rather_than_breaking_the_heartbeat(admin, base):
    node = Agent(admin, "trainer", "10.0.0.73")
    workload = workloads.submit("nobody", "ref-1", model_version=None)
    assert workload.status == WorkloadStatus.ASSIGNED
    assert node.desired() == []
    workload = fresh(workload)
    assert workload.attempt == 2 and "no workload kind" in workload.last_error


@pytest.mark.parametrize(
    "bad",
    [
        [{"id": "x", "attempt": 1, "status": "running"}],
        [{"id": 1, "attempt": 1, "status": "exploded"}],
        [{"id": 1, "attempt": 1, "status": "failed", "error": "x" * 9000}],
        [{"id": 1, "attempt": 1, "status": "running"}] * 65,
        "not a list",
    ],
)
def test_malformed_workload_reports_are_refused(admin, bad):
    node = Agent(admin, "trainer", "10.0.0.74")
    response = node.client.post(
        "/api/compute/agent/heartbeat", {"replicas": [], "workloads": bad}, format="json"
    )
    assert response.status_code == 400


class BrokenKind(RecordingKind):
    """A kind whose hook fails with a database error (a duplicate row) after recording."""

    def on_status(self, workload: Workload, old: str, new: str, reason: str) -> None:
        super().on_status(workload, old, new, reason)
        Workload.objects.create(kind=workload.kind, ref=workload.ref)


def test_a_failing_on_status_neither_undoes_the_change_nor_breaks_a_node_sweep(admin, base):
    broken = BrokenKind()
    kinds.register("test", broken)
    try:
        node = Agent(admin, "trainer", "10.0.0.75")
        workload = submit(base, "job-1")
        node.beat(report(workload, "running"))
        assert fresh(workload).status == WorkloadStatus.RUNNING
        Node.objects.filter(pk=node.pk).update(
            last_heartbeat_at=timezone.now() - timedelta(minutes=10)
        )
        assert reconcile_pool()["offline"] == 1  # its transaction survived the hook's error
        assert (fresh(workload).status, workload.attempt) == (WorkloadStatus.PENDING, 2)
        assert ("job-1", "running", "pending") in broken.changes
    finally:
        kinds.unregister("test")


def test_a_kind_may_be_registered_again_as_a_new_instance(kind):
    replacement = RecordingKind()
    kinds.register("test", replacement)
    assert kinds.handler("test") is replacement
    with pytest.raises(ValueError, match="already registered"):
        kinds.register("test", BrokenKind())
