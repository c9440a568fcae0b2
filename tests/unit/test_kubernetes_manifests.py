"""Every Kubernetes manifest in deploy/ against the Kubernetes schemas (offline: kubernetes-validate ships them),
and the settings that must agree with the service."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.conftest import ROOT

KUBERNETES = "1.33"  # the oldest release still supported upstream when this was written
MANIFESTS = sorted(p for p in (ROOT / "deploy").rglob("*.yaml") if p.name != "kustomization.yaml")


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def resources() -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for p in MANIFESTS for d in documents(p)}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_manifest_is_valid_kubernetes(path):
    for document in documents(path):
        kubernetes_validate.validate(document, KUBERNETES, strict=True)  # raises, naming the field


def test_kustomization_lists_every_cpu_manifest():
    folder = ROOT / "deploy" / "kubernetes"
    listed = set(yaml.safe_load((folder / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in folder.glob("*.yaml") if p.name != "kustomization.yaml"}


@pytest.mark.parametrize("name", ["digitserve", "digitserve-gpu"])
def test_deployments_match_the_service_settings(name):
    deployment = resources()[("Deployment", name)]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # The drain, then requests in flight (at most DIGITSERVE_TIMEOUT seconds), within the grace period.
    drain = float(env["DIGITSERVE_DRAIN_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] > int(env["DIGITSERVE_TIMEOUT"]) + drain
    assert "lifecycle" not in container  # the service drains itself on SIGTERM: no preStop sleep needed
    assert pod["securityContext"]["runAsNonRoot"] and container["securityContext"]["allowPrivilegeEscalation"] is False
    # One worker per CPU of the limit (and, on CPU, one ONNX Runtime thread each).
    limits = container["resources"]["limits"]
    assert int(env["DIGITSERVE_WORKERS"]) * int(env.get("DIGITSERVE_THREADS", "1")) == int(limits["cpu"])
    assert container["resources"]["requests"]["cpu"] == limits["cpu"]
    if name.endswith("gpu"):
        assert limits["nvidia.com/gpu"] == 1 and env["DIGITSERVE_PROVIDER"] == "cuda"


def test_autoscaler_targets_the_deployment():
    hpa = resources()[("HorizontalPodAutoscaler", "digitserve")]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "digitserve"
    assert hpa["spec"]["minReplicas"] >= 2
