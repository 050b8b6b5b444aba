"""The controller's cluster promoter on a Kubernetes API emulator: a round's export
becomes a Triton repository on the data volume, a canary of the InferenceService, and,
once Ready, all its traffic; a canary that never gets Ready is rolled back. kserve is in
this process, so the repository must be written outside it (tritonclient's protos)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops.loop.cluster import KServePromoter
from ops.rollout.kserve_rollout import StudentRollout
from ops.rollout.service_spec import StudentService
from services.controller.settings import ControllerSettings
from training.export.exporter import export_student

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"


@pytest.fixture(scope="module")
def round_export(make_cross_encoder, tmp_path_factory) -> Path:
    export = tmp_path_factory.mktemp("round-0004") / "export"
    export_student(make_cross_encoder(4), export, int8=False)
    return export


def _promoter(emulator, kubeconfig, timeout_s: float) -> tuple[KServePromoter, StudentRollout]:
    rollout = StudentRollout.connect(kubeconfig)
    service = StudentService(
        name="student", namespace="ml", storage_uri="s3://m/v0", gpus=0, canary_traffic_percent=10
    )
    rollout.deploy(service)  # the student serving before the loop
    settings = ControllerSettings(model_name="tiny-ce", canary_ready_timeout_s=timeout_s)
    return KServePromoter(rollout, service, settings, poll_s=0.05), rollout


def _set_ready(emulator, ready: bool) -> None:
    emulator.custom_objects().patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        "ml",
        PLURAL,
        "student",
        {"status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}},
    )


def test_promotion_is_a_canary_then_all_traffic(emulator, kubeconfig, round_export: Path) -> None:
    promoter, rollout = _promoter(emulator, kubeconfig, timeout_s=10)
    _set_ready(emulator, True)
    served = promoter.promote(round_export, 4)
    status = rollout.status("student", "ml")
    assert status.storage_uri == "pvc://relkd-data/controller/round-0004/triton"
    assert (status.version, status.previous_version) == ("4", "v0")
    assert status.canary_traffic_percent == 100
    assert served == "InferenceService ml/student version 4"
    # The repository KServe reads: the CPU variant of the export as version 4.
    assert (round_export.parent / "triton" / "tiny-ce" / "4" / "model.onnx").is_file()
    assert "rolled back from 4" in promoter.rollback(4)
    assert rollout.status("student", "ml").canary_traffic_percent == 0


def test_a_canary_that_never_gets_ready_is_rolled_back(
    emulator, kubeconfig, round_export: Path
) -> None:
    promoter, rollout = _promoter(emulator, kubeconfig, timeout_s=0.3)
    _set_ready(emulator, False)
    with pytest.raises(TimeoutError, match=r"not Ready after 0\.3 s; rolled back"):
        promoter.promote(round_export, 4)
    assert rollout.status("student", "ml").canary_traffic_percent == 0
