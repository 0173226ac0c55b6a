"""The captioner interface: one checkpoint family per module, loaded through ``load_captioner``.

A captioner turns preprocessed pixels (from decode workers, or ``preprocess``) plus an optional
prompt into text with ``model.generate``. Batches share one prompt, so every image's prompt
tokens are identical and nothing is padded: batched and one-by-one results agree.
Instruction-following families (InstructBLIP, LLaVA) return only the newly generated tokens,
decoded without special tokens; they can also score yes/no questions from the first generated
token's logits (``first_token_logits``, used by models/vqa.py).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from blipsearch.errors import InvalidInputError
from blipsearch.limits import CAPTION_BATCH_SIZE
from models.base import ImagePreprocessor
from models.loading import from_pretrained, resolve_source
from models.precision import plan_precision
from models.runtime import input_side, pick_device, pick_dtype

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class Decoding:
    max_new_tokens: int = 30
    num_beams: int = 1  # 1 = greedy
    prompt: str | None = None  # BLIP: a prefix to continue ("a photography of"); InstructBLIP/LLaVA: the instruction
    min_new_tokens: int | None = None  # benchmarks fix the length so every run does the same work

    def generate_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams, "do_sample": False}
        if self.min_new_tokens is not None:
            kw["min_new_tokens"] = self.min_new_tokens
        return kw


class Captioner(ABC):
    family: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]  # config.model_type values this class loads
    architecture: ClassVar[str]  # the transformers class name (for messages and the memory check)
    supports_vqa: ClassVar[bool] = False
    default_prompt: ClassVar[str | None] = None  # used when --prompt is not given
    # In ``fast`` with a bf16 caption stage, the parts that run fast: "vision" (the vision encoder,
    # on OpenVINO bf16 where available, else in the decoder's autocast) and "decoder" (everything
    # after it: Q-Former, projector, decoder / language model with its KV cache, under torch bf16
    # autocast). scripts/bench/caption_fidelity.py measured which parts hold the bound per family.
    fast_parts: ClassVar[frozenset[str]] = frozenset({"vision", "decoder"})

    def __init__(
        self,
        source: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = CAPTION_BATCH_SIZE,
        config: Any = None,
        memory_headroom: float | None = 1.2,
        precision: str = "exact",
        fast_runtime: str = "auto",
        runtime_cache_dir: str | Path | None = None,
    ) -> None:
        import transformers
        from transformers import AutoConfig, AutoProcessor

        from models.registry import _quiet_transformers

        _quiet_transformers()
        if config is None:
            config = from_pretrained(AutoConfig, source, "caption model config")
        cls = getattr(transformers, self.architecture)
        dev = pick_device(device)
        # models/precision.py: "exact" is fp32; "fast" runs the caption stage under bf16 autocast
        # on a CPU with native bf16 where it holds the bound (DEFAULT_FAST_STAGES), fp32 on other
        # CPUs, and bf16 weights (fp16 where bf16 is unsupported) on CUDA.
        self.plan = plan_precision(precision, dev, None if dtype == "auto" else pick_dtype(dtype, dev))
        self.precision = precision
        self.torch_dtype = self.plan.weights
        self.model_id = resolve_source(source)
        if memory_headroom is not None:  # before any weight is downloaded or allocated
            from models.memory import check_fits

            check_fits(self.model_id, config, cls, self.torch_dtype, dev, headroom=memory_headroom)
        self.model: Any = from_pretrained(cls, source, "caption model", dtype=self.torch_dtype).to(dev).eval()
        self.processor: Any = from_pretrained(AutoProcessor, source, "caption processor")
        self.batch_size = batch_size
        self.vision_runtime: str | None = None  # "openvino bf16" once the vision module is swapped
        self._setup_fast_vision(fast_runtime, runtime_cache_dir)

    def _setup_fast_vision(self, requested: str, cache_dir: str | Path | None) -> None:
        """In ``fast`` on a CPU whose plan runs captions in bf16: the vision encoder on OpenVINO
        (models/openvino_caption.py) where ``openvino_stages`` puts BLIP's image tower there
        (``BLIPSEARCH_FAST_RUNTIME``); the rest of ``generate`` stays on torch bf16 autocast."""
        from models.fast_runtime import log_choice, openvino_stages
        from models.precision import has_native_bf16

        if "caption" not in self.plan.autocast or "vision" not in self.fast_parts:
            return  # exact, CUDA, a CPU without bf16 units, or a family kept fp32: transformers as is
        native = has_native_bf16()
        if openvino_stages(requested, self.precision, self.plan.device_type, {"image"}, native):
            from models.openvino_caption import install

            threads = torch.get_num_threads()
            folder = Path(cache_dir) if cache_dir is not None else None
            if install(
                self.model, fingerprint=f"caption:{self.model_id}", cache_dir=folder, threads=threads, bf16=native
            ):
                self.vision_runtime = f"openvino {'bf16' if native else 'f32'}"
        log_choice(self.model_id, self.stage_runtimes())

    def _torch_vision(self) -> contextlib.AbstractContextManager[None]:
        if self.vision_runtime is None:
            return contextlib.nullcontext()
        from models.openvino_caption import torch_vision

        return torch_vision()

    def stage_runtimes(self) -> dict[str, str]:
        """What runs each part of captioning: {"vision": "openvino bf16", "decoder": "torch bf16"}
        ("decoder": the Q-Former / projector too, and the language model)."""
        decoder = f"torch {self.plan.describe()['caption']}" if "decoder" in self.fast_parts else "torch fp32"
        return {"vision": self.vision_runtime or decoder, "decoder": decoder}

    def _decode_context(self) -> contextlib.AbstractContextManager[None]:
        """What ``generate`` runs in: the caption stage's autocast, unless this family keeps
        everything after the vision encoder fp32."""
        return self.plan.run("caption") if "decoder" in self.fast_parts else contextlib.nullcontext()

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def input_size(self) -> int | None:
        return input_side(self.processor)

    def preprocessor(self) -> ImagePreprocessor:
        return ImagePreprocessor(self.processor.image_processor)

    def preprocess(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.preprocessor()(images)

    @abstractmethod
    def text_inputs(self, pixel_values: np.ndarray, prompt: str | None) -> dict[str, torch.Tensor]:
        """The processor's text-side inputs for these images and one shared prompt (CPU tensors)."""

    def model_inputs(self, pixel_values: np.ndarray, prompt: str | None) -> dict[str, torch.Tensor]:
        """Everything ``generate`` takes: what ``processor(images=…, text=…)`` would give, on the device."""
        text = self.text_inputs(pixel_values, prompt or self.default_prompt)
        inputs = {k: v.to(self.device) for k, v in text.items()}
        inputs["pixel_values"] = torch.as_tensor(pixel_values).to(self.device, self.torch_dtype)
        return inputs

    @property
    def max_positions(self) -> int | None:
        """Positions the text decoder holds (prompt plus new tokens); None without a fixed table."""
        text = getattr(self.model.config, "text_config", None) or self.model.config
        if getattr(text, "is_encoder_decoder", False):
            return None  # T5-style decoders use relative positions: no table to overrun
        n = getattr(text, "max_position_embeddings", None)
        return int(n) if isinstance(n, int) and n > 0 else None

    def check_length(self, inputs: dict[str, torch.Tensor], decoding: Decoding) -> None:
        """Refuse a decoding whose prompt plus ``max_new_tokens`` overruns the decoder's positions.

        Past the table ``generate`` fails with an IndexError deep in the model; the message here
        names the limit and how much of it the prompt takes.
        """
        limit = self.max_positions
        if limit is None:
            return
        ids = inputs.get("input_ids")
        prompt = int(ids.shape[1]) if ids is not None else 1  # a bare BLIP decode starts from [BOS]
        if prompt + decoding.max_new_tokens > limit:
            room = max(limit - prompt, 0)
            raise InvalidInputError(
                f"max_new_tokens={decoding.max_new_tokens} plus the prompt's {prompt} tokens exceeds the "
                f"caption model's {limit} positions: use max_new_tokens <= {room} (--max-new-tokens)"
            )

    def check_decoding(self, decoding: Decoding) -> None:
        """``check_length`` before any image is read: the prompt's tokens for one blank image."""
        if self.max_positions is None:
            return
        from PIL import Image

        blank = self.preprocess([Image.new("RGB", (8, 8))])
        self.check_length(self.text_inputs(blank, decoding.prompt or self.default_prompt), decoding)

    def new_tokens(self, out: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Only the generated tokens: decoder-only models echo the prompt ids first."""
        ids = inputs.get("input_ids")
        if ids is not None and out.shape[1] >= ids.shape[1] and torch.equal(out[:, : ids.shape[1]], ids):
            return out[:, ids.shape[1] :]
        return out

    def caption_pixels(self, pixel_values: np.ndarray, decoding: Decoding = Decoding()) -> list[str]:
        inputs = self.model_inputs(pixel_values, decoding.prompt)
        self.check_length(inputs, decoding)
        with torch.inference_mode(), self._decode_context():
            out = self.model.generate(**inputs, **decoding.generate_kwargs())
        texts = self.processor.batch_decode(self.new_tokens(out, inputs), skip_special_tokens=True)
        return [t.strip() for t in texts]

    def first_token_logits(self, pixel_values: np.ndarray, prompt: str) -> torch.Tensor:
        """[n, vocab] float32 logits of the first generated token (greedy ``generate``'s raw logits)."""
        inputs = self.model_inputs(pixel_values, prompt)
        # fp32 in both modes (VQA's fidelity in bf16 is not measured): the transformers vision too
        with torch.inference_mode(), self._torch_vision():
            out = self.model.generate(
                **inputs, max_new_tokens=1, do_sample=False, num_beams=1, output_logits=True,
                return_dict_in_generate=True,
            )  # fmt: skip
        return out.logits[0].float().cpu()

    def greedy_logits(
        self, pixel_values: np.ndarray, decoding: Decoding = Decoding()
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy decoding's new tokens [n, T] and the raw logits [n, T, vocab] (float32) that chose them."""
        inputs = self.model_inputs(pixel_values, decoding.prompt)
        self.check_length(inputs, decoding)
        with torch.inference_mode(), self._decode_context():
            out = self.model.generate(
                **inputs, max_new_tokens=decoding.max_new_tokens, do_sample=False, num_beams=1,
                output_logits=True, return_dict_in_generate=True,
            )  # fmt: skip
        steps = len(out.logits)
        return out.sequences[:, -steps:].cpu(), torch.stack(out.logits, dim=1).float().cpu()

    def forced_logits(self, pixel_values: np.ndarray, tokens: torch.Tensor, prompt: str | None = None) -> torch.Tensor:
        """Teacher forcing through ``generate``: the raw logits [n, T, vocab] this model gives at each
        step when the tokens it is fed are ``tokens`` [n, T] (another model's caption), whatever it
        would have chosen itself. Same decode path as captioning (KV cache, this plan's precision)."""
        from transformers import LogitsProcessorList

        inputs = self.model_inputs(pixel_values, prompt)
        forced = tokens.to(self.device)
        force = _ForceTokens(forced)
        with torch.inference_mode(), self._decode_context():
            out = self.model.generate(
                **inputs, max_new_tokens=int(forced.shape[1]), do_sample=False, num_beams=1,
                logits_processor=LogitsProcessorList([force]), output_logits=True, return_dict_in_generate=True,
            )  # fmt: skip
        return torch.stack(out.logits, dim=1).float().cpu()

    @property
    def eos_token_ids(self) -> list[int]:
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        if eos is None:
            return []
        return [int(e) for e in (eos if isinstance(eos, list | tuple) else [eos])]

    def caption(self, images: Sequence[Image.Image], decoding: Decoding = Decoding()) -> list[str]:
        out: list[str] = []
        for i in range(0, len(images), self.batch_size):
            out += self.caption_pixels(self.preprocess(images[i : i + self.batch_size]), decoding)
        return out

    def describe(self) -> dict[str, object]:
        return {
            "model_id": self.model_id,
            "family": self.family,
            "vqa": self.supports_vqa,
            "precision": self.precision,
            "runtimes": self.stage_runtimes(),
        }


class _ForceTokens:
    """A logits processor that leaves only the next of the given tokens possible at each step
    (``generate`` still reports the model's raw logits for that step)."""

    def __init__(self, tokens: torch.Tensor) -> None:
        self.tokens = tokens
        self.step = 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        t = min(self.step, self.tokens.shape[1] - 1)
        self.step += 1
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, self.tokens[:, t : t + 1], 0.0)
