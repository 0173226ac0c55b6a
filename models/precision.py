"""Precision modes: ``exact`` (fp32, equal to the transformers forward) and ``fast``.

``fast`` is the fastest path this device runs well within the fidelity bound measured by
``scripts/bench/fidelity.py`` (BENCHMARKS.md, "CPU fast path"):

* CUDA: the model's weights in bf16 (fp16 where bf16 is unsupported), as before.
* CPU with native bf16 (``avx512_bf16`` or ``amx_bf16``): fp32 weights, and the stages that
  hold the bound run under ``torch.autocast("cpu", bfloat16)`` (matmuls and attention in
  bf16 on the CPU's bf16 units; norms and softmax in fp32).
* Any other CPU (AVX2-only, ARM without a measured bf16 path): fp32, exactly as ``exact``.
  Emulated bf16 there is slower than fp32, so it is never chosen.

Stages: ``image`` (image embeddings: indexing, image queries, ITM vision tokens), ``text``
(query embeddings), ``itm`` (re-ranking and moderation's ITM checks), ``caption``. A stage
not in ``fast_stages`` stays fp32 in ``fast`` mode too.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from blipsearch.errors import ConfigError

MODES = ("exact", "fast")
STAGES = ("image", "text", "itm", "caption")
# Stages that held the fidelity bound in scripts/bench/fidelity.py (see BENCHMARKS.md): for BLIP
# image, text, ITM and captions (caption_fidelity.py, fast_captions.py). For BLIP-2, text (tiny model)
# and image: the ViT-g under bf16 autocast with the Q-Former kept fp32 (models/blip2.py), measured on
# the base-size and the tiny model by scripts/bench/fast_blip2.py; its ITM missed the bound on the tiny model.
DEFAULT_FAST_STAGES: frozenset[str] = frozenset({"image", "text", "itm", "caption"})
BLIP2_FAST_STAGES: frozenset[str] = frozenset({"image", "text"})
# x86 flags (as /proc/cpuinfo spells them) of CPUs with bf16 dot-product instructions.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU feature flags from ``/proc/cpuinfo`` text (read it when not given); empty if unknown."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def isa_capped_below_avx512(env: Mapping[str, str] | None = None) -> bool:
    """Whether the kernel libraries were told to run as an older CPU would (PyTorch's
    ``ATEN_CPU_CAPABILITY``, oneDNN's ``ONEDNN_MAX_CPU_ISA``, which OpenVINO's CPU plugin obeys
    too): then bf16 units are off limits whatever the CPU has (scripts/test.sh's AVX2 and SSE
    passes run this way). Library environment, like the CPU flags: not a blipsearch setting."""
    env = os.environ if env is None else env
    aten = env.get("ATEN_CPU_CAPABILITY", "").strip().lower()
    onednn = env.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    return aten in ("default", "avx2") or (
        bool(onednn) and onednn != "ALL" and not onednn.startswith(("AVX512", "AVX10", "AMX"))
    )


def has_native_bf16(flags: Iterable[str] | None = None) -> bool:
    """Whether this CPU computes bf16 dot products natively (never true on AVX2-only CPUs, nor
    when the kernel libraries are capped below AVX-512)."""
    if flags is None:
        return not isa_capped_below_avx512() and bool(NATIVE_BF16_FLAGS & cpu_flags())
    return bool(NATIVE_BF16_FLAGS & set(flags))


@dataclass(frozen=True)
class PrecisionPlan:
    """How each model stage computes: the weights' dtype and, per stage, an autocast dtype."""

    mode: str
    device_type: str
    weights: torch.dtype
    autocast: dict[str, torch.dtype] = field(default_factory=dict)

    def stage_dtype(self, stage: str) -> torch.dtype:
        return self.autocast.get(stage, self.weights)

    @contextlib.contextmanager
    def run(self, stage: str) -> Iterator[None]:
        """The context a stage's forward pass runs in (autocast, or nothing)."""
        dtype = self.autocast.get(stage)
        if dtype is None:
            yield
            return
        with torch.autocast(self.device_type, dtype=dtype):
            yield

    def describe(self) -> dict[str, str]:
        """{"mode": ..., "image": "bf16", ...}: what each stage computes in."""
        out = {"mode": self.mode}
        for stage in STAGES:
            out[stage] = _NAMES[self.stage_dtype(stage)]
        return out


_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def plan_precision(
    mode: str,
    device: torch.device,
    weights: torch.dtype | None = None,
    *,
    flags: Iterable[str] | None = None,
    fast_stages: Iterable[str] = DEFAULT_FAST_STAGES,
) -> PrecisionPlan:
    """The plan for ``mode`` on ``device``.

    ``weights``: an explicit weight dtype (the ``dtype`` setting when not ``auto``); it wins
    over the mode's choice. ``flags``: CPU flags (detected when omitted; tests pass fake sets).
    """
    if mode not in MODES:
        raise ConfigError(f"Unknown precision {mode!r}: use 'exact' or 'fast'.")
    unknown = set(fast_stages) - set(STAGES)
    if unknown:
        raise ConfigError(f"Unknown model stage(s) {sorted(unknown)}: stages are {', '.join(STAGES)}.")
    if device.type == "cuda":
        if weights is None:
            weights = torch.float32
            if mode == "fast":
                weights = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return PrecisionPlan(mode, "cuda", weights)
    weights = weights or torch.float32
    if mode == "exact" or weights != torch.float32 or device.type != "cpu" or not has_native_bf16(flags):
        return PrecisionPlan(mode, device.type, weights)
    return PrecisionPlan(mode, "cpu", weights, {s: torch.bfloat16 for s in STAGES if s in set(fast_stages)})
