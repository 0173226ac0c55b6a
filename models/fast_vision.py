"""A fused-attention forward for BLIP's vision encoder.

transformers' ``BlipAttention`` materialises the [batch, heads, 577, 577] score matrix in
eager mode (no SDPA support). ``use_sdpa(vision_model)`` swaps each layer's attention forward
for one computing the same function with ``torch.nn.functional.scaled_dot_product_attention``,
which on CPU and CUDA uses fused kernels that never materialise that matrix. Outputs equal the
eager path to float rounding (tests/test_embeddings.py compares against an unpatched model).
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F


def _sdpa_forward(self: Any, hidden_states: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, None]:
    bsz, tgt_len, embed_dim = hidden_states.size()
    qkv = self.qkv(hidden_states).reshape(bsz, tgt_len, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
    ctx = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], scale=self.scale)
    ctx = ctx.transpose(1, 2).reshape(bsz, tgt_len, embed_dim)
    return self.projection(ctx), None


def use_sdpa(vision_model: Any) -> int:
    """Patch every BLIP vision attention module of ``vision_model``; returns how many."""
    from transformers.models.blip.modeling_blip import BlipAttention

    n = 0
    for module in vision_model.modules():
        if isinstance(module, BlipAttention):
            module.forward = types.MethodType(_sdpa_forward, module)  # type: ignore[method-assign]
            n += 1
    return n
