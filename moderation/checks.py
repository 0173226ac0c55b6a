"""The three checks, on one image at a time (batched vision encoder):

* policy screening: ITC cosine of the image with every category prompt; categories whose best
  prompt's screen score ``(1 + cosine) / 2`` (the cosine rescaled to [0, 1], so that every
  policy threshold lives in [0, 1]) reaches ``itc_threshold`` are confirmed by the ITM head over
  their prompts, the image's cross-attention keys and values computed once for all of them
  (``score_image_vs_texts``);
  a category is hit when its best ITM match probability reaches ``itm_threshold``;
* visual questions: a category with ``questions`` also asks them, for the images that pass its
  screen, of the policy's InstructBLIP or LLaVA model (models/vqa.py): the best question's
  P(yes) / (P(yes) + P(no)) reaching ``vqa_threshold`` is a hit as well (the images are
  preprocessed once for all categories, one ``generate`` step per question and batch);
* consistency: the ITM match probability of the image with its accompanying text;
* blocklist: nearest image of a blocklist collection by ITC image-image cosine (max over query
  vectors for BLIP-2, and over the image and its mirror image unless ``mirror: false``), a
  match at ``threshold`` or more. Re-encodes, resizes and small crops survive the model's own
  resize; the mirror query makes horizontal flips match as well.

The decision is the most severe action hit (block > review > flag), else ``allow``.
Decisions follow the thresholds exactly: a score equal to its threshold is a hit.

Models without an ITM head (CLIP, SigLIP, ALIGN; issue #17): the ITM confirmation runs on the
policy's ``itm_model`` (a BLIP / BLIP-2 ITM checkpoint, its own vision encoder computing the
image's tokens, only for images that pass a screen). Without one the moderator is **ITC-only**:
a category is hit when its screen score reaches ``itc_threshold`` (``itm_threshold`` is not
used, ``itm`` stays null, ``models.itm`` is null); the consistency check and calibration need ITM
and answer NoItmModelError (exit 2 / HTTP 422).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from blipsearch.errors import NoItmModelError
from models.base import Embedder
from models.detectors import Detector
from models.itm import ItmScorer, softmax_match
from models.vqa import VisualQuestionScorer
from moderation.kinds.base import CheckKind, Subject
from moderation.policy import SEVERITY, Consistency, Policy, PolicyError

if TYPE_CHECKING:
    from PIL import Image

    from search.engine import SearchEngine

DEFAULT_CONSISTENCY = Consistency(itm_threshold=0.5, action="review")


@dataclass
class CategoryScore:
    name: str
    action: str
    itc: float  # best prompt's ITC cosine
    itc_prompt: str
    screened: bool  # screen_score(itc) >= itc_threshold: sent to ITM
    itm: float | None = None  # best prompt's ITM match probability
    itm_prompt: str | None = None
    hit: bool = False
    vqa: float | None = None  # best question's P(yes) / (P(yes) + P(no))
    vqa_question: str | None = None


@dataclass
class CheckResult:
    decision: str
    categories: list[CategoryScore]
    triggers: list[dict[str, Any]] = field(default_factory=list)
    consistency: dict[str, Any] | None = None
    blocklist: dict[str, Any] | None = None
    timing_ms: dict[str, float] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)  # evidence of the record-level kinds (moderation/kinds/)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    ) -> None:
        if vqa is None and any(c.questions for c in policy.categories):
            raise PolicyError(f"Policy {policy.name!r} asks visual questions but no vqa_model was loaded.")
        if embedder is None and policy.uses_blip:
            raise PolicyError(
                f"Policy {policy.name!r} has BLIP checks (categories, blocklist, consistency): it needs a model."
            )
        self.vqa = vqa
        self.policy = policy
        self.embedder: Embedder = embedder  # type: ignore[assignment]  # None only when no check uses it
        self.scorer = scorer
        self.blocklist = blocklist
        self.shared_kv = shared_kv
        self.prompts = [p for c in policy.categories for p in c.prompts]
        self.owner = np.array([i for i, c in enumerate(policy.categories) for _ in c.prompts])
        # [P, d], once per policy
        self.prompt_emb = (
            embedder.embed_texts(self.prompts)
            if embedder is not None and self.prompts
            else np.zeros((0, embedder.dim if embedder is not None else 1), np.float32)
        )
        if blocklist is not None and embedder is not None:
            blocklist.coll.check_model(embedder.fingerprint, embedder.model_id)
        self.kinds = record_kinds(policy, detectors)

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
        out = (
            self._blip_checks(images, texts, screen)
            if self.policy.uses_blip
            else [CheckResult("allow", []) for _ in images]
        )
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

    def _blip_checks(self, images: list[Image.Image], texts: list[str | None], screen: bool) -> list[CheckResult]:
        t0 = time.perf_counter()
        tokens: list[Any]
        if self._shared_vision:
            shared = self.embedder.vision_tokens(self.embedder.preprocess(images))
            emb = self.embedder.embed_tokens(shared)  # [n, d] or [n, 32, d]
            tokens = [shared[i : i + 1] for i in range(len(images))]
        else:  # ITC model without ITM: the ITM model's tokens only when an image needs them
            emb = self.embedder.embed_pixels(self.embedder.preprocess(images))
            tokens = [_LazyTokens(self.scorer, im) for im in images]
        encode_ms = (time.perf_counter() - t0) * 1e3 / len(images)
        if not self.policy.categories and self.policy.consistency is None:
            texts = [None] * len(images)  # the text is for the text rules here, not an ITM consistency check
        mirrored = None
        if self.blocklist is not None and self.policy.blocklist is not None and self.policy.blocklist.mirror:
            from PIL import ImageOps

            mirrored = self.embedder.embed_images([ImageOps.mirror(im) for im in images])
        out = []
        for i in range(len(images)):
            extra = None if mirrored is None else mirrored[i]
            res = self.check_tokens(tokens[i], emb[i], texts[i], screen=screen, mirror_emb=extra)
            res.timing_ms = {"encode": round(encode_ms, 3), **res.timing_ms}
            out.append(res)
        if self.vqa is not None:
            self._ask(images, out, screen)
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
            raise self._no_itm("calibration scores every category by ITM")
        t0 = time.perf_counter()
        vecs = np.asarray(emb, np.float32).reshape(-1, self.prompt_emb.shape[1])
        itc = (vecs @ self.prompt_emb.T).max(axis=0)  # [P]: max over BLIP-2 query vectors
        cats: list[CategoryScore] = []
        confirm: list[int] = []  # prompt indexes sent to ITM
        for ci, cat in enumerate(self.policy.categories):
            idx = np.flatnonzero(self.owner == ci)
            best = int(idx[np.argmax(itc[idx])])
            screened = bool(screen_score(itc[best]) >= cat.itc_threshold)
            cats.append(CategoryScore(cat.name, cat.action, float(itc[best]), self.prompts[best], screened))
            if (screened and cat.itm_threshold is not None) or not screen:
                confirm.extend(idx.tolist())
        timing = {"itc": _ms(t0)}
        triggers: list[dict[str, Any]] = []
        if confirm and self.scorer is None:  # ITC-only: the screen decides
            for cat, score in zip(self.policy.categories, cats, strict=True):
                if cat.itm_threshold is None:  # a questions-only category: its questions decide
                    continue
                score.hit = score.screened
                if score.hit:
                    triggers.append(
                        {"check": "policy", "category": cat.name, "prompt": score.itc_prompt,
                         "score": float(screen_score(score.itc)), "threshold": cat.itc_threshold,
                         "action": cat.action, "stage": "itc"}
                    )  # fmt: skip
        elif confirm:
            t1 = time.perf_counter()
            probs = self._itm(tokens, [self.prompts[j] for j in confirm])
            timing["itm"] = _ms(t1)
            by_prompt = dict(zip(confirm, probs.tolist(), strict=True))
            for ci, (cat, score) in enumerate(zip(self.policy.categories, cats, strict=True)):
                mine: list[int] = np.flatnonzero(self.owner == ci).tolist()
                if mine[0] not in by_prompt:
                    continue
                top = max(mine, key=by_prompt.__getitem__)
                score.itm, score.itm_prompt = float(by_prompt[top]), self.prompts[top]
                if cat.itm_threshold is None:
                    continue
                score.hit = score.screened and score.itm >= cat.itm_threshold
                if score.hit:
                    triggers.append(
                        {"check": "policy", "category": cat.name, "prompt": score.itm_prompt, "score": score.itm,
                         "threshold": cat.itm_threshold, "action": cat.action}
                    )  # fmt: skip
        consistency = None
        if text is not None:
            t2 = time.perf_counter()
            rule = self.policy.consistency or DEFAULT_CONSISTENCY
            prob = float(self._itm(tokens, [text])[0])
            consistency = {"text": text, "itm": prob, "threshold": rule.itm_threshold,
                           "consistent": prob >= rule.itm_threshold}  # fmt: skip
            timing["consistency"] = _ms(t2)
            if not consistency["consistent"]:
                triggers.append({"check": "consistency", "score": prob, "threshold": rule.itm_threshold,
                                 "action": rule.action})  # fmt: skip
        blocklist = None
        if self.blocklist is not None and self.policy.blocklist is not None:
            t3 = time.perf_counter()
            queries = vecs if mirror_emb is None else np.concatenate([vecs, mirror_emb.reshape(vecs.shape)])
            blocklist = self._blocklist_match(queries)
            timing["blocklist"] = _ms(t3)
            if blocklist["matched"]:
                triggers.append({"check": "blocklist", **blocklist, "action": self.policy.blocklist.action})
        return CheckResult(_decide(triggers), cats, triggers, consistency, blocklist, timing)

    def _ask(self, images: list[Image.Image], results: list[CheckResult], screen: bool) -> None:
        """The visual questions of every category, for the images that passed its screen."""
        assert self.vqa is not None
        t0 = time.perf_counter()
        cats = self.policy.categories
        wanted = {
            ci: [i for i, r in enumerate(results) if r.categories[ci].screened or not screen]
            for ci, cat in enumerate(cats)
            if cat.questions
        }
        needed = sorted({i for rows in wanted.values() for i in rows})
        if not needed:
            return
        pixels = self.vqa.captioner.preprocess([images[i] for i in needed])  # once for every category
        row_of = {i: r for r, i in enumerate(needed)}
        bs = self.vqa.captioner.batch_size
        for ci, rows in wanted.items():
            cat = cats[ci]
            for start in range(0, len(rows), bs):
                part = rows[start : start + bs]
                scores = self.vqa.score_pixels(pixels[[row_of[i] for i in part]], cat.questions)
                for i, row in zip(part, scores, strict=True):
                    score = results[i].categories[ci]
                    best = int(np.argmax(row))
                    score.vqa, score.vqa_question = float(row[best]), cat.questions[best]
                    assert cat.vqa_threshold is not None  # the policy requires it with questions
                    if score.screened and score.vqa >= cat.vqa_threshold:
                        score.hit = True
                        results[i].triggers.append(
                            {"check": "vqa", "category": cat.name, "question": score.vqa_question, "score": score.vqa,
                             "threshold": cat.vqa_threshold, "action": cat.action, "model": self.vqa.model_id}
                        )  # fmt: skip
        per_image = round((time.perf_counter() - t0) * 1e3 / len(needed), 3)
        for i in needed:
            results[i].timing_ms["vqa"] = per_image
            results[i].decision = _decide(results[i].triggers)

    def _no_itm(self, why: str) -> NoItmModelError:
        return NoItmModelError(
            f"{why}, but the {self.embedder.family} model {self.embedder.model_id!r} has no ITM head: set "
            "itm_model in the policy to a BLIP or BLIP-2 ITM checkpoint."
        )

    def _itm(self, tokens: Any, texts: list[str]) -> np.ndarray:
        if self.scorer is None:
            raise self._no_itm("the consistency check needs ITM")
        if isinstance(tokens, _LazyTokens):
            tokens = tokens.get()
        if self.shared_kv:
            logits = self.scorer.score_image_vs_texts(tokens, texts)
        else:  # the naive forward: the image repeated once per text
            logits = self.scorer.score_pairs(tokens.expand(len(texts), *tokens.shape[1:]), texts)
        return softmax_match(logits)

    def _blocklist_match(self, vecs: np.ndarray) -> dict[str, Any]:
        assert self.blocklist is not None and self.policy.blocklist is not None
        rule = self.policy.blocklist
        self.blocklist.sync()
        ids, scores = self.blocklist.index.search(vecs, 1)
        if len(ids) == 0:
            return {"matched": False, "collection": rule.collection, "id": None, "score": None,
                    "threshold": rule.threshold}  # fmt: skip
        return {"matched": bool(scores[0] >= rule.threshold), "collection": rule.collection, "id": int(ids[0]),
                "score": float(scores[0]), "threshold": rule.threshold}  # fmt: skip


def record_kinds(policy: Policy, detectors: dict[str, Detector] | None = None) -> list[CheckKind]:
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

        kinds.append(TextRulesCheck(policy.text_rules))
    return kinds


def _decide(triggers: list[dict[str, Any]]) -> str:
    return max((t["action"] for t in triggers), key=SEVERITY.__getitem__, default="allow")


class _LazyTokens:
    """An image's tokens from the ITM model's own vision encoder, computed on first use."""

    def __init__(self, scorer: ItmScorer | None, image: Image.Image) -> None:
        self.scorer, self.image = scorer, image
        self._tokens: Any = None

    def get(self) -> Any:
        if self._tokens is None:
            assert self.scorer is not None
            self._tokens = self.scorer.vision_tokens(self.scorer.preprocess([self.image]))
        return self._tokens


def screen_score(cosine: float | np.ndarray) -> Any:
    """The ITC pre-screen score: the cosine rescaled from [-1, 1] to [0, 1]."""
    return (1.0 + np.asarray(cosine, np.float64)) / 2.0


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1e3, 3)
