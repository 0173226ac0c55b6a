"""OpenAI's ``POST /v1/embeddings`` and ``POST /v1/moderations``, so the ``openai`` SDK (and what
is built on it) talks to blipsearch unchanged. Mounted unless BLIPSEARCH_OPENAI_API=false.

Embeddings: ``model`` is a collection (its model), BLIPSEARCH_MODEL or one of
BLIPSEARCH_ALLOWED_MODELS; ``input`` a string, a list of strings, or image items (a
``data:image/...;base64,`` string, an ``{"type": "image_url", "image_url": {"url": ...}}``
content part, or any string item under infinity's ``"modality": "image"``). Vectors equal
``/v1/embed``'s. ``dimensions`` truncates and re-normalises (at most the model's dimension).
``encoding_format: "base64"`` is little-endian float32, as OpenAI sends it.

Moderations: ``model`` names a policy (BLIPSEARCH_POLICY_DIR; default
BLIPSEARCH_OPENAI_MODERATION_POLICY); each input holds an image and optional accompanying text,
or text alone (checked by the policy's text rules);
the answer carries the policy's categories and, under ``blipsearch``, the full result that
``blipsearch moderate check --json`` prints. Score mapping: docs/protocols.md.
"""

from __future__ import annotations

import base64
import logging
import uuid
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.auth import READ
from api.bodies import body_doc, read_json
from api.deps import StateDep
from api.paths import PathView
from api.protocol_errors import OPENAI, protocol_route
from api.protocols import (
    ModelNotFoundError,
    ProtocolInputError,
    check_flat,
    decode_all,
    embed_mixed,
    inline_image_bytes,
    json_body_cap,
    resolve_model,
    token_counts,
)
from blipsearch.errors import NotFoundError

router = APIRouter(
    tags=["openai"], dependencies=[READ], route_class=protocol_route(OPENAI), responses=OPENAI.responses()
)
log = logging.getLogger("blipsearch.moderation")


class EmbeddingsBody(BaseModel):
    """The body (read by hand: errors answer in OpenAI's shape)."""

    model: str = Field(description="A collection, BLIPSEARCH_MODEL or one of BLIPSEARCH_ALLOWED_MODELS.")
    input: str | list[str | dict[str, Any]] = Field(description="Texts, data:image URIs or image_url / text parts.")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1, description="Truncate and re-normalise to this many.")
    user: str | None = None
    modality: Literal["text", "image"] | None = Field(default=None, description="infinity's: every string is one.")


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="Floats, or little-endian float32 bytes as base64.")


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: Usage


class ModerationsBody(BaseModel):
    model: str | None = Field(default=None, description="A policy name (default BLIPSEARCH_OPENAI_MODERATION_POLICY).")
    input: str | list[str | dict[str, Any]]


class ModerationResult(BaseModel):
    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]
    category_applied_input_types: dict[str, list[str]]
    blipsearch: dict[str, Any] = Field(description="The result as `blipsearch moderate check --json` prints it.")


class ModerationsResponse(BaseModel):
    id: str
    model: str
    results: list[ModerationResult]


_FIELDS = {"model", "input", "encoding_format", "dimensions", "user", "modality"}


def _image_part(part: dict[str, Any], param: str) -> str:
    url = part.get("image_url")
    if isinstance(url, dict):
        url = url.get("url")
    if not isinstance(url, str):
        raise ProtocolInputError(f"{param}.image_url.url must be a data:image/...;base64,... string.", param)
    return url


def _items(raw: Any, modality: str, param: str = "input") -> list[tuple[str, str]]:
    """``input`` as ``[(kind, value)]``: kind ``text`` (the text) or ``image`` (inline image text)."""
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise ProtocolInputError(f"{param} must be a non-empty string or list.", param)
    out: list[tuple[str, str]] = []
    for i, item in enumerate(raw):
        where = f"{param}[{i}]"
        if isinstance(item, str):
            is_image = modality == "image" or (modality == "auto" and item[:11].lower() == "data:image/")
            if not is_image and not item.strip():
                raise ProtocolInputError(f"{where} is empty.", where)
            out.append(("image" if is_image else "text", item))
        elif isinstance(item, dict) and item.get("type") == "image_url":
            out.append(("image", _image_part(item, where)))
        elif isinstance(item, dict) and item.get("type") == "text" and isinstance(item.get("text"), str):
            if not item["text"].strip():
                raise ProtocolInputError(f"{where}.text is empty.", where)
            out.append(("text", item["text"]))
        elif isinstance(item, int | list):
            raise ProtocolInputError(
                f"{where}: token-id inputs are not supported (they belong to OpenAI's tokenizer); send text.", where
            )
        else:
            raise ProtocolInputError(
                f"{where} must be a string, a data:image URI, or an image_url / text content part.", where
            )
    return out


