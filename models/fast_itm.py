"""Cross-attention over image tokens without projecting every image's keys and values.

An ITM text encoder (BLIP's BERT, BLIP-2's Q-Former) cross-attends from L text (or query)
positions to N image tokens X [N, E] in each layer. transformers' forward projects X to keys
K = X W_k^T + b_k and values V = X W_v^T + b_v: 2·N·E·D multiply-adds per image per layer,
the bulk of the work when one text is scored against k images (N = 577, L ≈ 15).

Per head h, with q_h the head's scaled queries [L, d]:

* scores  = q_h K_h^T = (q_h W_k,h) X^T + q_h·b_k,h. The bias term is one constant per query
  row, which softmax cancels (an additive key mask adds per-key terms only: it still cancels);
* context = softmax(scores) V_h = (softmax(scores) X) W_v,h^T + b_v,h, since each softmax row
  sums to 1.

Each layer then costs 2·L·H·N·E (two [H·L, E] × [E, N] products) instead of 2·N·E·D: a
head_dim / L saving (64 / 15 ≈ 4× for a short query). Only float rounding changes.

When one image is shared by many texts (image→text: X has batch 1, broadcast), projecting K
and V once is cheaper; the patched forward picks whichever path does fewer multiply-adds, per
call. ``factor_cross_attention(model)`` patches the cross-attention modules of ``model``; the
``fast`` precision uses it, ``exact`` keeps transformers' forward (tests/test_fast_itm.py
compares patched modules with unpatched ones).
"""

from __future__ import annotations

import types
from typing import Any

import torch


def cost_factored(b: int, q_len: int, heads: int, n: int, e: int, d_model: int) -> int:
    """Multiply-adds of the factored form: (q W_k) and (P X) W_v, 2·L·D·E; scores and P X, 2·L·H·N·E."""
    return b * (2 * q_len * d_model * e + 2 * q_len * heads * n * e)


def cost_standard(b: int, b_img: int, q_len: int, n: int, e: int, d_model: int) -> int:
    """Multiply-adds of transformers' form: K and V once per distinct image, 2·N·E·D; scores and P V."""
    return b_img * 2 * n * e * d_model + b * 2 * q_len * n * d_model


def _apply_mask(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return scores
    if mask.dtype == torch.bool:  # True = attend (SDPA-style masks)
        return scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return scores + mask.to(scores.dtype)


def factored_attention(
    module: Any, hidden: torch.Tensor, enc: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(context [B, L, H·d], probs [B, H, L, N]) of a cross-attention module, in the factored form.

    ``enc`` [B or 1, N, E]. Heads are batched as one bmm over H (weights [H, d, E], no copies);
    the image products are one bmm over B of [H·L, E] × [E, N]."""
    b, q_len, _ = hidden.shape
    heads, d = module.num_attention_heads, module.attention_head_size
    e = enc.shape[-1]
    q = module.query(hidden) * (d**-0.5)  # [B, L, H·d]
    q = q.view(b * q_len, heads, d).transpose(0, 1)  # [H, B·L, d]
    qk = torch.bmm(q, module.key.weight.view(heads, d, e))  # [H, B·L, E]
    qk = qk.view(heads, b, q_len, e).transpose(0, 1).reshape(b, heads * q_len, e)
    scores = torch.matmul(qk, enc.transpose(1, 2)).view(b, heads, q_len, -1)  # [B, H, L, N]
    probs = torch.softmax(_apply_mask(scores, mask), dim=-1)
    p = probs.view(b, heads * q_len, -1)
    if p.dtype != enc.dtype and not torch.is_autocast_enabled(p.device.type):
        p = p.to(enc.dtype)
    mixed = torch.matmul(p, enc)  # [B, H·L, E]
    mixed = mixed.view(b, heads, q_len, e).transpose(0, 1).reshape(heads, b * q_len, e)
    ctx = torch.bmm(mixed, module.value.weight.view(heads, d, e).transpose(1, 2))  # [H, B·L, d]
    ctx = ctx.view(heads, b, q_len, d).permute(1, 2, 0, 3) + module.value.bias.view(heads, d).to(ctx.dtype)
    return ctx.reshape(b, q_len, heads * d), probs


def _forward(
    self: Any,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    encoder_hidden_states: torch.Tensor | None = None,
    encoder_attention_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> Any:
    enc = encoder_hidden_states
    use = (
        enc is not None
        and enc.dim() == 3
        and kwargs.get("cache") is None
        and kwargs.get("past_key_values") is None
        and not self.training
    )
    if use and self._factor_policy == "auto":
        assert enc is not None
        b, q_len = hidden_states.shape[0], hidden_states.shape[1]
        heads = self.num_attention_heads
        d_model = heads * self.attention_head_size
        b_img, n, e = enc.shape
        use = cost_factored(b, q_len, heads, n, e, d_model) < cost_standard(b, b_img, q_len, n, e, d_model)
    if not use:
        return self._unfactored_forward(
            hidden_states,
            attention_mask=attention_mask,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            **kwargs,
        )
    assert enc is not None
    return factored_attention(self, hidden_states, enc, encoder_attention_mask)


def cross_attention_modules(model: Any) -> list[Any]:
    """The attention modules under each layer's ``crossattention`` (BLIP text: ``.self``,
    BLIP-2 Q-Former: ``.attention``)."""
    out = []
    for module in model.modules():
        cross = getattr(module, "crossattention", None)
        if cross is None:
            continue
        inner = getattr(cross, "self", None) or getattr(cross, "attention", None)
        if inner is not None and hasattr(inner, "num_attention_heads") and hasattr(inner, "key"):
            out.append(inner)
    return out


POLICIES = ("auto", "always")


def factor_cross_attention(model: Any, policy: str = "auto") -> int:
    """Patch every cross-attention module of ``model`` with the factored forward (idempotent);
    returns how many. ``policy``: ``auto`` takes the form with fewer multiply-adds per call,
    ``always`` the factored one whenever it applies (tests use it on tiny models)."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}")
    mods = cross_attention_modules(model)
    for module in mods:
        if not hasattr(module, "_unfactored_forward"):
            module._unfactored_forward = module.forward
            module.forward = types.MethodType(_forward, module)
        module._factor_policy = policy
    return len(mods)


def is_factored(model: Any) -> bool:
    mods = cross_attention_modules(model)
    return bool(mods) and all(hasattr(m, "_unfactored_forward") for m in mods)
