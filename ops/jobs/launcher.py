"""Training runs as Kubernetes Jobs: build the manifest, submit, follow, cancel.

The manifests follow k8s/training/base (same volumes, security context and failure
policy), so a run submitted from the command line behaves like the declared ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from pydantic import BaseModel, Field, field_validator

TRAINER_LABEL = "relkd-trainer"
# torchrun's rendezvous port; the headless Service relkd-trainer exposes it.
RENDEZVOUS_PORT = 29500


class RunKind(StrEnum):
    TEACHER_TRAIN = "teacher-train"
    TEACHER_LABEL = "teacher-label"
    STUDENT_TRAIN = "student-train"


# The `relkd` command of each run, and the module torchrun starts for multi-node runs.
_COMMANDS: dict[RunKind, tuple[list[str], str | None]] = {
    RunKind.TEACHER_TRAIN: (["teacher", "train"], "training.teacher.train"),
    RunKind.TEACHER_LABEL: (["teacher", "label"], None),
    RunKind.STUDENT_TRAIN: (["student", "train"], "training.student.train"),
}
_DEFAULT_CONFIGS = {
    RunKind.TEACHER_TRAIN: "/etc/relkd/teacher.yaml",
    RunKind.TEACHER_LABEL: "/etc/relkd/teacher-label.yaml",
    RunKind.STUDENT_TRAIN: "/etc/relkd/student.yaml",
}


class RunSpec(BaseModel):
    """One training run: `relkd jobs submit KIND [--file FILE] [--set FIELD=VALUE] [flags]`."""

    kind: RunKind = Field(description="teacher-train, teacher-label or student-train.")
    name: str | None = Field(
        None, pattern=r"^[a-z0-9]([-a-z0-9]{0,50}[a-z0-9])?$", description="Job name."
    )
    namespace: str = Field("relevance-kd", description="Namespace the Job runs in.")
    image: str = Field("relkd-trainer:0.1.0", description="Trainer image (entrypoint relkd).")
    gpus: int = Field(0, ge=0, le=16, description="GPUs per node (nvidia.com/gpu).")
    nodes: int = Field(1, ge=1, le=64, description="Nodes; >1 runs torchrun in an Indexed Job.")
    config: str | None = Field(
        None, description="Config path inside the container (default: the kind's file)."
    )
    config_map: str = Field("relkd-training-config", description="ConfigMap at /etc/relkd.")
    data_claim: str = Field("relkd-data", description="PVC mounted at /var/lib/relkd.")
    cpu: str = Field("2", description="CPU request and limit per Pod.")
    memory: str = Field("8Gi", description="Memory request and limit per Pod.")
    shm: str = Field("2Gi", description="/dev/shm size for DataLoader workers.")
    backoff_limit: int = Field(3, ge=0, description="Pod retries (lost nodes) before failing.")
    active_deadline_seconds: int = Field(
        86400, ge=60, description="Wall-clock limit of the whole Job."
    )
    ttl_seconds_after_finished: int = Field(
        604800, ge=0, description="How long a finished Job (and its logs) is kept."
    )
    gpu_node_selector: dict[str, str] = Field(
        {"relkd.io/pool": "gpu"}, description="nodeSelector of Pods that request GPUs."
    )

    @field_validator("nodes")
    @classmethod
    def _multi_node_needs_torchrun(cls, nodes: int, info: Any) -> int:
        kind = info.data.get("kind")
        if nodes > 1 and kind is not None and _COMMANDS[kind][1] is None:
            raise ValueError(f"{kind} runs on one node; nodes must be 1")
        return nodes


def build_job(spec: RunSpec) -> dict[str, Any]:
    """The batch/v1 Job manifest of ``spec``, ready for ``kubectl apply -f -``."""
    relkd_args, module = _COMMANDS[spec.kind]
    config_path = spec.config or _DEFAULT_CONFIGS[spec.kind]
    labels = {
        "app.kubernetes.io/name": TRAINER_LABEL,
        "app.kubernetes.io/component": spec.kind.value,
        "app.kubernetes.io/part-of": "relevance-kd",
    }
    metadata: dict[str, Any] = {"namespace": spec.namespace, "labels": labels}
    if spec.name:
        metadata["name"] = spec.name
    else:
        metadata["generateName"] = f"relkd-{spec.kind.value}-"

    container: dict[str, Any] = {
        "name": "trainer",
        "image": spec.image,
        "imagePullPolicy": "Always",
        "envFrom": [{"configMapRef": {"name": "relkd-config", "optional": True}}],
        "resources": _resources(spec),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/relkd", "readOnly": True},
            {"name": "data", "mountPath": "/var/lib/relkd"},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "shm", "mountPath": "/dev/shm"},
        ],
    }
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.backoff_limit,
        "activeDeadlineSeconds": spec.active_deadline_seconds,
        "ttlSecondsAfterFinished": spec.ttl_seconds_after_finished,
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "Ignore",
                    "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                },
                # Exit code 2: usage or configuration error, a retry cannot fix it.
                {
                    "action": "FailJob",
                    "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [2]},
                },
            ]
        },
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": TRAINER_LABEL,
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "config", "configMap": {"name": spec.config_map}},
            {"name": "data", "persistentVolumeClaim": {"claimName": spec.data_claim}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "20Gi"}},
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm}},
        ],
    }
    if spec.gpus:
        pod_spec["nodeSelector"] = dict(spec.gpu_node_selector)
        pod_spec["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]

    if spec.nodes > 1:
        if not spec.name:
            # Pod 0's DNS name (<job>-0.relkd-trainer) is the rendezvous address.
            raise ValueError("name: multi-node runs need a fixed Job name")
        assert module is not None  # RunSpec rejects multi-node runs of single-node kinds
        job_spec |= {
            "completionMode": "Indexed",
            "completions": spec.nodes,
            "parallelism": spec.nodes,
        }
        pod_spec["subdomain"] = TRAINER_LABEL
        container["command"] = ["torchrun"]
        container["args"] = [
            f"--nnodes={spec.nodes}",
            f"--nproc-per-node={max(spec.gpus, 1)}",
            "--node-rank=$(JOB_COMPLETION_INDEX)",
            f"--master-addr={spec.name}-0.{TRAINER_LABEL}",
            f"--master-port={RENDEZVOUS_PORT}",
            "-m",
            module,
            "--config",
            config_path,
        ]
        container["ports"] = [{"name": "rendezvous", "containerPort": RENDEZVOUS_PORT}]
    else:
        # The image's entrypoint is `relkd`.
        container["args"] = [*relkd_args, "--config", config_path]

    job_spec["template"] = {"metadata": {"labels": dict(labels)}, "spec": pod_spec}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}


def _resources(spec: RunSpec) -> dict[str, dict[str, str]]:
    requests = {"cpu": spec.cpu, "memory": spec.memory}
    limits = {"cpu": spec.cpu, "memory": spec.memory}
    if spec.gpus:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(spec.gpus)
    return {"requests": requests, "limits": limits}


def job_phase(job: client.V1Job) -> str:
    """Succeeded, Failed, Suspended, Running or Pending, from the Job's status."""
    status = job.status
    for condition in (status.conditions if status else None) or []:
        if condition.status == "True" and condition.type in ("Complete", "SuccessCriteriaMet"):
            return "Succeeded"
        if condition.status == "True" and condition.type in ("Failed", "FailureTarget"):
            return "Failed"
        if condition.status == "True" and condition.type == "Suspended":
            return "Suspended"
    if status and (status.active or 0) > 0:
        return "Running"
    return "Pending"