def _body(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ProtocolInputError("The request body must be a JSON object.")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise ProtocolInputError(f"Unknown field {unknown[0]!r}.", unknown[0], code="unknown_parameter")
    if "input" not in data:
        raise ProtocolInputError("input is required.", "input", code="missing_required_parameter")
    return data


def _dimensions(value: Any, dim: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolInputError("dimensions must be an integer.", "dimensions")
    if not 1 <= value <= dim:
        raise ProtocolInputError(
            f"dimensions must be between 1 and the model's {dim}; got {value}.", "dimensions", code="invalid_value"
        )
    return value


def _encode(vec: np.ndarray, fmt: str) -> list[float] | str:
    if fmt == "base64":
        return base64.b64encode(vec.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in vec]


@router.post(
    "/v1/embeddings", response_model=EmbeddingsResponse, openapi_extra=body_doc(EmbeddingsBody, "application/json")
)
async def embeddings(request: Request, state: StateDep) -> JSONResponse:
    """OpenAI's embeddings: ``{"object": "list", "data": [{"object": "embedding", "index", "embedding"}],
    "model", "usage"}``."""
    s = state.settings
    body = _body(await read_json(request, json_body_cap(s)))
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise ProtocolInputError("encoding_format must be 'float' or 'base64'.", "encoding_format")
    modality = body.get("modality") or "auto"
    if modality not in ("auto", "text", "image"):
        raise ProtocolInputError("modality must be 'text' or 'image'.", "modality")
    user = body.get("user")
    if user is not None and (not isinstance(user, str) or len(user) > 1000):
        raise ProtocolInputError("user must be a string of at most 1000 characters.", "user")
    raw = body["input"]
    if isinstance(raw, list) and len(raw) > s.embed_max_items:
        raise ProtocolInputError(
            f"{len(raw)} inputs is over the limit of {s.embed_max_items} per request (BLIPSEARCH_EMBED_MAX_ITEMS).",
            "input",
        )
    items = _items(raw, modality)
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise ProtocolInputError("model is required: a collection or model name.", "model")
    cap = s.max_upload_bytes
    blobs = [(i, inline_image_bytes(v, cap, f"input[{i}]")) for i, (k, v) in enumerate(items) if k == "image"]
    texts = [(i, v) for i, (k, v) in enumerate(items) if k == "text"]
    model_id = await run_in_threadpool(resolve_model, s, name)  # an unknown model: 404 before any decode
    images = await state.decodes.run(lambda: decode_all(state, [b for _, b in blobs])) if blobs else []

    def run() -> dict[str, Any]:
        embedder = state.embedder(model_id)
        dims = _dimensions(body.get("dimensions"), embedder.dim)
        if blobs:
            check_flat(embedder, "/v1/embeddings")
        vecs = embed_mixed(state, embedder, texts, [(i, im) for (i, _), im in zip(blobs, images, strict=True)])
        if dims is not None and dims < embedder.dim:  # OpenAI's shortening: cut, then unit length again
            vecs = vecs[:, :dims]
            vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        tokens = token_counts(embedder, [t for _, t in texts])
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": _encode(v, fmt)} for i, v in enumerate(vecs)],
            "model": name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    return JSONResponse(await run_in_threadpool(run))


def _moderation_inputs(raw: Any) -> list[tuple[str | None, str | None]]:
    """``input`` as ``[(image text or None, accompanying text or None)]``: a list of content parts
    is one input (at most one image, its text parts joined); a string or a list of strings is one
    input per string (a data:image URI is an image, any other string a text-only input)."""
    if isinstance(raw, list) and raw and all(isinstance(p, dict) for p in raw):
        kinds = _items(raw, "auto")
        images = [v for k, v in kinds if k == "image"]
        texts = [v for k, v in kinds if k == "text"]
        if len(images) > 1:
            raise ProtocolInputError("A multi-modal input holds at most one image_url part.", "input")
        return [(images[0] if images else None, " ".join(texts) if texts else None)]
    return [(v, None) if k == "image" else (None, v) for k, v in _items(raw, "auto")]


RuleResult = tuple[bool, float, list[str]]


def _rule_results(
    moderator: Any, res: Any, has_image: bool, has_text: bool
) -> dict[str, tuple[bool, float, list[str]]]:
    """``(flagged, score, applied input types)`` per hash list, detector category and text rule."""
    p, checks = moderator.policy, res.checks
    hit = {(t["check"], t.get("list") or t.get("category") or t.get("rule")) for t in res.triggers}
    out: dict[str, RuleResult] = {}
    for entry in (checks.get("hash_lists") or {}).get("lists", []):
        score = 1.0 - entry["distance"] / 256 if entry.get("distance") is not None else 0.0
        out[f"hash_list:{entry['list']}"] = (("hash_list", entry["list"]) in hit, score, ["image"])
    for rule in p.detectors if has_image else []:
        boxes = [b for ev in (checks.get("detectors") or {}).values() if isinstance(ev, dict)
                 for b in ev.get("detections", [])]  # fmt: skip
        for cat in sorted(set(rule.classes.values())):
            score = max((float(b["score"]) for b in boxes if cat in b["categories"]), default=0.0)
            prev = out.get(f"detector:{cat}", (False, 0.0, ["image"]))
            out[f"detector:{cat}"] = (prev[0] or ("detector", cat) in hit, max(prev[1], score), ["image"])
    matched = {m["rule"] for m in (checks.get("text_rules") or {}).get("matches", []) if "match" in m}
    for rule in p.text_rules:
        types = (["image"] if has_image and "ocr" in rule.sources else []) + (
            ["text"] if has_text and "text" in rule.sources else []
        )
        if types:
            flag = ("text_rule", rule.name) in hit  # a match, or a regex out of time (on_timeout)
            out[f"text_rule:{rule.name}"] = (flag, float(flag or rule.name in matched), types)
    return out


def _openai_result(
    moderator: Any, res: Any, has_image: bool, with_text: bool, paths: PathView | None = None
) -> dict[str, Any]:
    """One OpenAI moderation result from a policy's ``CheckResult`` (mapping: docs/protocols.md)."""
    from moderation.checks import screen_score  # here, not at import: it loads torch (api.app must not)

    categories: dict[str, bool] = {}
    scores: dict[str, float] = {}
    applied: dict[str, list[str]] = {}
    for c in res.categories:
        confirm = [x for x in (c.itm, c.vqa) if x is not None]
        categories[c.name] = bool(c.hit)
        scores[c.name] = float(max(confirm)) if confirm else float(screen_score(c.itc))
        applied[c.name] = ["image"]
    if res.consistency is not None:
        categories["consistency"] = not res.consistency["consistent"]
        scores["consistency"] = 1.0 - float(res.consistency["itm"])
        applied["consistency"] = ["image", "text"] if with_text else ["image"]
    if res.blocklist is not None:
        categories["blocklist"] = bool(res.blocklist["matched"])
        scores["blocklist"] = float(res.blocklist["score"] or 0.0)
        applied["blocklist"] = ["image"]
    for key, (flag, score, types) in _rule_results(moderator, res, has_image, with_text).items():
        categories[key], scores[key], applied[key] = flag, score, types
    p = moderator.policy
    models = {k: paths.model(v) if paths else v for k, v in moderator.model_ids.items()}  # no server paths
    return {
        "flagged": res.decision != "allow",
        "categories": categories,
        "category_scores": scores,
        "category_applied_input_types": applied,
        "blipsearch": {"policy": p.name, "version": p.version, "models": models, **res.to_dict()},
    }


@router.post(
    "/v1/moderations", response_model=ModerationsResponse, openapi_extra=body_doc(ModerationsBody, "application/json")
)
async def moderations(request: Request, state: StateDep) -> JSONResponse:
    """OpenAI's moderations backed by a named policy: ``{"id", "model", "results": [...]}``."""
    s = state.settings
    body = _body(await read_json(request, json_body_cap(s)))
    policy = body.get("model") or s.openai_moderation_policy
    if not isinstance(policy, str) or not policy:
        raise ProtocolInputError("model must name a policy (or set BLIPSEARCH_OPENAI_MODERATION_POLICY).", "model")
    raw = body["input"]
    if isinstance(raw, list) and len(raw) > s.embed_max_items:
        raise ProtocolInputError(f"{len(raw)} inputs is over the limit of {s.embed_max_items} per request.", "input")
    inputs = _moderation_inputs(raw)
    uris = [(i, img) for i, (img, _) in enumerate(inputs) if img is not None]
    with_image = [i for i, _ in uris]
    blobs = [inline_image_bytes(img, s.max_upload_bytes, f"input[{i}]") for i, img in uris]

    images = await state.decodes.run(lambda: decode_all(state, blobs)) if blobs else []

    def run() -> dict[str, Any]:
        try:
            moderator = state.moderator(policy)
        except NotFoundError:
            raise ModelNotFoundError(f"No moderation policy {policy!r} in the policy folder.") from None
        text_only = [i for i, (img, _) in enumerate(inputs) if img is None]
        if text_only and not moderator.reads_text:
            raise ProtocolInputError(
                f"input[{text_only[0]}]: policy {policy!r} has no check that applies to text (no text_rules on "
                "accompanying text); send an image, or name a policy with text_rules.",
                f"input[{text_only[0]}]",
            )
        results: list[Any] = [None] * len(inputs)
        checked = moderator.check_images(images, [inputs[i][1] for i in with_image])
        for i, r in zip(with_image, checked, strict=True):
            results[i] = r
        for i, r in zip(
            text_only, moderator.check_texts([inputs[i][1] or "" for i in text_only]) if text_only else [], strict=True
        ):
            results[i] = r
        out = [
            _openai_result(moderator, r, img is not None, t is not None, PathView(state.settings))
            for r, (img, t) in zip(results, inputs, strict=True)
        ]
        for answer in out:  # the decision, as `moderate check` reports it, in the server log too
            b = answer["blipsearch"]
            log.info("moderation policy=%s version=%s decision=%s", b["policy"], b["version"], b["decision"])
        return {"id": f"modr-{uuid.uuid4().hex}", "model": policy, "results": out}

    return JSONResponse(await run_in_threadpool(run))
