"""Every setting of the service, read once from environment variables (the README's table lists them)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from service.contract import VARIANTS, variant_path

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "mnist_cnn.onnx"


Provider = Literal["auto", "cuda", "cpu"]  # auto: CUDA where onnxruntime-gpu finds a GPU, else CPU


class ConfigError(ValueError):
    """A DIGITSERVE_* variable has a value the service cannot use."""


def _number(env: Mapping[str, str], name: str, default: float, kind: type = int, minimum: float = 1) -> float:
    """A numeric DIGITSERVE_* variable of type `kind`, at least `minimum` (and finite); `default` when unset."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not {'an integer' if kind is int else 'a number'}") from None
    if not minimum <= value < float("inf"):
        raise ConfigError(f"{name}={value} must be {'' if kind is int else 'finite and '}at least {minimum}")
    return value


def _fraction(env: Mapping[str, str], name: str, default: float) -> float:
    value = _number(env, name, default, float, minimum=0)
    if value > 1:
        raise ConfigError(f"{name}={value} must be between 0 and 1")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in ("true", "1", "yes", "false", "0", "no"):
        raise ConfigError(f"{name}={raw!r}: use true or false")
    return raw in ("true", "1", "yes")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    return _number(env, name, default, int, minimum)


@dataclass(frozen=True)
class Settings:
    model_path: Path
    cache_dir: Path | None  # ONNX Runtime's optimised graphs, saved once and reused by every start
    provider: Provider
    cuda_tf32: bool  # CUDA computes fp32 convolutions and matrix products in TF32 (docs/gpu.md); off: full fp32
    workers: int | str  # a count, or "cpu_count": BentoML counts the cores when the server starts
    threads: int  # ONNX Runtime intra-op threads per worker
    alone_threads: int  # intra-op threads for a request alone in its worker (runtime.py); <= threads: off
    max_bytes: int
    max_pixels: int
    max_batch: int
    batch_size: int  # adaptive batching: most images in one ONNX Runtime call
    batch_latency_ms: int  # adaptive batching: a request not served within this is answered 503
    timeout: int  # seconds a request may take, body upload included (BentoML answers 504 past it)
    max_concurrency: int  # prediction requests in flight per worker; 429 past it (middleware.py)
    access_log: bool
    tracing: bool  # OpenTelemetry spans for the prediction routes too (BentoML traces every route otherwise)
    drain_seconds: float  # on SIGTERM: not ready, still serving, for this long before stopping (lifecycle.py)
    grpc_port: int  # the Open Inference Protocol over gRPC (grpc_server.py), in every worker; 0: off
    min_confidence: float  # below it a prediction is answered 422 "not confidently a digit"; 0: never (api.py)
    api_key: str = field(default="", repr=False)  # never printed: "" leaves the prediction endpoints open

    @property
    def cuda_batch(self) -> int:
        """On CUDA, the images of every ONNX Runtime call (service/runtime.py): the largest batch the batcher makes
        or one request may send alone."""
        return max(self.batch_size, self.max_batch)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        """The settings from DIGITSERVE_* variables: the process's, or `env` (tests pass their own)."""
        provider = env.get("DIGITSERVE_PROVIDER", "auto").strip().lower() or "auto"
        if provider not in get_args(Provider):
            raise ConfigError(f"DIGITSERVE_PROVIDER={provider!r}: use auto, cuda or cpu")
        variant = env.get("DIGITSERVE_VARIANT", "fp32").strip().lower() or "fp32"
        if variant not in VARIANTS:
            raise ConfigError(f"DIGITSERVE_VARIANT={variant!r}: use one of {', '.join(VARIANTS)}")
        cache = env.get("DIGITSERVE_CACHE_DIR", str(Path(tempfile.gettempdir()) / "digitserve")).strip()
        return cls(
            model_path=variant_path(Path(env.get("DIGITSERVE_MODEL") or DEFAULT_MODEL), variant),
            cache_dir=Path(cache) if cache else None,
            provider=provider,
            cuda_tf32=_flag(env, "DIGITSERVE_CUDA_TF32", True),
            # One worker per core, one intra-op thread each: measured fastest on 2 cores. "cpu_count" is resolved
            # by BentoML where the server runs (cgroup CPU limits included), not where a Bento is built.
            workers=_int(env, "DIGITSERVE_WORKERS", 0) or "cpu_count",
            threads=_int(env, "DIGITSERVE_THREADS", 1),
            alone_threads=_int(env, "DIGITSERVE_ALONE_THREADS", min(4, usable_cores()), minimum=0),
            max_bytes=_int(env, "DIGITSERVE_MAX_BYTES", 12_000_000),  # a 12-megapixel phone JPEG is 2-7 MB
            max_pixels=_int(env, "DIGITSERVE_MAX_PIXELS", 25_000_000),
            max_batch=_int(env, "DIGITSERVE_MAX_BATCH", 64),
            # Why these two: docs/benchmarks.md, "Adaptive batching settings" (the per-image cost stops falling
            # by 64 images; the latency limit sits above the locust mix's p99). Past the limit a request is shed
            # (503) rather than queued without bound.
            batch_size=_int(env, "DIGITSERVE_BATCH_SIZE", 64),
            batch_latency_ms=_int(env, "DIGITSERVE_BATCH_LATENCY_MS", 500),
            timeout=_int(env, "DIGITSERVE_TIMEOUT", 10),
            # Queueing bounds latency (Little's law: waiting = in flight / throughput): more admitted requests
            # would only wait longer (docs/loadtesting.md, the overload scenario).
            max_concurrency=_int(env, "DIGITSERVE_MAX_CONCURRENCY", 32),
            # 0 (stop at once) where people run it by hand: BentoML's arbiter turns Ctrl-C into SIGTERM for the
            # workers, so a drain would delay every Ctrl-C. The Bentos (container images) and the Kubernetes
            # manifests set 5: Kubernetes takes a terminating pod out of its Service within a few seconds.
            drain_seconds=_number(env, "DIGITSERVE_DRAIN_SECONDS", 0.0, float, minimum=0),
            # Triton's and KServe's port for it; every worker listens on it (SO_REUSEPORT spreads the connections).
            grpc_port=_int(env, "DIGITSERVE_GRPC_PORT", 8001, minimum=0),
            min_confidence=_fraction(env, "DIGITSERVE_MIN_CONFIDENCE", 0.0),
            access_log=_flag(env, "DIGITSERVE_ACCESS_LOG", True),
            # Off by default: a span per request is the largest per-request cost BentoML adds
            # (docs/benchmarks.md, "Per-request overhead"); turn on where traces are exported.
            tracing=_flag(env, "DIGITSERVE_TRACING", False),
            api_key=env.get("DIGITSERVE_API_KEY", "").strip(),
        )
