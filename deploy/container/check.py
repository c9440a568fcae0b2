"""`make container-check`: build the CPU image, run it as production would, and check what it serves.

    python -m deploy.container.check             # build (layer cache kept), run, check, stop, remove
    python -m deploy.container.check --gpu       # also build the GPU image and check CUDA is among its providers

The container runs with a read-only root filesystem (a tmpfs on /tmp for BentoML's state), its HTTP and gRPC ports
published on ports of this machine's loopback. Checked: `/readyz` within 60 s (the time is printed), the user (uid
1034, not root), the image's HEALTHCHECK, real MNIST test digits and a photo of the photo suite through
`/classify`, the Open Inference Protocol route, the same over gRPC with tritonclient (port 8001), `/metrics`
counting them, and the drain on stop (`/readyz` 503 at once, exit code 0). The container is removed by its id
whatever happens. Then, with podman, the Kubernetes manifests against the image: the CPU overlay rendered by
`kubectl kustomize` and played by `podman kube play`, ready by its own probes (gRPC's health service for the
startup probe), a digit read over HTTP and digits over gRPC, the manifest's user and read-only root in force, and
`podman kube down`. Where no engine can run containers it prints one line saying why and exits 0 (`make test`
calls it: CI checks the images wherever it can).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from typing import Any, NamedTuple

import httpx
import numpy as np
import yaml

from deploy.container.build import build, step
from deploy.container.engine import ROOT, RUNS, Engine, find_engine
from harness.digits import as_png
from harness.photos import photo
from harness.server import free_port
from training.data import load_split

DIGITS = 200  # MNIST test digits sent to /classify (and 64 of them to the V2 route)
USER = "1034"


class CheckFailed(AssertionError):
    pass


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise CheckFailed(what)
    step(f"ok: {what}")


def wait_ready(url: str, engine: Engine, container: str, timeout: float = 60) -> float:
    """Until the container's /readyz answers 200; fails, with its log, if it exits or takes `timeout` s."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        if engine.run("inspect", "--format", "{{.State.Running}}", container) != "true":
            raise CheckFailed(f"the container exited; its log:\n{engine.logs(container)[-3000:]}")
        time.sleep(0.1)
    raise CheckFailed(f"/readyz not 200 after {timeout} s; the log:\n{engine.logs(container)[-3000:]}")


def healthy(engine: Engine, container: str, timeout: float = 40) -> bool:
    """The image's HEALTHCHECK passes: run at once by podman; Docker runs it on its own interval."""
    if engine.name == "podman":
        return engine.ok("healthcheck", "run", container, timeout=timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if engine.run("inspect", "--format", "{{.State.Health.Status}}", container) == "healthy":
            return True
        time.sleep(1)
    return False


def classify_digits(url: str) -> dict[str, Any]:
    test = load_split("test")
    images, labels = test.images[:DIGITS], test.labels[:DIGITS]
    with httpx.Client(base_url=url, timeout=30) as http:
        answers = [
            http.post("/classify", content=as_png(image), headers={"Content-Type": "image/png"}) for image in images
        ]
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200][:3]
        right = sum(a.json()["digit"] == label for a, label in zip(answers, labels, strict=True))
        body = {
            "inputs": [
                {"name": "pixels", "shape": [64, 28, 28], "datatype": "UINT8", "data": images[:64].ravel().tolist()}
            ]
        }
        v2 = http.post("/v2/models/digits/infer", json=body)
        v2_right = (
            int((np.argmax(np.reshape(v2.json()["outputs"][0]["data"], (64, -1)), axis=-1) == labels[:64]).sum())
            if v2.is_success
            else -1
        )
        shot = http.post(
            "/classify", content=photo(test.images[0], "plain", seed=1), headers={"Content-Type": "image/jpeg"}
        )
        metrics = http.get("/metrics").text
    return {
        "right": right,
        "v2_status": v2.status_code,
        "v2_right": v2_right,
        "photo": shot.json().get("digit") if shot.is_success else shot.text,
        "photo_label": int(test.labels[0]),
        "metrics": metrics,
    }


def infer_over_grpc(address: str) -> int:
    """64 MNIST test digits through the Open Inference Protocol over gRPC, with Triton's client: how many right."""
    import tritonclient.grpc as grpcclient

    test = load_split("test")
    client = grpcclient.InferenceServerClient(address)
    try:
        tensor = grpcclient.InferInput("pixels", [64, 28, 28], "UINT8")
        tensor.set_data_from_numpy(np.ascontiguousarray(test.images[:64]))
        digits = client.infer("digits", [tensor], client_timeout=30).as_numpy("digit")
    except grpcclient.InferenceServerException as exc:
        step(f"gRPC failed: {exc}")
        return -1
    finally:
        client.close()
    return int((digits == test.labels[:64]).sum())


