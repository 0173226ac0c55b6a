"""Moderation policies: a versioned YAML or JSON file, validated strictly.

Example::

    name: marketplace
    version: "3"
    categories:
      - name: weapons
        prompts: ["a photo of a gun", "a rifle", "a knife used as a weapon"]
        itc_threshold: 0.60     # cheap screen: (1 + ITC cosine) / 2 of the image with its best prompt
        itm_threshold: 0.80     # the decision: ITM match probability of the best prompt
        action: block           # flag | review | block
        questions: ["Is there a weapon in this image?"]  # optional, asked of vqa_model after the ITC screen
        vqa_threshold: 0.70     # hit when P(yes) / (P(yes) + P(no)) of the best question reaches it
    consistency:                # optional: is the accompanying text about the image?
      itm_threshold: 0.50
      action: review
    vqa_model: ./models/instructblip-flan-t5-xl   # optional: answers the categories' questions
    blocklist:                  # optional: near-duplicates of known-bad images
      collection: known-bad
      threshold: 0.92
      action: block
      mirror: true              # also match horizontally flipped copies (one more forward)
    itm_model: ./models/blip-itm-base-coco  # optional: ITM for a CLIP/SigLIP/ALIGN model (else ITC-only)
    hash_lists:                 # optional: known images by PDQ hash (Hamming distance <= threshold)
      - name: ncmec-like
        path: lists/known.pdq   # one hex hash a line, or ThreatExchange's CSV export
        threshold: 31
        action: block
        dihedral: true          # also match rotations and flips of the image
    detectors:                  # optional: a real detector's classes mapped to categories
      - name: nudity
        detector: nudenet
        classes: {FEMALE_BREAST_EXPOSED: nudity, FEMALE_GENITALIA_EXPOSED: nudity}
        threshold: 0.5
        action: review
    text_rules:                 # optional: over the record's OCR text and the accompanying text
      - {name: slurs, keywords: ["badword", "two words"], action: block}
      - {name: crypto-scam, regex: "send\\s+(btc|bitcoin)", action: review}
      - {name: contact, builtin: email, action: flag}   # email, phone, url, payment_card (Luhn)

A category is confirmed by ITM (``itm_threshold``), by visual questions (``questions`` +
``vqa_threshold``, answered by the policy's ``vqa_model``: InstructBLIP or LLaVA), or both (a hit
of either is a hit); ``itm_threshold`` may be left out only when the category has questions.

Errors name the field: ``categories[0].itm_threshold: must be within [0, 1]``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from blipsearch.errors import InvalidInputError

Action = Literal["flag", "review", "block"]
SEVERITY = {"allow": 0, "flag": 1, "review": 2, "block": 3}
Threshold = Field(ge=0.0, le=1.0, description="within [0, 1]")


class PolicyError(InvalidInputError):
    code = "invalid_policy"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Category(_Strict):
    name: str = Field(min_length=1, max_length=64)
    prompts: list[str] = Field(min_length=1, max_length=64)
    itc_threshold: float = Threshold
    itm_threshold: float | None = Field(default=None, ge=0.0, le=1.0, description="within [0, 1]")
    action: Action
    questions: list[str] = Field(default_factory=list, max_length=16)
    vqa_threshold: float | None = Field(default=None, ge=0.0, le=1.0, description="within [0, 1]")

    @field_validator("prompts", "questions")
    @classmethod
    def _nonblank(cls, texts: list[str], info: ValidationInfo) -> list[str]:
        if any(not t.strip() for t in texts):
            raise ValueError(f"{info.field_name} must not be blank")
        return texts

    @model_validator(mode="after")
    def _confirmed(self) -> Category:
        if self.questions and self.vqa_threshold is None:
            raise _field_error("vqa_threshold", "required when the category has questions")
        if self.vqa_threshold is not None and not self.questions:
            raise _field_error("questions", "required when vqa_threshold is set")
        if self.itm_threshold is None and not self.questions:
            raise _field_error("itm_threshold", "Field required")
        return self


class Consistency(_Strict):
    itm_threshold: float = Threshold
    action: Action = "review"


class Blocklist(_Strict):
    collection: str = Field(min_length=1, max_length=64)
    threshold: float = Threshold
    action: Action = "block"
    mirror: bool = True  # also match the image's mirror: a flipped re-upload still matches


RuleName = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class HashListRule(_Strict):
    """A file of PDQ hashes (moderation/hashlists.py); a match is a Hamming distance <= threshold."""

    name: str = RuleName
    path: str = Field(min_length=1, max_length=1000, description="relative paths: to the policy file's folder")
    format: Literal["auto", "lines", "threatexchange_csv"] = "auto"
    threshold: int = Field(default=31, ge=0, le=256, description="within [0, 256] bits")
    action: Action = "block"
    dihedral: bool = False  # also match the image's 7 rotations and flips
    min_quality: int = Field(default=0, ge=0, le=100, description="within [0, 100]")
    max_hashes: int = Field(default=50_000_000, ge=1, le=1_000_000_000)


class DetectorRule(_Strict):
    """A detector's classes mapped to policy categories; a class's box at ``threshold`` or more is a hit."""

    name: str = RuleName
    detector: Literal["nudenet"]
    model: str | None = Field(default=None, min_length=1, max_length=1000)  # default: the package's model
    classes: dict[str, str] = Field(min_length=1, max_length=256, description="detector class -> category")
    threshold: float = Threshold
    action: Action


class TextRule(_Strict):
    """One text rule over OCR text and the accompanying text (moderation/kinds/text_rules.py):
    exactly one of ``keywords``, ``regex`` or ``builtin``."""

    name: str = RuleName
    keywords: list[str] | None = Field(default=None, min_length=1, max_length=10_000)
    regex: str | None = Field(default=None, min_length=1, max_length=2000)
    builtin: Literal["email", "phone", "url", "payment_card"] | None = None
    action: Action
    sources: list[Literal["ocr", "text"]] = Field(default=["ocr", "text"], min_length=1)
    timeout_ms: float = Field(default=50.0, gt=0, le=5000, description="within (0, 5000] ms")
    on_timeout: Action = "review"  # a regex that runs out of time is never a silent allow

    @field_validator("keywords")
    @classmethod
    def _keywords(cls, words: list[str] | None) -> list[str] | None:
        if words is not None and any(not w.strip() or len(w) > 200 for w in words):
            raise ValueError("keywords must not be blank or over 200 characters")
        return words

    @model_validator(mode="after")
    def _one(self) -> TextRule:
        given = [k for k in ("keywords", "regex", "builtin") if getattr(self, k) is not None]
        if len(given) != 1:
            raise _field_error("keywords", "a text rule has exactly one of keywords, regex or builtin")
        if self.regex is not None:
            from moderation.textmatch import compile_regex

            try:
                compile_regex(self.regex)
            except ValueError as exc:
                raise _field_error("regex", str(exc)) from None
        return self


class Policy(_Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    version: str = Field(min_length=1, max_length=32)
    categories: list[Category] = Field(default_factory=list, max_length=256)
    consistency: Consistency | None = None
    blocklist: Blocklist | None = None
    hash_lists: list[HashListRule] = Field(default_factory=list, max_length=64)
    detectors: list[DetectorRule] = Field(default_factory=list, max_length=16)
    text_rules: list[TextRule] = Field(default_factory=list, max_length=256)
    _source_dir: Path | None = PrivateAttr(default=None)  # where relative hash-list paths start

    @property
    def uses_blip(self) -> bool:
        """Whether a check needs the ITC / ITM models (a policy of only hash lists, detectors and
        text rules does not: it runs without loading them)."""
        return bool(self.categories) or self.blocklist is not None or self.consistency is not None

    @property
    def source_dir(self) -> Path:
        return self._source_dir or Path.cwd()

    vqa_model: str | None = Field(default=None, min_length=1, max_length=512)
    # The BLIP / BLIP-2 ITM checkpoint confirming screened categories when the ITC
    # model has no ITM head (CLIP, SigLIP, ALIGN); without one such a policy is ITC-only.
    itm_model: str | None = Field(default=None, min_length=1, max_length=1000)

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, v: object) -> object:
        return str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v

    @field_validator("categories")
    @classmethod
    def _unique(cls, cats: list[Category]) -> list[Category]:
        names = [c.name for c in cats]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate category names: {sorted(dup)}")
        return cats

    @field_validator("hash_lists", "detectors", "text_rules")
    @classmethod
    def _unique_rules(cls, rules: list[HashListRule] | list[DetectorRule] | list[TextRule]) -> list[Any]:
        names = [r.name for r in rules]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate rule names: {sorted(dup)}")
        return list(rules)

    @model_validator(mode="after")
    def _something_to_check(self) -> Policy:
        if not self.categories and not (self.hash_lists or self.detectors or self.text_rules):
            raise _field_error(
                "categories",
                "at least 1 category is required unless the policy has hash_lists, detectors or text_rules",
            )
        return self

    @model_validator(mode="after")
    def _vqa_model(self) -> Policy:
        asked = any(c.questions for c in self.categories)
        if asked and self.vqa_model is None:
            raise _field_error("vqa_model", "required when a category has questions (an InstructBLIP or LLaVA model)")
        if self.vqa_model is not None and not asked:
            raise _field_error("vqa_model", "no category has questions")
        return self


def _field_error(field: str, message: str) -> PydanticCustomError:
    return PydanticCustomError("field_rule", "{field}: {message}", {"field": field, "message": message})


def _field(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "policy"


def parse_policy(data: object, source: str = "policy") -> Policy:
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        msgs = []
        for e in exc.errors():
            msg = e["msg"]
            if e["type"] == "extra_forbidden":
                msg = "unknown key"
            elif e["type"].startswith(("greater_than", "less_than")) and set(e.get("ctx", {}).values()) <= {0, 1}:
                msg = "must be within [0, 1]"
            loc = e["loc"]
            if e["type"] == "field_rule":  # a model-level rule naming its field
                loc, msg = (*loc, e["ctx"]["field"]), e["ctx"]["message"]
            msgs.append(f"{_field(loc)}: {msg}")
        raise PolicyError(f"Invalid policy {source}: " + "; ".join(msgs)) from None


def load_policy(path: Path | str) -> Policy:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"Cannot read policy file {path}: {exc.strerror or exc}") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except ValueError as exc:  # json.JSONDecodeError and yaml.YAMLError (re-raised below) alike
        raise PolicyError(f"Policy file {path} is not valid JSON: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - yaml.YAMLError and its many subclasses
        raise PolicyError(f"Policy file {path} is not valid YAML: {exc}") from None
    policy = parse_policy(data, str(path))
    policy._source_dir = path.resolve().parent
    return policy
