"""The gRPC TLS overlay (k8s/overlays/prod-gpu-tls): every gRPC server gets its
certificate and the settings that turn TLS and mTLS on, and its probes move to the
plaintext health-only port, the one port kubelet's gRPC probe can still reach."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from ops.jobs.settings import REPO_ROOT, K8sSettings
from ops.jobs.validate import render, split_documents

SERVICES = (
    "candidate-generation",
    "teacher-labeling",
    "student-inference",
    "label-store",
    "disagreement-monitor",
)
TLS_FILES = (
    "RELKD_GRPC_TLS_CERT_FILE",
    "RELKD_GRPC_TLS_KEY_FILE",
    "RELKD_GRPC_TLS_CLIENT_CA_FILE",
    "RELKD_GRPC_TLS_CA_FILE",
    "RELKD_GRPC_TLS_CLIENT_CERT_FILE",
    "RELKD_GRPC_TLS_CLIENT_KEY_FILE",
)


@pytest.fixture(scope="module")
def objects(k8s_settings: K8sSettings) -> dict[tuple[str, str], dict]:
    rendered = render(REPO_ROOT / "k8s/overlays/prod-gpu-tls", k8s_settings.kubectl)
    return {(o["kind"], o["metadata"]["name"]): o for o in split_documents(rendered)}


def _config(objects: dict[tuple[str, str], dict]) -> dict[str, str]:
    return next(o["data"] for (kind, name), o in objects.items() if name == "relkd-config")


def _mount(deployment: dict) -> PurePosixPath:
    pod = deployment["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "grpc-tls")
    assert volume["secret"]["secretName"] == f"{deployment['metadata']['name']}-grpc-tls"
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "grpc-tls")
    assert mount["readOnly"] is True
    return PurePosixPath(mount["mountPath"])


def test_every_service_serves_tls_and_is_probed_on_the_health_port(objects) -> None:
    config = _config(objects)
    health_port = int(config["RELKD_GRPC_HEALTH_PORT"])
    for name in SERVICES:
        deployment = objects[("Deployment", name)]
        mount = _mount(deployment)
        for setting in TLS_FILES:  # each file the settings name is in the mounted Secret
            assert PurePosixPath(config[setting]).parent == mount, setting
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert health_port in [p["containerPort"] for p in container["ports"]], name
        serving = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
        assert serving != health_port
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == health_port, (name, probe)


def test_triton_serves_mutual_tls_with_its_certificate(objects) -> None:
    triton = objects[("Deployment", "triton")]
    mount = _mount(triton)
    args = triton["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--grpc-use-ssl=true" in args and "--grpc-use-ssl-mutual=true" in args
    assert f"--grpc-server-cert={mount / 'tls.crt'}" in args
    assert f"--grpc-root-cert={mount / 'ca.crt'}" in args


def test_the_base_overlay_stays_plaintext(k8s_settings: K8sSettings) -> None:
    rendered = render(REPO_ROOT / "k8s/overlays/prod-gpu", k8s_settings.kubectl)
    config = next(
        o["data"]
        for o in split_documents(rendered)
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("relkd-config")
    )
    assert not {*TLS_FILES, "RELKD_GRPC_HEALTH_PORT"} & set(config)