def drain(url: str, engine: Engine, container: str) -> dict[str, Any]:
    """`stop` (SIGTERM, then SIGKILL after 30 s) while polling /readyz; what was seen and how long it took."""
    seen: list[int] = []
    stop = threading.Thread(target=engine.run, args=("stop", "-t", "30", container))
    started = time.monotonic()
    stop.start()
    while stop.is_alive():
        try:
            seen.append(httpx.get(f"{url}/readyz", timeout=1).status_code)
        except httpx.HTTPError:
            seen.append(0)
        time.sleep(0.1)
    stop.join()
    return {
        "seconds": time.monotonic() - started,
        "seen": seen,
        "exit_code": int(engine.run("inspect", "--format", "{{.State.ExitCode}}", container)),
        "log": engine.logs(container),
    }


class Started(NamedTuple):
    container: str  # its id
    url: str  # its HTTP port, published on this machine's loopback
    seconds: float  # from `run` to ready
    grpc: str  # host:port of its gRPC port (8001), published too


def start_container(engine: Engine, image: str, env: dict[str, str] | None = None) -> Started:
    """`image` run as production would (read-only root, a tmpfs on /tmp), its HTTP and gRPC ports published on
    free ports of this machine's loopback, until /readyz answers. The caller removes it. The check and make
    bench-container both start it so."""
    port, grpc_port = free_port(), free_port()
    options = ["run", "-d", "--read-only", "--tmpfs", "/tmp", "-p", f"127.0.0.1:{port}:3000"]
    options += ["-p", f"127.0.0.1:{grpc_port}:8001"]
    for name, value in (env or {}).items():
        options += ["-e", f"{name}={value}"]
    if engine.name == "podman":
        options += ["--health-interval", "disable"]  # podman times health checks with systemd; run by hand
    started = time.monotonic()
    container = engine.run(*options, image)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, engine, container)
    except BaseException:
        engine.run("rm", "--force", container, check=False)
        raise
    return Started(container, url, time.monotonic() - started, f"127.0.0.1:{grpc_port}")


def check_cpu(engine: Engine) -> dict[str, Any]:
    image = build(engine, "cpu")
    figures: dict[str, Any] = {"image": image, "size_mb": engine.image_mb(image)}
    container, url, figures["ready_s"], grpc_address = start_container(engine, image)
    try:
        step(f"ready {figures['ready_s']:.1f} s after `{engine.name} run`")
        expect(engine.run("exec", container, "id", "-u") == USER, f"runs as uid {USER}, not root")
        read_only = engine.run("inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", container)
        expect(
            read_only == "true" and not engine.ok("exec", container, "touch", "/home/bentoml/x"),
            "root filesystem read-only",
        )
        expect(healthy(engine, container), "HEALTHCHECK passes")
        served = classify_digits(url)
        expect(served["right"] >= 0.98 * DIGITS, f"/classify: {served['right']}/{DIGITS} MNIST test digits right")
        expect(served["v2_status"] == 200 and served["v2_right"] >= 62, f"V2 infer: {served['v2_right']}/64 right")
        grpc_right = infer_over_grpc(grpc_address)
        expect(grpc_right >= 62, f"V2 over gRPC (tritonclient.grpc, port 8001): {grpc_right}/64 right")
        expect(
            served["photo"] == served["photo_label"], f"a photo of a {served['photo_label']}: read {served['photo']}"
        )
        counted = [
            line
            for line in served["metrics"].splitlines()
            if line.startswith("digitserve_requests_total") and 'endpoint="/classify"' in line
        ]
        expect(bool(counted), "/metrics counts the /classify requests")
        drained = drain(url, engine, container)
        figures["stop_s"] = drained["seconds"]
        expect(503 in drained["seen"], "on SIGTERM /readyz answers 503 (draining) before the container exits")
        expect(
            "SIGTERM: draining" in drained["log"] and drained["exit_code"] == 0,
            f"drained and exited 0 in {drained['seconds']:.1f} s",
        )
    finally:
        engine.run("rm", "--force", container, check=False)
    return figures


def played_manifest(image: str, port: int, grpc_port: int) -> dict:
    """The CPU overlay as `kubectl kustomize` renders it, as podman can play it: the Deployment at 1 replica
    (podman publishes each replica's containerPort on the host: a second one would clash), its http port on
    127.0.0.1:`port` and its grpc port on `grpc_port`, the image just built. Service, budget and autoscaler are
    Kubernetes' own: podman skips them."""
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "deploy" / "kubernetes" / "overlays" / "cpu")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (deployment,) = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment"]
    deployment["spec"]["replicas"] = 1
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    container["image"] = f"localhost/{image}"
    published = {p["name"]: p for p in container["ports"]}
    published["http"].update(hostPort=port, hostIP="127.0.0.1")
    published["grpc"].update(hostPort=grpc_port, hostIP="127.0.0.1")
    return deployment


