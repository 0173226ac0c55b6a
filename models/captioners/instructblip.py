"""InstructBLIP (``InstructBlipForConditionalGeneration``: Salesforce/instructblip-flan-t5-xl,
…-vicuna-7b): the prompt is an instruction, given to both the Q-Former and the language model,
as ``processor(images=…, text=prompt)`` does.
"""

from __future__ import annotations

import numpy as np
import torch

from models.captioners.base import Captioner


class InstructBlipCaptioner(Captioner):
    family = "instructblip"
    model_types = ("instructblip",)
    architecture = "InstructBlipForConditionalGeneration"
    supports_vqa = True
    default_prompt = "A short image description:"
    # The tiny Flan-T5 InstructBLIP missed the caption bound in bf16 with every fast part measured
    # (vision encoder alone: teacher-forced mean |Δ log p| 0.058 nats; all parts: 0.062), so its
    # ``fast`` captions stay the fp32 forward (BENCHMARKS.md, caption_fidelity).
    fast_parts = frozenset()

    def text_inputs(self, pixel_values: np.ndarray, prompt: str | None) -> dict[str, torch.Tensor]:
        n = len(pixel_values)
        enc = self.processor(text=[prompt or ""] * n, return_tensors="pt")
        ids, mask = enc["input_ids"], enc["attention_mask"]
        nq = getattr(self.processor, "num_query_tokens", None)
        if nq:
            # As the processor does with images: the query-token placeholders precede the prompt
            # (legacy checkpoints without num_query_tokens let the model prepend the queries).
            image_token = self.processor.tokenizer.convert_tokens_to_ids(str(self.processor.image_token))
            ids = torch.cat([torch.full((n, nq), image_token, dtype=ids.dtype), ids], dim=1)
            mask = torch.cat([torch.ones((n, nq), dtype=mask.dtype), mask], dim=1)
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "qformer_input_ids": enc["qformer_input_ids"],
            "qformer_attention_mask": enc["qformer_attention_mask"],
        }
