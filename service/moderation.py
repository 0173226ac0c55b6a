"""Moderators from settings: policy, ITC model, ITM scorer, the blocklist collection's engine, and
the policy's visual-question model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from blipsearch.config import Settings
from blipsearch.errors import InvalidInputError, MissingDependencyError, NotFoundError
from models.base import Embedder
from models.vqa import VisualQuestionScorer
from moderation.checks import Moderator
from moderation.policy import Policy, load_policy
from service.engines import open_engine
from service.models import load_captioner, load_itm_scorer, load_model

if TYPE_CHECKING:
    from PIL import Image


def policy_path(settings: Settings, name: str) -> Path:
    """A named policy in the policy folder (``BLIPSEARCH_POLICY_DIR``): NAME.yaml/.yml/.json."""
    from storage.layout import validate_name

    try:
        validate_name(name)
    except InvalidInputError:
        raise InvalidInputError(f"Invalid policy name {name!r}.") from None
    folder = settings.policy_dir or settings.data_dir / "policies"
    for ext in (".yaml", ".yml", ".json"):
        path = folder / f"{name}{ext}"
        if path.is_file():
            return path
    raise NotFoundError(f"No policy {name!r} in the policy folder (NAME.yaml, NAME.yml or NAME.json).")


def build_moderator(
    settings: Settings,
    policy: Policy,
    *,
    model: str | None = None,
    embedder: Embedder | None = None,
    shared_kv: bool = True,
    vqa: VisualQuestionScorer | None = None,
) -> Moderator:
    if embedder is None and policy.uses_blip:
        embedder = load_model(settings, model or settings.model)
    # The policy's itm_model, else the model's own ITM head; CLIP / SigLIP / ALIGN without an
    # itm_model moderate ITC-only (moderation/checks.py). A policy of only hash lists, detectors
    # and text rules loads no model at all.
    scorer = None
    if embedder is not None and policy.uses_blip and (policy.itm_model is not None or embedder.has_itm):
        scorer = load_itm_scorer(settings, embedder, policy.itm_model)
    blocklist = None
    if policy.blocklist is not None:
        assert embedder is not None
        blocklist = open_engine(settings, policy.blocklist.collection, embedder=embedder)
    if vqa is None and policy.vqa_model is not None:
        vqa = load_vqa(settings, policy.vqa_model)
    ocr = ocr_reader(settings) if any("ocr" in r.sources for r in policy.text_rules) else None
    return Moderator(policy, embedder, scorer, blocklist=blocklist, shared_kv=shared_kv, vqa=vqa, ocr=ocr)


def ocr_reader(settings: Settings) -> Callable[[Image.Image], str] | None:
    """The text of an image for text rules that read OCR text, where the record has none stored
    (``moderate check``, uploads): the configured OCR engine (models/ocr/), when it is installed;
    None otherwise (those rules then see only stored OCR text)."""
    import numpy as np

    from indexer.ocr import OcrOptions
    from models.ocr.registry import load_ocr_engine

    opts = OcrOptions.from_settings(settings)
    try:
        engine = load_ocr_engine(opts.engine, threads=opts.threads, rec_batch=opts.rec_batch)
    except (ImportError, MissingDependencyError):  # the engine is not installed: those rules see only stored OCR text
        return None

    def read(image: Image.Image) -> str:
        res = engine.read(np.asarray(image.convert("RGB")), opts.limits)
        if res.error and not res.lines:  # nothing read: the text rule reports it (review), never a silent allow
            raise RuntimeError(res.error)
        return str(res.text(opts.min_confidence))

    return read


def load_vqa(settings: Settings, model: str) -> VisualQuestionScorer:
    """A policy's ``vqa_model`` (InstructBLIP or LLaVA), loaded as captioners are (with their memory check)."""
    return VisualQuestionScorer(load_captioner(settings, model, vqa=True))


def moderator_from_file(settings: Settings, path: Path | str, model: str | None = None) -> Moderator:
    return build_moderator(settings, load_policy(path), model=model)
