"""A captioner's vision encoder compiled by OpenVINO: the vision half of the CPU ``fast`` captioner.

The ITC towers' machinery (models/openvino_runtime.py: conversion, the checksummed on-disk IR
cache, the bf16 inference-precision hint, one infer request per thread) is reused through a
subclass that exports one more graph, ``pixels -> vision features``:

* BLIP, BLIP-2, InstructBLIP: ``vision_model(pixels).last_hidden_state`` (what their
  ``generate`` feeds the text decoder's cross-attention, or the Q-Former);
* LLaVA: ``vision_tower(pixels).hidden_states[vision_feature_layer]`` (one int layer; the
  projector and the language model stay on torch).

``install`` swaps the model's vision module for ``OpenVinoVision``, which returns what the
transformers module returns (a ``BaseModelOutputWithPooling``) with the features computed by
OpenVINO, so ``model.generate`` runs unchanged and every later stage (Q-Former, projector,
decoder with its KV cache, beams) stays the transformers code. Only a ``fast`` captioner does
this; ``exact`` keeps the transformers module.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.openvino_runtime import CONVERSIONS, OpenVinoTowers, import_openvino

TOWER = "caption-vision"


class _Features(torch.nn.Module):
    """The exported graph: pixels -> the vision features the captioner's generate uses."""

    def __init__(self, vision: torch.nn.Module, layer: int | None) -> None:
        super().__init__()
        self.vision, self.layer = vision, layer

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.layer is None:
            out: torch.Tensor = self.vision(pixel_values=pixel_values).last_hidden_state
            return out
        hidden: torch.Tensor = self.vision(pixel_values=pixel_values, output_hidden_states=True).hidden_states[
            self.layer
        ]
        return hidden


class CaptionVisionTower(OpenVinoTowers):
    """``vision`` (the transformers vision module) on OpenVINO, converted or read from the cache
    on first use. ``layer``: return that hidden-state layer instead of the last one (LLaVA)."""

    def __init__(
        self,
        model: Any,
        vision: torch.nn.Module,
        *,
        layer: int | None,
        fingerprint: str,
        cache_dir: Path | None,
        threads: int,
        bf16: bool,
    ) -> None:
        super().__init__(model, fingerprint=fingerprint, cache_dir=cache_dir, threads=threads, bf16=bf16)
        self.vision, self.layer = vision, layer

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[n, tokens, width] float32 features of these pixels."""
        pixels = np.ascontiguousarray(pixel_values.detach().to(torch.float32).cpu().numpy())
        out = self._request(TOWER).infer([pixels])
        return torch.from_numpy(np.asarray(out[0], dtype=np.float32).copy())

    def _module(self, tower: str) -> torch.nn.Module:
        return _Features(self.vision, self.layer).eval()

    def _convert(self, ov: Any, tower: str) -> Any:
        CONVERSIONS[tower] += 1
        side = self.image_size
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about shape-derived Python values
            return ov.convert_model(
                self._module(tower),
                example_input=(torch.zeros(2, 3, side, side),),
                input=[ov.PartialShape([-1, 3, side, side])],
            )


_LOCAL = threading.local()


@contextlib.contextmanager
def torch_vision() -> Iterator[None]:
    """Within this block (this thread only) a swapped vision module runs the transformers module
    it stands in for: the captioner's VQA scores stay the fp32 forward."""
    before = getattr(_LOCAL, "torch", False)
    _LOCAL.torch = True
    try:
        yield
    finally:
        _LOCAL.torch = before


class OpenVinoVision(torch.nn.Module):
    """Stands in for the model's vision module: same call, same output type, OpenVINO features
    (the transformers module inside ``torch_vision``)."""

    def __init__(self, tower: CaptionVisionTower, layers: int) -> None:
        super().__init__()
        self.tower, self.layers = tower, layers
        self.config = getattr(tower.vision, "config", None)

    def forward(self, pixel_values: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        if getattr(_LOCAL, "torch", False):
            return self.tower.vision(pixel_values, *args, **kwargs)
        feats = self.tower.features(pixel_values)
        if self.tower.layer is None:
            return BaseModelOutputWithPooling(last_hidden_state=feats)
        index = self.tower.layer % self.layers
        # only the layer that was computed is filled in (LLaVA reads that one index)
        hidden: tuple[Any, ...] = tuple(feats if i == index else None for i in range(self.layers))
        return BaseModelOutputWithPooling(hidden_states=hidden)


def vision_site(model: Any) -> tuple[Any, str, int | None, int] | None:
    """Where the captioner's vision module lives: (owner, attribute, layer, hidden-state count),
    or None where it cannot be swapped (a LLaVA reading several layers)."""
    for owner in (model, getattr(model, "model", None)):
        if owner is not None and isinstance(getattr(owner, "vision_model", None), torch.nn.Module):
            return owner, "vision_model", None, 0
    layer = getattr(model.config, "vision_feature_layer", None)
    for owner in (getattr(model, "model", None), model):
        if owner is not None and isinstance(getattr(owner, "vision_tower", None), torch.nn.Module):
            if not isinstance(layer, int):
                return None
            return owner, "vision_tower", layer, int(model.config.vision_config.num_hidden_layers) + 1
    return None


def install(model: Any, *, fingerprint: str, cache_dir: Path | None, threads: int, bf16: bool) -> bool:
    """Swap ``model``'s vision module for its OpenVINO graph (compiled now, so a failure shows at
    load, not mid-index). False (nothing changed) where the family's vision module cannot be."""
    site = vision_site(model)
    if site is None:
        return False
    owner, attr, layer, layers = site
    vision = getattr(owner, attr)
    tower = CaptionVisionTower(
        model, vision, layer=layer, fingerprint=fingerprint, cache_dir=cache_dir, threads=threads, bf16=bf16
    )
    import_openvino()
    tower.compiled(TOWER)
    setattr(owner, attr, OpenVinoVision(tower, layers))
    return True
