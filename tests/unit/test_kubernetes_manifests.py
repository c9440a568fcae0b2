"""The Kubernetes manifests in deploy/: each kustomize overlay rendered (`kubectl kustomize`, offline) and every
document of it, and of the plain manifests beside them, validated against the Kubernetes schemas (offline:
kubernetes-validate ships them); the settings that must agree with the service."""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache

import kubernetes_validate
import pytest
import yaml

from service.routes import PREDICTION_LABELS
from tests.conftest import ROOT

KUBERNETES = "1.33"  # the oldest release still supported upstream when this was written
FOLDER = ROOT / "deploy" / "kubernetes"
OVERLAYS = sorted(p.parent.name for p in (FOLDER / "overlays").glob("*/kustomization.yaml"))
# Plain manifests, applied with `kubectl apply -f` (not part of the base or an overlay).
PLAIN = sorted(p for p in FOLDER.rglob("*.yaml") if not {"base", "overlays"} & set(p.relative_to(FOLDER).parts))
REQUEST_RATE = FOLDER / "overlays" / "cpu-request-rate"

kubectl = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(kubectl is None, reason="kubectl missing: it renders the kustomize overlays")


def documents(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


@cache
def rendered(overlay: str) -> list[dict]:
    done = subprocess.run(
        [kubectl, "kustomize", str(FOLDER / "overlays" / overlay)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return documents(done.stdout)


def resources(overlay: str) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in rendered(overlay)}


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_valid_kubernetes(overlay):
    kinds = sorted(d["kind"] for d in rendered(overlay))
    assert kinds == ["Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"]
    for document in rendered(overlay):
        kubernetes_validate.validate(document, KUBERNETES, strict=True)  # raises, naming the field


@pytest.mark.parametrize("path", PLAIN, ids=lambda p: str(p.relative_to(ROOT)))
def test_plain_manifest_is_valid_kubernetes(path):
    for document in documents(path.read_text()):
        kubernetes_validate.validate(document, KUBERNETES, strict=True)


def test_the_base_lists_every_manifest_in_it():
    base = FOLDER / "base"
    listed = set(yaml.safe_load((base / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in base.glob("*.yaml") if p.name != "kustomization.yaml"}


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_selects_its_own_pods(overlay):
    """Overlays run side by side: each one's Service, budget and autoscaler reach its own pods only."""
    found = resources(overlay)
    (deployment,) = [d for d in found.values() if d["kind"] == "Deployment"]
    pods = deployment["spec"]["template"]["metadata"]["labels"]
    component = "gpu" if overlay == "gpu" else "cpu"
    assert pods["app.kubernetes.io/component"] == component
    for kind in ("Service", "PodDisruptionBudget"):
        (document,) = [d for d in found.values() if d["kind"] == kind]
        selector = document["spec"]["selector"]
        assert selector.get("matchLabels", selector) == pods
    (hpa,) = [d for d in found.values() if d["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]


@needs_kubectl
@pytest.mark.parametrize(("overlay", "name"), [("cpu", "digitserve"), ("gpu", "digitserve-gpu")])
def test_deployments_match_the_service_settings(overlay, name):
    deployment = resources(overlay)[("Deployment", name)]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # gRPC: the port the service listens on, exposed, and its health service probed at start.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["grpc"] == int(env["DIGITSERVE_GRPC_PORT"]) == container["startupProbe"]["grpc"]["port"]
    (service,) = [d for d in resources(overlay).values() if d["kind"] == "Service"]
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]} == {"http": "http", "grpc": "grpc"}
    # The drain, then requests in flight (at most DIGITSERVE_TIMEOUT seconds), within the grace period.
    drain = float(env["DIGITSERVE_DRAIN_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] > int(env["DIGITSERVE_TIMEOUT"]) + drain
    assert "lifecycle" not in container  # the service drains itself on SIGTERM: no preStop sleep needed
    assert pod["securityContext"]["runAsNonRoot"] and container["securityContext"]["allowPrivilegeEscalation"] is False
    # One worker per CPU of the limit (and, on CPU, one ONNX Runtime thread each).
    limits = container["resources"]["limits"]
    assert int(env["DIGITSERVE_WORKERS"]) * int(env.get("DIGITSERVE_THREADS", "1")) == int(limits["cpu"])
    # Not the node's cores (which the default would count): the limit's.
    assert int(env["DIGITSERVE_ALONE_THREADS"]) <= int(limits["cpu"])
    assert container["resources"]["requests"]["cpu"] == limits["cpu"]
    if name.endswith("gpu"):
        assert limits["nvidia.com/gpu"] == 1 and env["DIGITSERVE_PROVIDER"] == "cuda"


@needs_kubectl
def test_autoscaler_targets_the_deployment():
    hpa = resources("cpu")[("HorizontalPodAutoscaler", "digitserve")]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "digitserve"
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


@needs_kubectl
def test_the_request_rate_autoscaler_reads_the_adapters_metric_of_the_prediction_routes():
    hpa = resources("cpu-request-rate")[("HorizontalPodAutoscaler", "digitserve")]
    (metric,) = hpa["spec"]["metrics"]
    (rule,) = yaml.safe_load((REQUEST_RATE / "prometheus-adapter-values.yaml").read_text())["rules"]["custom"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == rule["name"]["as"]
    assert "digitserve_requests_total" in rule["seriesQuery"]  # what /metrics exports (service/metrics.py)
    routes = re.search(r'endpoint=~"([^"]+)"', rule["metricsQuery"]).group(1).replace("\\\\", "\\")
    assert {re.sub(r"\\(.)", r"\1", r) for r in routes.split("|")} == PREDICTION_LABELS
