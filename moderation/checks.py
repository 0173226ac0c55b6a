"""The moderator: every check kind of a policy composed into one decision per image.

The kinds, one module each under moderation/kinds/:

* on BLIP scores, sharing one vision-encoder pass per batch: policy screening (``prompts.py``:
  ITC screen, ITM confirmation), visual questions (``vqa.py``), image-text consistency
  (``consistency.py``) and the ITC blocklist (``blocklist.py``);
* record-level kinds behind ``kinds/base.py``'s ``CheckKind``: PDQ hash lists
  (``hash_lists.py``), detectors (``detectors.py``) and text rules over the OCR and accompanying
  text (``text_rules.py``).

The decision is the most severe action hit (block > review > flag), else ``allow``.
Decisions follow the thresholds exactly: a score equal to its threshold is a hit (a Hamming
distance equal to a hash list's threshold is a match). Each trigger names its ``check`` and
carries its evidence; ``checks`` holds what the record-level kinds measured, hit or not, and the
stored result also names the policy and its version: the audit trail.

Models without an ITM head (CLIP, SigLIP, ALIGN): the ITM confirmation runs on the
policy's ``itm_model`` (a BLIP / BLIP-2 ITM checkpoint, its own vision encoder computing the
image's tokens, only for images that pass a screen). Without one the moderator is **ITC-only**:
a category is hit when its screen score reaches ``itc_threshold`` (``itm_threshold`` is not
used, ``itm`` stays null, ``models.itm`` is null); the consistency check and calibration need ITM
and answer NoItmModelError (exit 2 / HTTP 422). A policy of only hash lists, detectors and text
rules needs no model at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from models.base import Embedder
from models.detectors import Detector
from models.itm import ItmScorer
from models.vqa import VisualQuestionScorer
from moderation.kinds.base import CheckKind, Subject
from moderation.kinds.blocklist import BlocklistCheck
from moderation.kinds.consistency import DEFAULT_CONSISTENCY, ConsistencyCheck
from moderation.kinds.itm import Itm, LazyTokens, screen_score
from moderation.kinds.prompts import CategoryScore, PromptScreen
from moderation.kinds.vqa import VisualQuestions
from moderation.policy import SEVERITY, Policy, PolicyError

if TYPE_CHECKING:
    from PIL import Image

    from search.engine import SearchEngine

__all__ = ["DEFAULT_CONSISTENCY", "CategoryScore", "CheckResult", "Moderator", "record_kinds", "screen_score"]


@dataclass
class CheckResult:
    decision: str
    categories: list[CategoryScore]
    triggers: list[dict[str, Any]] = field(default_factory=list)
    consistency: dict[str, Any] | None = None
    blocklist: dict[str, Any] | None = None
    timing_ms: dict[str, float] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)  # evidence of the record-level kinds

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "categories": [c.to_dict() for c in self.categories]}


class Moderator:
    def __init__(
        self,
        policy: Policy,
        embedder: Embedder | None,
        scorer: ItmScorer | None,
        *,
        blocklist: SearchEngine | None = None,
        shared_kv: bool = True,
        vqa: VisualQuestionScorer | None = None,
        detectors: dict[str, Detector] | None = None,
        ocr: Callable[[Image.Image], str] | None = None,
    ) -> None:
        if vqa is None and any(c.questions for c in policy.categories):
            raise PolicyError(f"Policy {policy.name!r} asks visual questions but no vqa_model was loaded.")
        if embedder is None and policy.uses_blip:
            raise PolicyError(
                f"Policy {policy.name!r} has BLIP checks (categories, blocklist, consistency): it needs a model."
            )
        self.policy = policy
        self.embedder: Embedder = embedder  # type: ignore[assignment]  # None only when no check uses it
        self.scorer = scorer
        self.vqa = vqa
        self.itm = Itm(scorer, embedder, shared_kv)
        self.screen = PromptScreen(policy, embedder, self.itm)
        self.consistency = ConsistencyCheck(policy.consistency, self.itm)
        self.blocklist: BlocklistCheck | None = None
        if blocklist is not None and policy.blocklist is not None and embedder is not None:
            self.blocklist = BlocklistCheck(policy.blocklist, blocklist, embedder)
        self.questions = VisualQuestions(policy, vqa) if vqa is not None else None
        self.kinds = record_kinds(policy, detectors, ocr)

    @property
    def prompt_emb(self) -> np.ndarray:
        return self.screen.prompt_emb

    @property
    def model_ids(self) -> dict[str, str | None]:
        ids: dict[str, str | None] = {
            "itc": self.embedder.model_id if self.embedder is not None else None,
            "itm": self.scorer.model_id if self.scorer is not None else None,
        }
        if self.vqa is not None:
            ids["vqa"] = self.vqa.model_id
        for kind in self.kinds:
            ids.update(getattr(kind, "model_ids", {}))
        return ids

    @property
    def _shared_vision(self) -> bool:
        """ITM uses the ITC model's own vision tokens (BLIP / BLIP-2 with their own head)."""
        return self.embedder is not None and self.scorer is not None and self.scorer.shares_vision_with(self.embedder)

    def check_images(
        self,
        images: list[Image.Image],
        texts: list[str | None] | None = None,
        *,
        screen: bool = True,
        records: list[dict[str, Any]] | None = None,
    ) -> list[CheckResult]:
        """Check a batch of images (one vision-encoder pass for the batch). ``screen=False``
        sends every category to ITM (calibration needs every score). ``records``: each image's
        stored columns the record-level kinds read (``ocr_text``, ``pdq_hash``, ``pdq_quality``)."""
        if not images:
            return []
        texts = texts or [None] * len(images)
        if self.policy.uses_blip:
            out = self._blip_checks(images, texts, screen)
        else:
            out = [CheckResult("allow", []) for _ in images]
        if self.kinds:
            recs = records or [{} for _ in images]
            subjects = [
                Subject(im, text, r.get("ocr_text"), r.get("pdq_hash"), r.get("pdq_quality"))
                for im, text, r in zip(images, texts, recs, strict=True)
            ]
            for kind in self.kinds:
                t0 = time.perf_counter()
                found = kind.check(subjects)
                per_image = round((time.perf_counter() - t0) * 1e3 / len(images), 3)
                for res, kr in zip(out, found, strict=True):
                    res.triggers.extend(kr.triggers)
                    res.checks[kind.name] = kr.evidence
                    res.timing_ms[kind.name] = per_image
        for res in out:
            res.decision = _decide(res.triggers)
        return out

    @property
    def reads_text(self) -> bool:
        """Whether a text alone (no image) has a check here: a text rule over the accompanying text."""
        return any("text" in r.sources for r in self.policy.text_rules)

    def check_texts(self, texts: list[str]) -> list[CheckResult]:
        """Check texts without an image: only the policy's text rules over the accompanying text
        apply (every other kind needs an image); PolicyError when the policy has none."""
        if not self.reads_text:
            raise PolicyError(f"Policy {self.policy.name!r} has no check that applies to text (no text_rules on text).")
        kind = next(k for k in self.kinds if k.name == "text_rules")
        t0 = time.perf_counter()
        found = kind.check([Subject(None, t) for t in texts])
        per_text = round((time.perf_counter() - t0) * 1e3 / max(len(texts), 1), 3)
        return [
            CheckResult(
                _decide(kr.triggers), [], kr.triggers, timing_ms={kind.name: per_text}, checks={kind.name: kr.evidence}
            )
            for kr in found
        ]

    def _blip_checks(self, images: list[Image.Image], texts: list[str | None], screen: bool) -> list[CheckResult]:
        t0 = time.perf_counter()
        tokens: list[Any]
        if self._shared_vision:
            shared = self.embedder.vision_tokens(self.embedder.preprocess(images))
            emb = self.embedder.embed_tokens(shared)  # [n, d] or [n, 32, d]
            tokens = [shared[i : i + 1] for i in range(len(images))]
        else:  # ITC model without ITM: the ITM model's tokens only when an image needs them
            emb = self.embedder.embed_pixels(self.embedder.preprocess(images))
            tokens = [LazyTokens(self.scorer, im) for im in images]
        encode_ms = (time.perf_counter() - t0) * 1e3 / len(images)
        if not self.policy.categories and self.policy.consistency is None:
            texts = [None] * len(images)  # the text is for the text rules here, not an ITM consistency check
        mirrored = self.blocklist.mirrored(images) if self.blocklist is not None else None
        out = []
        for i in range(len(images)):
            extra = None if mirrored is None else mirrored[i]
            res = self.check_tokens(tokens[i], emb[i], texts[i], screen=screen, mirror_emb=extra)
            res.timing_ms = {"encode": round(encode_ms, 3), **res.timing_ms}
            out.append(res)
        if self.questions is not None:
            self.questions.ask(images, out, screen)
        return out

    def check_tokens(
        self,
        tokens: Any,
        emb: np.ndarray,
        text: str | None = None,
        *,
        screen: bool = True,
        mirror_emb: np.ndarray | None = None,
    ) -> CheckResult:
        """One image from its vision tokens [1, T, W] (for ITM; may be lazy) and ITC embedding [d] or [q, d]."""
        if not screen and self.scorer is None:
            raise self.itm.missing("calibration scores every category by ITM")
        timing: dict[str, float] = {}
        vecs = np.asarray(emb, np.float32).reshape(-1, self.prompt_emb.shape[1])
        cats, triggers = self.screen.score(tokens, vecs, screen, timing)
        consistency = None
        if text is not None:
            consistency, found = self.consistency.check(tokens, text, timing)
            triggers += found
        blocklist = None
        if self.blocklist is not None:
            blocklist, found = self.blocklist.check(vecs, mirror_emb, timing)
            triggers += found
        return CheckResult(_decide(triggers), cats, triggers, consistency, blocklist, timing)


def record_kinds(
    policy: Policy, detectors: dict[str, Detector] | None = None, ocr: Callable[[Image.Image], str] | None = None
) -> list[CheckKind]:
    """The record-level check kinds a policy asks for, in a fixed order."""
    kinds: list[CheckKind] = []
    if policy.hash_lists:
        from moderation.kinds.hash_lists import HashListsCheck

        kinds.append(HashListsCheck(policy.hash_lists, policy.source_dir))
    if policy.detectors:
        from moderation.kinds.detectors import DetectorsCheck

        kinds.append(DetectorsCheck(policy.detectors, detectors))
    if policy.text_rules:
        from moderation.kinds.text_rules import TextRulesCheck

        kinds.append(TextRulesCheck(policy.text_rules, ocr))
    return kinds


def _decide(triggers: list[dict[str, Any]]) -> str:
    return max((t["action"] for t in triggers), key=SEVERITY.__getitem__, default="allow")