class JobLauncher:
    """Training Jobs in one namespace, through the official ``kubernetes`` client."""

    def __init__(self, namespace: str, api_client: client.ApiClient | None = None) -> None:
        self.namespace = namespace
        self.api_client = api_client or client.ApiClient()
        self.batch = client.BatchV1Api(self.api_client)
        self.core = client.CoreV1Api(self.api_client)

    @classmethod
    def from_kubeconfig(cls, namespace: str, kubeconfig: Path | None = None) -> JobLauncher:
        if kubeconfig is not None:
            config.load_kube_config(config_file=str(kubeconfig))
        else:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
        return cls(namespace)

    def submit(self, manifest: dict[str, Any]) -> client.V1Job:
        return self.batch.create_namespaced_job(self.namespace, manifest)

    def list(self) -> list[client.V1Job]:
        jobs = self.batch.list_namespaced_job(
            self.namespace, label_selector=f"app.kubernetes.io/name={TRAINER_LABEL}"
        )
        return sorted(jobs.items, key=lambda job: job.metadata.name)

    def get(self, name: str) -> client.V1Job:
        return self.batch.read_namespaced_job(name, self.namespace)

    def watch(self, name: str, timeout_s: int = 0) -> Iterator[tuple[str, client.V1Job]]:
        """(phase, job) at every change of the Job, until it succeeds or fails."""
        stream = watch.Watch()
        kwargs: dict[str, Any] = {"field_selector": f"metadata.name={name}"}
        if timeout_s:
            kwargs["timeout_seconds"] = timeout_s
        try:
            for event in stream.stream(self.batch.list_namespaced_job, self.namespace, **kwargs):
                job = event["object"]
                if job.metadata.name != name:
                    continue
                phase = job_phase(job)
                yield phase, job
                if phase in ("Succeeded", "Failed"):
                    return
        finally:
            stream.stop()

    def pods(self, name: str) -> list[client.V1Pod]:
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=f"job-name={name}")
        return sorted(pods.items, key=lambda pod: pod.metadata.name)

    def logs(self, name: str, follow: bool = False) -> Iterator[str]:
        """Log lines of the Job's Pods, each prefixed with its Pod's name when several."""
        pods = self.pods(name)
        if not pods:
            raise LookupError(f"job {name!r} has no pods yet")
        for pod in pods:
            prefix = f"[{pod.metadata.name}] " if len(pods) > 1 else ""
            if follow:
                response = self.core.read_namespaced_pod_log(
                    pod.metadata.name,
                    self.namespace,
                    container="trainer",
                    follow=True,
                    _preload_content=False,
                )
                for line in response.stream():
                    for text in line.decode(errors="replace").splitlines():
                        yield prefix + text
            else:
                text = self.core.read_namespaced_pod_log(
                    pod.metadata.name, self.namespace, container="trainer"
                )
                for line in text.splitlines():
                    yield prefix + line

    def cancel(self, name: str) -> None:
        # Foreground: the Job disappears only after its Pods, so nothing keeps training.
        self.batch.delete_namespaced_job(
            name, self.namespace, body=client.V1DeleteOptions(propagation_policy="Foreground")
        )
