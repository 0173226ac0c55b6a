"""Fidelity of a lower-precision generator against the fp32 reference, on random weights too.

Comparing greedy captions string by string is the wrong test for a model with random weights:
its next-token distributions are nearly flat, so the top two tokens often differ by less than
the rounding error of bf16, and one flipped token changes every token after it. A trained
checkpoint has wide margins, and the same bf16 error flips none of them. So the bound is taken
where it means something:

* **Teacher forcing.** Both models are fed the reference's own greedy caption; at every position
  we compare the log-probability each gives to the reference token (``mean |Δ log p|`` per token,
  in nats). No flip can cascade: every position sees the same prefix.
* **Measured error, then decisive positions.** At each position, take the largest log-probability
  change among the reference's top candidates (``TOP_CANDIDATES``): what this precision moves a
  competitive token by. ``error`` is ``ERROR_MULTIPLE`` times its median over positions, a robust
  scale (a few broken positions cannot widen it and so excuse themselves). A position is
  *decisive* when the reference's top-1 margin (log p of the best minus the second) exceeds
  that error; there, the fast model must pick the same top-1 token (``decisive_agreement``).
  Positions closer than the error are ties at this precision: reported (``decisive_share``),
  not judged.
* Greedy token agreement of free decoding is reported beside it, never required.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

ERROR_MULTIPLE = 4.0
TOP_CANDIDATES = 5
# The bound the fast caption path must hold (scripts/bench/fidelity.py applies it).
MEAN_ABS_DLOGP_BOUND = 0.05  # nats per token: about a 5 % relative change of the token's probability
DECISIVE_AGREEMENT_BOUND = 0.99


@dataclass(frozen=True)
class GenerationFidelity:
    positions: int  # teacher-forced positions compared (up to and including each caption's end)
    mean_abs_dlogp: float  # mean |log p_fast(tok) - log p_exact(tok)| over those positions, nats
    max_abs_dlogp: float
    error: float  # the measured precision error (see the module docstring), nats
    decisive_share: float  # positions whose reference top-1 margin exceeds ``error``
    decisive_agreement: float  # among those, the share where both models' top-1 agree (1.0 if none)

    def holds(self) -> bool:
        return self.mean_abs_dlogp <= MEAN_ABS_DLOGP_BOUND and self.decisive_agreement >= DECISIVE_AGREEMENT_BOUND

    def as_dict(self) -> dict[str, float | int | bool]:
        return {**asdict(self), "holds": self.holds()}


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def valid_positions(tokens: np.ndarray, eos_ids: Sequence[int]) -> np.ndarray:
    """[n, T] bool: the positions of each caption up to and including its first end token (a
    finished row is padded after it by ``generate``)."""
    if not len(eos_ids):
        return np.ones(tokens.shape, dtype=bool)
    is_eos = np.isin(tokens, np.asarray(list(eos_ids)))
    ended_before: np.ndarray = np.cumsum(is_eos, axis=1) - is_eos  # eos tokens strictly before each position
    return ended_before == 0


def generation_fidelity(
    tokens: np.ndarray, exact_logits: np.ndarray, fast_logits: np.ndarray, eos_ids: Sequence[int] = ()
) -> GenerationFidelity:
    """Compare teacher-forced logits [n, T, vocab] of the reference (``exact_logits``, the logits
    that chose ``tokens`` [n, T]) and of the fast model fed the same tokens."""
    if exact_logits.shape != fast_logits.shape or exact_logits.shape[:2] != tokens.shape:
        raise ValueError(f"shapes differ: tokens {tokens.shape}, exact {exact_logits.shape}, fast {fast_logits.shape}")
    mask = valid_positions(tokens, eos_ids)
    le, lf = _log_softmax(exact_logits)[mask], _log_softmax(fast_logits)[mask]  # [P, vocab]
    tok = tokens[mask]
    rows = np.arange(len(tok))
    dlogp = np.abs(lf[rows, tok] - le[rows, tok])
    k = min(TOP_CANDIDATES, le.shape[1])
    top = np.argpartition(-le, k - 1, axis=1)[:, :k]
    moved = np.abs(np.take_along_axis(lf, top, axis=1) - np.take_along_axis(le, top, axis=1)).max(axis=1)
    error = ERROR_MULTIPLE * float(np.median(moved)) if len(moved) else 0.0
    two = np.sort(np.partition(-le, 1, axis=1)[:, :2], axis=1) if le.shape[1] > 1 else np.zeros((len(le), 2))
    margin = two[:, 1] - two[:, 0]  # (-second) - (-first) = first - second
    decisive = margin > error
    agree = le.argmax(axis=1) == lf.argmax(axis=1)
    return GenerationFidelity(
        positions=len(tok),
        mean_abs_dlogp=float(dlogp.mean()) if len(tok) else 0.0,
        max_abs_dlogp=float(dlogp.max()) if len(tok) else 0.0,
        error=error,
        decisive_share=float(decisive.mean()) if len(tok) else 0.0,
        decisive_agreement=float(agree[decisive].mean()) if decisive.any() else 1.0,
    )


def greedy_agreement(exact_tokens: np.ndarray, fast_tokens: np.ndarray, eos_ids: Sequence[int] = ()) -> float:
    """Share of the reference's caption positions where free greedy decoding gave the same token
    (reported, not a bound: on random weights one early tie flips everything after it)."""
    t = min(exact_tokens.shape[1], fast_tokens.shape[1])
    mask = valid_positions(exact_tokens, eos_ids)
    same = np.zeros(exact_tokens.shape, dtype=bool)
    same[:, :t] = exact_tokens[:, :t] == fast_tokens[:, :t]
    return float(same[mask].mean()) if mask.any() else 1.0
