"""The ONNX Runtime session: model checks against its card, execution provider choice, inference."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.config import Provider
from service.contract import (
    INPUT,
    OUTPUT,
    ModelLoadError,
    read_card,
    read_normalisation,
    read_temperature,
    to_model_input,
)

logger = logging.getLogger("bentoml.digitserve")  # under "bentoml": BentoML's log handlers show it

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


def softmax(logits: np.ndarray) -> np.ndarray:
    """Logits [N, 10] -> probabilities [N, 10], each row summing to 1."""
    exp = logits - logits.max(axis=1, keepdims=True)  # a new array, worked on in place from here
    np.exp(exp, out=exp)
    exp /= exp.sum(axis=1, keepdims=True)
    return exp


def choose_providers(requested: Provider, available: list[str]) -> list[str]:
    if requested == "cpu":
        return [CPU]
    if requested == "cuda" and CUDA not in available:
        raise ModelLoadError(f"DIGITSERVE_PROVIDER=cuda but this onnxruntime offers only {available}")
    return [CUDA, CPU] if CUDA in available else [CPU]


ProviderChoice = str | tuple[str, dict[str, str]]


def with_options(providers: list[str], tf32: bool, **cuda: str) -> list[ProviderChoice]:
    """The providers as ONNX Runtime takes them: CUDA with TF32 off where `tf32` is False (its default is on), and
    with any other of its options in `cuda` (gpu/check.py's CUDA graphs)."""
    options = cuda | ({} if tf32 else {"use_tf32": "0"})
    return [(p, options) if p == CUDA and options else p for p in providers]


def cache_key(card: dict, providers: list[ProviderChoice]) -> str:
    """Optimised graphs can hold hardware-specific kernels: key them by model, runtime version and providers."""
    names = "+".join((p if isinstance(p, str) else p[0]).removesuffix("ExecutionProvider") for p in providers)
    return f"{card['sha256'][:16]}-ort{ort.__version__}-{names}"


def optimised_session(
    model_path: Path, card: dict, options: ort.SessionOptions, providers: list[ProviderChoice], cache_dir: Path | None
) -> tuple[ort.InferenceSession, str]:
    """A session on the model as ONNX Runtime optimised it for these providers: from the cache when an earlier
    start (another worker, a restart) saved it, else optimised now and saved. Returns how it was loaded."""
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if cache_dir is None:
        return ort.InferenceSession(str(model_path), options, providers=providers), "optimised at start-up"
    key = cache_key(card, providers)
    cached = cache_dir / f"{key}.onnx"
    if cached.is_file():
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            return ort.InferenceSession(str(cached), options, providers=providers), f"optimised graph from {cached}"
        except Exception:  # a damaged cache file: optimise again below
            logger.warning("cached optimised graph %s unreadable: optimising again", cached)
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = cache_dir / f"{key}.{os.getpid()}.partial"
        options.optimized_model_filepath = str(partial)
        session = ort.InferenceSession(str(model_path), options, providers=providers)
        # Saved under the providers that started: when CUDA fails to start, ORT runs (and optimised for) CPU.
        cached = cache_dir / f"{cache_key(card, session.get_providers())}.onnx"
        os.replace(partial, cached)  # atomic: a worker starting beside this one never reads half a file
        return session, f"optimised at start-up, saved to {cached}"
    except OSError as exc:
        logger.warning("cannot cache the optimised graph in %s (%s): optimising at every start", cache_dir, exc)
        options.optimized_model_filepath = ""
        return ort.InferenceSession(str(model_path), options, providers=providers), "optimised at start-up"


def session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return options


def in_fixed_batches(session: ort.InferenceSession, inputs: np.ndarray, size: int) -> np.ndarray:
    """`session`'s logits for `inputs`, run `size` images at a time, the last part padded with blank images: every
    call of the same input shape, whatever the batch."""
    count = len(inputs)
    if count != size:
        padded = np.zeros((-(-count // size) * size, *inputs.shape[1:]), inputs.dtype)
        padded[:count] = inputs
        inputs = padded
    parts = [session.run([OUTPUT], {INPUT: inputs[start : start + size]})[0] for start in range(0, len(inputs), size)]
    return (parts[0] if len(parts) == 1 else np.concatenate(parts))[:count]


class ModelRuntime:
    def __init__(
        self,
        model_path: Path,
        provider: Provider = "auto",
        threads: int = 1,
        cache_dir: Path | None = None,
        card: dict | None = None,
        alone_threads: int = 0,
        cuda_tf32: bool = True,
        cuda_batch: int = 0,
    ) -> None:
        """`threads`: ONNX Runtime's intra-op threads for batches. `alone_threads`, if more: a second session, with
        that many threads that sleep rather than spin when idle, for a request alone in an idle worker (`alone=True`
        in `logits`): one image's matrix-vector products, split across idle cores, take half the time or less.
        `cuda_tf32`: on CUDA, TF32 for fp32 convolutions and matrix products (ONNX Runtime's default).
        `cuda_batch`: on CUDA, every call runs on exactly this many images (padded, or in parts; 0: as they come).
        ONNX Runtime's CUDA convolutions build a cuDNN plan for the last input shape they saw, and build it again at
        every change (tens of milliseconds with its default search, docs/gpu.md): batches of varying size, as
        adaptive batching makes them, would pay that on most calls, where a fixed shape pays it once, here, and
        costs the GPU next to nothing more (a batch of 64 runs as fast as a batch of 1)."""
        self.card = card or read_card(model_path)  # `card`: already loaded and checked (sha256) by the caller
        options = session_options(threads)
        available = ort.get_available_providers()
        providers = choose_providers(provider, available)
        if CUDA in providers and hasattr(ort, "preload_dlls"):
            # CUDA and cuDNN from the nvidia-* pip wheels (onnxruntime-gpu[cuda,cudnn]) are not on the
            # library path: load them first, or the CUDA provider fails to start and ORT falls back to CPU.
            ort.preload_dlls()
        try:
            self.session, how = optimised_session(
                model_path, self.card, options, with_options(providers, cuda_tf32), cache_dir
            )
        except Exception as exc:  # onnxruntime raises its own types for unreadable graphs
            raise ModelLoadError(f"ONNX Runtime cannot load {model_path}: {exc}") from None
        # onnxruntime-gpu falls back to CPU silently when CUDA cannot start: trust the session, not the list.
        self.provider = self.session.get_providers()[0]
        if provider == "cuda" and self.provider != CUDA:
            raise ModelLoadError("DIGITSERVE_PROVIDER=cuda but the CUDA execution provider did not start (no GPU?)")
        if provider == "auto" and CUDA in available and self.provider != CUDA:
            logger.warning("CUDA execution provider unavailable at run time (no GPU?): falling back to CPU")
        self.alone = self.session
        if self.provider == CPU and alone_threads > threads:
            options = session_options(alone_threads)
            # Idle threads that spin would take the core from the other workers the moment load arrives. No
            # prepacked copy of the weights: 11 MiB less a worker, and one image's call is no slower without.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.disable_prepacking", "1")
            self.alone, _ = optimised_session(model_path, self.card, options, [CPU], cache_dir)
        self.fixed_batch = cuda_batch if self.provider == CUDA else 0
        if self.fixed_batch:  # the one plan, built before the first request
            self.logits(np.zeros((1, 1, 28, 28), np.float32))
        self.variant = self.card.get("variant", "fp32")
        logger.info(
            "serving %s v%s (%s) from %s on %s, %s",
            self.card["name"],
            self.card["version"],
            self.variant,
            model_path,
            self.provider,
            how,
        )
        self.normalisation = read_normalisation(self.card)
        # Temperature scaling (training/calibration.py): confidences that say how often the model is right.
        self.temperature = read_temperature(self.card)

    def confidences(self, logits: np.ndarray) -> np.ndarray:
        """Logits [N, 10] -> calibrated probabilities [N, 10]: softmax(logits / the card's temperature)."""
        return softmax(logits / self.temperature)

    def model_input(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [N, 28, 28], white ink on black -> the model's input, normalised as its card says."""
        return to_model_input(pixels, *self.normalisation)

    def logits(self, inputs: np.ndarray, alone: bool = False) -> np.ndarray:
        """The model's own input, normalised float32 [N, 1, 28, 28] -> its logits [N, 10]. `alone`: no other
        request is being served, so the alone session may use the idle cores."""
        if self.fixed_batch:
            return in_fixed_batches(self.session, inputs, self.fixed_batch)
        return (self.alone if alone else self.session).run([OUTPUT], {INPUT: inputs})[0]

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [N, 28, 28], white ink on black -> calibrated probabilities [N, 10]."""
        return self.confidences(self.logits(self.model_input(pixels)))

    def describe(self) -> dict:
        card = self.card
        return {
            "name": card["name"],
            "version": card["version"],
            "variant": self.variant,
            "sha256": card["sha256"],
            "test_accuracy": card["test_accuracy"],
            "temperature": self.temperature,
            "parameters": card["parameters"],
            "provider": self.provider,
            "input": card["input"],
            "preprocessing": card["preprocessing"],
        }
