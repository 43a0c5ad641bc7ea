"""The fast PyTorch CPU path: a fused network with bf16 weights in channels-last memory, optionally compiled.

On CPUs with native bf16 (Intel AMX-BF16 since Sapphire Rapids, AVX512-BF16 on Cooper Lake and AMD Zen 4)
oneDNN runs bf16 convolutions and matmuls several times faster than fp32; holding the weights in bf16 (rather
than autocasting each call) and the activations in channels-last (oneDNN's native layout, so no reorder
around each conv) is what gets the eager network close to that. ``compile=True`` adds ``torch.compile`` with
Inductor's freezing (weights folded as constants, prepacked oneDNN kernels, fused elementwise swish / ESE):
faster again, at a compile of a minute or more on the first call of each input shape.

Precision is never changed silently. ``precision="bf16"`` on a CPU without native bf16 is refused with a
ConfigError (emulated bf16 is slower than fp32 and still loses precision); ``precision="auto"`` takes bf16 where
the CPU has it and fp32 otherwise, and says which. Scores move by about 1e-2 in bf16 (docs/PERFORMANCE.md
measures what that costs in detections).
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Callable

import torch

from ..errors import ConfigError
from ..nn.detector import Detector, RawOutput

log = logging.getLogger(__name__)

CPU_FAST_PRECISIONS = ("bf16", "fp32", "auto")
_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
NATIVE_BF16_FLAGS = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16"}


def _cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (Linux); None where it cannot be read."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return None


def cpu_bf16_support() -> tuple[bool, str]:
    """(whether this CPU runs bf16 natively under PyTorch's oneDNN, why / which instructions).

    oneDNN's own check (``_is_mkldnn_bf16_supported``) also says yes on AVX-512 CPUs that only emulate bf16,
    where it is slower than fp32; so on Linux the CPU flags must list AMX-BF16 or AVX512-BF16 as well.
    """
    if not torch.backends.mkldnn.is_available():
        return False, "this PyTorch build has no oneDNN (mkldnn), which runs bf16 on the CPU"
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False, "oneDNN reports no bf16 support on this CPU"
    flags = _cpu_flags()
    if flags is None:
        return True, "oneDNN reports bf16 support"
    native = [title for flag, title in NATIVE_BF16_FLAGS.items() if flag in flags]
    if not native:
        return False, ("the CPU has neither AMX-BF16 nor AVX512-BF16, so bf16 would be emulated (slower than "
                       "fp32)")
    return True, " and ".join(native)


def resolve_cpu_precision(precision: str) -> str:
    """``precision`` as it will run: 'auto' becomes bf16 or fp32 (said in the log); 'bf16' on a CPU without it
    is a ConfigError naming the reason and the fix."""
    if precision not in CPU_FAST_PRECISIONS:
        raise ConfigError(f"precision {precision!r}: the CPU fast path runs {', '.join(CPU_FAST_PRECISIONS)}")
    if precision == "fp32":
        return precision
    supported, why = cpu_bf16_support()
    if supported:
        return "bf16"
    if precision == "auto":
        log.warning("CPU fast path: running fp32, not bf16: %s", why)
        return "fp32"
    raise ConfigError(f"precision 'bf16' was asked for, but {why}; refusing rather than running it emulated or "
                      f"in another precision: use precision 'fp32' (or 'auto' to take bf16 where the CPU has it)")


def prepare_network(detector: Detector, precision: str) -> Detector:
    """A fused, eval-mode copy of ``detector`` with weights in ``precision`` and channels-last memory (the
    caller's model is left as it is)."""
    model = copy.deepcopy(detector).cpu().eval()
    model.fuse()  # idempotent: folding an already fused model changes nothing
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(dtype=_DTYPES[precision], memory_format=torch.channels_last)


def _compiled(model: Detector) -> Callable[[torch.Tensor], RawOutput]:
    """``torch.compile`` with Inductor freezing (read when the first call compiles, so set around each call)."""
    compiled = torch.compile(model, dynamic=False)

    def run(x: torch.Tensor) -> RawOutput:
        import torch._inductor.config as inductor_config

        with inductor_config.patch(freezing=True):
            return compiled(x)

    return run


class CpuFastBackend:
    """The network on the CPU as fast as PyTorch runs it here: fused, bf16 (or fp32) weights, channels-last,
    ``torch.compile`` with freezing when ``compile`` (a failed compile falls back to eager, logged)."""

    name = "torch"

    def __init__(self, detector: Detector, precision: str = "bf16", compile: bool = False):
        self.device = torch.device("cpu")
        self.precision = resolve_cpu_precision(precision)
        self.network = prepare_network(detector, self.precision)
        self.compile = compile
        self._forward: Callable[[torch.Tensor], RawOutput] = _compiled(self.network) if compile else self.network

    def run(self, images: torch.Tensor) -> RawOutput:
        x = images.to(device="cpu", dtype=_DTYPES[self.precision]).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            try:
                raw = self._forward(x)
            except Exception as e:  # Inductor needs a C++ compiler and may not handle every build: run eager
                if self._forward is self.network:
                    raise
                log.warning("torch.compile failed (%s: %s); running the CPU fast path eagerly",
                            type(e).__name__, str(e).splitlines()[0] if str(e) else "")
                self._forward = self.network
                self.compile = False
                raw = self.network(x)
        return RawOutput(raw.cls_logits.float(), raw.reg_logits.float())

    def describe(self) -> str:
        how = "torch.compile with freezing" if self.compile else "eager"
        return f"cpu, {self.precision} weights, channels-last, {how}"