def passes(url: str, grpc_address: str, spec: dict) -> bool:
    """One try of a probe: an httpGet's 200, or a grpc probe's SERVING (grpc.health.v1, as the kubelet asks)."""
    timeout = spec.get("timeoutSeconds", 1)
    if "grpc" in spec:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(grpc_address) as channel:
            try:
                answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
            except grpc.RpcError:
                return False
        return answer.status == health_pb2.HealthCheckResponse.SERVING
    try:
        return httpx.get(url + spec["httpGet"]["path"], timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def probe(url: str, grpc_address: str, spec: dict) -> float:
    """The manifest's own probe (httpGet or grpc), as the kubelet runs it: every periodSeconds until it passes,
    failing after failureThreshold tries. podman 4.3 cannot run it itself (it turns an httpGet probe into a curl
    command, the port's name into port 0, and the image has no curl). The seconds it took."""
    started = time.monotonic()
    for _ in range(spec.get("failureThreshold", 3)):
        if passes(url, grpc_address, spec):
            return time.monotonic() - started
        time.sleep(spec.get("periodSeconds", 10))
    raise CheckFailed(f"probe {spec} failed {spec.get('failureThreshold', 3)} times")


def check_kube(engine: Engine, image: str) -> dict[str, Any]:
    """`podman kube play` of the CPU overlay: ready by its probes, a digit classified, taken down."""
    if engine.name != "podman" or not shutil.which("kubectl"):
        step("kube play skipped: it needs podman and kubectl (to render the kustomize overlay)")
        return {}
    port, grpc_port = free_port(), free_port()
    manifest, played = RUNS / "kube-play.yaml", played_manifest(image, port, grpc_port)
    manifest.write_text(yaml.safe_dump(played))
    url, grpc_address = f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}"
    (container,) = played["spec"]["template"]["spec"]["containers"]
    started = time.monotonic()
    engine.run("kube", "play", str(manifest))
    try:
        probe(url, grpc_address, container["startupProbe"])
        ready = time.monotonic() - started
        probe(url, grpc_address, container["readinessProbe"])
        probe(url, grpc_address, container["livenessProbe"])
        step(f"ok: kube play: the pod passed its startup, readiness and liveness probes {ready:.1f} s after play")
        expect(infer_over_grpc(grpc_address) >= 62, "kube play: digits read over gRPC")
        digit = load_split("test")
        answer = httpx.post(f"{url}/classify", content=as_png(digit.images[0]), headers={"Content-Type": "image/png"})
        expect(answer.status_code == 200 and answer.json()["digit"] == digit.labels[0], "kube play: a digit read")
        inspected = engine.run("ps", "--filter", "label=app.kubernetes.io/name=digitserve", "--format", "{{.Names}}")
        name = next(n for n in inspected.split() if not n.endswith("-infra"))
        user = engine.run("inspect", "--format", "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}}", name)
        expect(user == "1034:1034 true", f"kube play: the manifest's user and read-only root ({user})")
    finally:
        engine.run("kube", "down", str(manifest), check=False)
    left = engine.run("pod", "ps", "--filter", "name=digitserve", "--format", "{{.Name}}")
    expect(not left, "kube down: no pod left")
    return {"kube_ready_s": ready}


def check_gpu(engine: Engine) -> dict[str, Any]:
    image = build(engine, "gpu")
    code = "import onnxruntime as o; print(__import__('json').dumps(o.get_available_providers()))"
    providers = json.loads(engine.run("run", "--rm", image, "python3", "-c", code).splitlines()[-1])
    expect("CUDAExecutionProvider" in providers, f"GPU image: onnxruntime-gpu providers {providers}")
    return {"image": image, "size_mb": engine.image_mb(image)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="also build the GPU image and check its providers")
    args = parser.parse_args(argv)
    engine, why = find_engine()
    if engine is None:
        print(f"container-check skipped: {why}")
        return
    try:
        cpu = check_cpu(engine)
        cpu.update(check_kube(engine, cpu["image"]))
        figures = [cpu, *([check_gpu(engine)] if args.gpu else [])]
    except CheckFailed as failed:
        sys.exit(f"container-check FAILED: {failed}")
    for f in figures:
        extra = f", ready {f['ready_s']:.1f} s after run, stopped in {f['stop_s']:.1f} s" if "ready_s" in f else ""
        extra += f"; kube play ready in {f['kube_ready_s']:.1f} s" if "kube_ready_s" in f else ""
        print(f"container-check: {f['image']} {f['size_mb']:,.0f} MB{extra}")


if __name__ == "__main__":
    main()
