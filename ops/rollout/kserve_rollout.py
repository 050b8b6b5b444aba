"""A student as a KServe InferenceService, rolled out through the ``kserve`` SDK.

The predictor serves the Triton model repository written by `relkd student triton-repo`
(copied to object storage) with KServe's Triton runtime over the v2 (Open Inference)
protocol. A new version goes live as a canary: KServe (Serverless mode) keeps the
previous revision and splits traffic by ``canaryTrafficPercent``; `promote` sends all
traffic to the new revision and `rollback` pins it all back to the previous one.

This is the only module that imports ``kserve``: kserve and ``tritonclient.grpc`` define
the same protobuf symbols and cannot be imported into one process, so callers (the
CLI) import this module inside the commands that need it.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from kserve import (
    ApiClient,
    KServeClient,
    V1beta1InferenceService,
    V1beta1InferenceServiceSpec,
    V1beta1ModelFormat,
    V1beta1ModelSpec,
    V1beta1PredictorSpec,
    constants,
)
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from ops.jobs.crd_schema import field_path, forbid_unknown_fields
from ops.jobs.settings import K8sSettings
from ops.rollout.service_spec import Protocol, StudentService
from ops.rollout.settings import DeploymentMode

VERSION_ANNOTATION = "relkd.io/student-version"
PREVIOUS_VERSION_ANNOTATION = "relkd.io/previous-student-version"
PREVIOUS_STORAGE_URI_ANNOTATION = "relkd.io/previous-storage-uri"
DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
# Triton's own gRPC port, which student-inference's RELKD_TRITON_URL and the
# NetworkPolicies of k8s/base expect. KServe's stock Triton runtime listens on 9000.
TRITON_GRPC_PORT = 8001
MODEL_FORMAT = "triton"
# KServe's name for the model server container (the SDK's default is "").
CONTAINER_NAME = "kserve-container"
# Same Pod label as the plain Triton Deployment, so the NetworkPolicies apply.
_SERIALIZER = ApiClient()
POD_LABELS = {"app.kubernetes.io/name": "triton", "app.kubernetes.io/part-of": "relevance-kd"}


class RolloutError(RuntimeError):
    """A rollout step that cannot be done; the message says why and names the object."""


def build_inference_service(spec: StudentService) -> V1beta1InferenceService:
    """The InferenceService that serves ``spec``, as kserve SDK objects."""
    requests = {"cpu": spec.cpu, "memory": spec.memory}
    limits = {"cpu": spec.cpu_limit, "memory": spec.memory_limit}
    if spec.gpus:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(spec.gpus)
    model = V1beta1ModelSpec(
        name=CONTAINER_NAME,
        model_format=V1beta1ModelFormat(name=MODEL_FORMAT),
        runtime=spec.runtime,
        runtime_version=spec.runtime_version,
        storage_uri=spec.storage_uri,
        protocol_version=spec.protocol.value,
        resources=client.V1ResourceRequirements(requests=requests, limits=limits),
        security_context=client.V1SecurityContext(
            allow_privilege_escalation=False,
            read_only_root_filesystem=True,
            capabilities=client.V1Capabilities(drop=["ALL"]),
        ),
    )
    if spec.protocol is Protocol.GRPC_V2:
        # The runtime's arguments come first; Triton takes the last --grpc-port.
        model.args = [f"--grpc-port={TRITON_GRPC_PORT}"]
        # The port named h2c tells KServe to route HTTP/2 (gRPC) to it.
        model.ports = [
            client.V1ContainerPort(name="h2c", container_port=TRITON_GRPC_PORT, protocol="TCP")
        ]
    predictor = V1beta1PredictorSpec(
        model=model,
        min_replicas=spec.min_replicas,
        max_replicas=spec.max_replicas,
        canary_traffic_percent=spec.canary_traffic_percent,
        service_account_name=spec.service_account,
        labels=dict(POD_LABELS),
        security_context=client.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=10001,
            seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
        ),
    )
    if spec.gpus:
        predictor.node_selector = dict(spec.gpu_node_selector)
        predictor.tolerations = [
            client.V1Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
        ]
    return V1beta1InferenceService(
        api_version=constants.KSERVE_V1BETA1,
        kind=constants.KSERVE_KIND_INFERENCESERVICE,
        metadata=client.V1ObjectMeta(
            name=spec.name,
            namespace=spec.namespace,
            labels={"app.kubernetes.io/part-of": "relevance-kd"},
            annotations={
                DEPLOYMENT_MODE_ANNOTATION: spec.deployment_mode.value,
                VERSION_ANNOTATION: spec.version,
            },
        ),
        spec=V1beta1InferenceServiceSpec(predictor=predictor),
    )


def to_manifest(obj: Any) -> dict[str, Any]:
    """A kserve model object as the JSON-ready dict the API server receives (camelCase
    keys, unset fields left out, None kept inside plain dicts as a merge patch's null)."""
    # kserve's serializer, not kubernetes': kubernetes 37 serializes kserve's models
    # through their to_dict(), with snake_case keys the API server does not know.
    # For the same reason writes send this dict through KServeClient.api_instance
    # instead of KServeClient.create/patch, which pass the model objects on.
    return _SERIALIZER.sanitize_for_serialization(obj)


def _resource(namespace: str) -> tuple[str, str, str, str]:
    """group, version, namespace, plural: the leading arguments of CustomObjectsApi."""
    return (
        constants.KSERVE_GROUP,
        constants.KSERVE_V1BETA1_VERSION,
        namespace,
        constants.KSERVE_PLURAL_INFERENCESERVICE,
    )


def validate_manifest(manifest: dict[str, Any], settings: K8sSettings | None = None) -> list[str]:
    """Problems of ``manifest`` against the InferenceService CRD, unknown fields forbidden
    (each naming the offending field); empty when valid.

    Raises FileNotFoundError when ``RELKD_SCHEMAS_DIR`` holds no InferenceService CRD.
    """
    settings = settings or K8sSettings()
    crd_file = settings.schemas_dir / "crds" / "serving.kserve.io_inferenceservices.yaml"
    if not crd_file.is_file():
        raise FileNotFoundError(f"no InferenceService CRD at {crd_file}: set RELKD_SCHEMAS_DIR")
    validator = _inference_service_validator(crd_file)
    return [
        f"{field_path(error.absolute_path)}: {error.message}"
        for error in sorted(validator.iter_errors(manifest), key=lambda e: list(e.path))
    ]


@functools.cache
def _inference_service_validator(crd_file: Path) -> jsonschema.Draft7Validator:
    # The strictness rule of `relkd k8s validate` (ops.jobs.validate), over this one
    # CRD read with libyaml: its ManifestValidator parses every CRD in pure Python (~25 s).
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(crd_file.read_text(), Loader=loader)
    for version in crd["spec"]["versions"]:
        if version["name"] == constants.KSERVE_V1BETA1_VERSION:
            schema = forbid_unknown_fields(version["schema"]["openAPIV3Schema"])
            return jsonschema.Draft7Validator(schema)
    raise FileNotFoundError(f"{crd_file} does not define {constants.KSERVE_V1BETA1}")


@dataclass(frozen=True)
class TrafficTarget:
    revision: str
    percent: int
    latest: bool
    tag: str | None = None


@dataclass(frozen=True)
class RolloutStatus:
    """What `relkd rollout status` shows, read from the InferenceService."""

    name: str
    namespace: str
    deployment_mode: str
    ready: bool
    url: str | None
    version: str | None
    previous_version: str | None
    previous_storage_uri: str | None
    storage_uri: str | None
    canary_traffic_percent: int | None
    traffic: list[TrafficTarget] = field(default_factory=list)

    @classmethod
    def from_object(cls, isvc: dict[str, Any]) -> RolloutStatus:
        metadata = isvc.get("metadata") or {}
        annotations = metadata.get("annotations") or {}
        predictor = (isvc.get("spec") or {}).get("predictor") or {}
        status = isvc.get("status") or {}
        components = (status.get("components") or {}).get("predictor") or {}
        ready = any(
            condition.get("type") == "Ready" and condition.get("status") == "True"
            for condition in status.get("conditions") or []
        )
        return cls(
            name=metadata.get("name", ""),
            namespace=metadata.get("namespace", ""),
            deployment_mode=annotations.get(
                DEPLOYMENT_MODE_ANNOTATION, status.get("deploymentMode") or "Serverless"
            ),
            ready=ready,
            url=status.get("url") or components.get("url"),
            version=annotations.get(VERSION_ANNOTATION),
            previous_version=annotations.get(PREVIOUS_VERSION_ANNOTATION),
            previous_storage_uri=annotations.get(PREVIOUS_STORAGE_URI_ANNOTATION),
            storage_uri=(predictor.get("model") or {}).get("storageUri"),
            canary_traffic_percent=predictor.get("canaryTrafficPercent"),
            traffic=[
                TrafficTarget(
                    revision=target.get("revisionName", ""),
                    percent=int(target.get("percent") or 0),
                    latest=bool(target.get("latestRevision")),
                    tag=target.get("tag"),
                )
                for target in components.get("traffic") or []
            ],
        )


class StudentRollout:
    """deploy / promote / rollback / status of students, through a ``KServeClient``."""

    def __init__(self, kserve_client: KServeClient) -> None:
        self.kserve = kserve_client

    @classmethod
    def connect(cls, kubeconfig: Path | None = None) -> StudentRollout:
        """KServeClient's own config loading: ``kubeconfig`` if given, else in-cluster
        config inside a Pod, else ~/.kube/config."""
        config_file = str(kubeconfig) if kubeconfig is not None else None
        return cls(KServeClient(config_file=config_file))

    def get(self, name: str, namespace: str) -> dict[str, Any] | None:
        """The InferenceService as stored, or None when there is none."""
        try:
            return self.kserve.get(name, namespace=namespace)
        except RuntimeError as error:
            if _status_code(error) == 404:
                return None
            raise _rollout_error(f"read InferenceService {namespace}/{name}", error) from error
        except HTTPError as error:
            raise _unreachable(error) from error

    def deploy(self, spec: StudentService) -> RolloutStatus:
        """Create the InferenceService, or move the existing one to ``spec.storage_uri``
        with ``spec.canary_traffic_percent`` of the traffic (all of it when None).

        On an existing service only the model, the traffic split and the version
        annotations change; its serving shape (GPUs, replicas, runtime) stays.
        """
        where = f"{spec.namespace}/{spec.name}"
        current = self.get(spec.name, spec.namespace)
        if current is None:
            # The first revision takes all traffic whatever the canary says.
            first = build_inference_service(
                spec.model_copy(update={"canary_traffic_percent": None})
            )
            created = self._call(
                f"create InferenceService {where}",
                lambda: self.kserve.api_instance.create_namespaced_custom_object(
                    *_resource(spec.namespace), to_manifest(first)
                ),
            )
            if created is None:
                # The client only decodes the 201 an API server answers; on a 200 (kmock)
                # it returns None: read the stored object instead.
                created = self.get(spec.name, spec.namespace) or {}
            return RolloutStatus.from_object(created)

        status = RolloutStatus.from_object(current)
        if status.storage_uri is None:
            # e.g. the `triton:` predictor of k8s/components/kserve: adding `model:` beside
            # it would declare two predictors.
            raise RolloutError(
                f"InferenceService {where} does not declare its predictor as `model:` with a "
                "storageUri; delete it (or deploy under another name) to manage it here"
            )
        if status.storage_uri == spec.storage_uri:
            raise RolloutError(
                f"storage_uri: InferenceService {where} already serves {spec.storage_uri}"
            )
        annotations = {
            VERSION_ANNOTATION: spec.version,
            PREVIOUS_VERSION_ANNOTATION: status.version,
            PREVIOUS_STORAGE_URI_ANNOTATION: status.storage_uri,
        }
        if status.deployment_mode == DeploymentMode.RAW:
            if spec.canary_traffic_percent not in (None, 100):
                raise RolloutError(
                    f"canary_traffic_percent: InferenceService {where} runs in RawDeployment "
                    "mode, which has no canary traffic; deploy with 100 or recreate it Serverless"
                )
            canary = None
        else:
            # Explicit 100 when unset: a rollback leaves 0, which would starve the new version.
            canary = 100 if spec.canary_traffic_percent is None else spec.canary_traffic_percent
        patch = _merge_patch(annotations, storage_uri=spec.storage_uri, canary=canary)
        return self._patch(spec.name, spec.namespace, patch)

    def promote(self, name: str, namespace: str) -> RolloutStatus:
        """All traffic to the latest revision (the canary)."""
        status = self._require(name, namespace)
        where = f"{namespace}/{name}"
        if status.deployment_mode == DeploymentMode.RAW:
            raise RolloutError(f"InferenceService {where} is RawDeployment: nothing to promote")
        if status.canary_traffic_percent in (None, 100):
            raise RolloutError(f"InferenceService {where} has no canary to promote")
        return self._patch(name, namespace, _merge_patch({}, canary=100))

    def rollback(self, name: str, namespace: str) -> RolloutStatus:
        """Serverless: all traffic back to the previous rolled-out revision (canary 0%);
        the next `deploy` replaces the rejected version. RawDeployment: redeploy the
        previous storage URI."""
        status = self._require(name, namespace)
        where = f"{namespace}/{name}"
        if status.previous_version is None:
            raise RolloutError(f"InferenceService {where} has no previous version to roll back to")
        if status.deployment_mode != DeploymentMode.RAW:
            return self._patch(name, namespace, _merge_patch({}, canary=0))
        previous_uri = status.previous_storage_uri
        if not previous_uri:
            raise RolloutError(f"InferenceService {where} does not record the previous storage URI")
        restored = {
            VERSION_ANNOTATION: status.previous_version,
            # null deletes them (merge patch): the restored version has no known predecessor.
            PREVIOUS_VERSION_ANNOTATION: None,
            PREVIOUS_STORAGE_URI_ANNOTATION: None,
        }
        return self._patch(name, namespace, _merge_patch(restored, storage_uri=previous_uri))

    def status(self, name: str, namespace: str) -> RolloutStatus:
        return self._require(name, namespace)

    def _require(self, name: str, namespace: str) -> RolloutStatus:
        current = self.get(name, namespace)
        if current is None:
            raise RolloutError(
                f"InferenceService {namespace}/{name} not found: deploy a student first"
            )
        return RolloutStatus.from_object(current)

    def _patch(self, name: str, namespace: str, patch: dict[str, Any]) -> RolloutStatus:
        patched = self._call(
            f"patch InferenceService {namespace}/{name}",
            lambda: self.kserve.api_instance.patch_namespaced_custom_object(
                *_resource(namespace), name, patch
            ),
        )
        assert patched is not None  # a patch is answered 200 with the object
        return RolloutStatus.from_object(patched)

    @staticmethod
    def _call(action: str, operation: Callable[[], dict[str, Any] | None]) -> dict[str, Any] | None:
        try:
            return operation()
        except (ApiException, RuntimeError) as error:
            raise _rollout_error(action, error) from error
        except HTTPError as error:
            raise _unreachable(error) from error


def _merge_patch(
    annotations: dict[str, str | None],
    *,
    storage_uri: str | None = None,
    canary: int | None = None,
) -> dict[str, Any]:
    """A JSON merge patch: what is not in it keeps its value, an annotation set to None
    is deleted."""
    model = None
    if storage_uri is not None:
        # The SDK's model class requires modelFormat and defaults name to "": send both unchanged.
        model = V1beta1ModelSpec(
            name=CONTAINER_NAME,
            model_format=V1beta1ModelFormat(name=MODEL_FORMAT),
            storage_uri=storage_uri,
        )
    spec = V1beta1InferenceServiceSpec(
        predictor=V1beta1PredictorSpec(model=model, canary_traffic_percent=canary)
    )
    patch: dict[str, Any] = {"spec": to_manifest(spec)}
    if annotations:
        # A plain dict: the metadata model class rejects the None that deletes one.
        patch["metadata"] = {"annotations": annotations}
    return patch


def _api_exception(error: BaseException) -> ApiException | None:
    # KServeClient re-raises ApiException as a RuntimeError inside its except block,
    # so the original (with the HTTP status) is the RuntimeError's context.
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ApiException):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _status_code(error: BaseException) -> int | None:
    api_error = _api_exception(error)
    return api_error.status if api_error is not None else None


_HINTS = {
    401: "the credentials were rejected: check RELKD_KUBECONFIG or the Pod's ServiceAccount",
    403: "forbidden by RBAC: the caller needs get/create/patch on "
    "inferenceservices.serving.kserve.io in this namespace",
    404: "not found: is KServe installed (serving.kserve.io/v1beta1) and does the namespace exist?",
    409: "conflict: the object changed or already exists; retry",
    422: "rejected as invalid by the API server",
}


def _rollout_error(action: str, error: Exception) -> RolloutError:
    api_error = _api_exception(error)
    if api_error is None:
        return RolloutError(f"{action}: {error}")
    message = api_error.reason or ""
    with contextlib.suppress(json.JSONDecodeError, AttributeError, TypeError):
        message = json.loads(api_error.body or "{}").get("message") or message
    hint = _HINTS.get(api_error.status or 0, "")
    detail = f"{message} ({hint})" if hint else message
    return RolloutError(f"{action}: Kubernetes API error {api_error.status}: {detail}")


def _unreachable(error: HTTPError) -> RolloutError:
    host = client.Configuration.get_default_copy().host
    return RolloutError(f"cannot reach the Kubernetes API at {host}: {error}")
