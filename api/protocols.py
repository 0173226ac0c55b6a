"""What the peers' protocols share (OpenAI, Immich, Weaviate; docs/protocols.md): which model a
protocol's model name means, inline (base64) images checked for size before a byte is decoded,
and the embeddings each protocol answers, computed exactly as ``POST /v1/embed`` computes them.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from blipsearch.errors import BlipsearchError, InvalidInputError, NotFoundError, PayloadTooLargeError
from storage.collection import Collection

if TYPE_CHECKING:
    from PIL import Image

    from api.state import AppState
    from blipsearch.config import Settings
    from models.base import Embedder

_B64_JUNK = re.compile(r"\s+")


class ProtocolInputError(InvalidInputError):
    """A bad field of a protocol request: ``param`` names it in the protocol's error shape."""

    def __init__(self, message: str, param: str | None = None, *, status: int = 400, code: str = "invalid_value"):
        super().__init__(message)
        self.param = param
        self.http_status = status
        self.code = code


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"


def json_body_cap(settings: Settings) -> int:
    """Bytes a JSON body carrying base64 images may have: one upload's worth of image bytes
    (BLIPSEARCH_MAX_UPLOAD_BYTES, 4/3 as base64) plus 1 MiB of text, within the request cap."""
    return min(settings.max_request_bytes, settings.max_upload_bytes * 4 // 3 + (1 << 20))


def resolve_model(settings: Settings, name: str | None, param: str = "model") -> str:
    """A protocol's model name as a blipsearch model id: a collection (its model), the
    default model, or one of BLIPSEARCH_ALLOWED_MODELS; anything else is ``ModelNotFoundError``."""
    if not name:
        return settings.model
    if not isinstance(name, str) or len(name) > 512:
        raise ProtocolInputError(f"{param} must be a string of at most 512 characters.", param)
    if name in {settings.model, *settings.allowed_models}:
        return name
    try:
        if Collection.exists(settings.data_dir, name):
            return Collection.open(settings.data_dir, name).manifest.model_id
    except BlipsearchError:  # not a possible collection name: not a model here either
        pass
    raise ModelNotFoundError(
        f"The model {name!r} does not exist here: use a collection name, {settings.model!r} "
        "or a model listed in BLIPSEARCH_ALLOWED_MODELS."
    )


def inline_image_bytes(value: str, max_bytes: int, param: str) -> bytes:
    """The bytes of an image sent inline: a ``data:image/...;base64,`` URI or bare base64.
    Remote URLs are refused (blipsearch never fetches); the size is checked from the text's
    length before anything is decoded (413), and the base64 must be well-formed (400)."""
    text = value.strip()
    if text[:8].lower().startswith(("http://", "https://")):
        raise ProtocolInputError(
            f"{param}: remote image URLs are not fetched (no server-side requests); send the image inline as a "
            "data:image/...;base64,... URI.",
            param,
            code="remote_url_refused",
        )
    if text[:5].lower() == "data:":
        header, sep, text = text.partition(",")
        media = header[5:].split(";")[0].strip().lower()
        if not sep or ";base64" not in header.lower():
            raise ProtocolInputError(f"{param}: a data URI must be data:image/...;base64,<bytes>.", param)
        if media and not media.startswith("image/"):
            raise ProtocolInputError(f"{param}: the data URI holds {media!r}, not an image.", param)
    if len(text) // 4 * 3 > max_bytes + 3:  # base64 text length bounds the decoded size
        raise PayloadTooLargeError(
            f"{param}: the image is over the {max_bytes}-byte limit (BLIPSEARCH_MAX_UPLOAD_BYTES); nothing was decoded."
        )
    try:
        raw = base64.b64decode(_B64_JUNK.sub("", text), validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolInputError(f"{param}: the image is not valid base64.", param, code="invalid_base64") from None
    if not raw:
        raise ProtocolInputError(f"{param}: the image is empty.", param)
    if len(raw) > max_bytes:
        raise PayloadTooLargeError(f"{param}: the image is over the {max_bytes}-byte limit.")
    return raw


def check_flat(embedder: Embedder, what: str = "This protocol") -> None:
    """Protocols carry one vector per image: BLIP-2's 32 query vectors per image do not fit."""
    if embedder.vectors_per_image != 1:
        raise ProtocolInputError(
            f"{what} carries one vector per image, but {embedder.model_id!r} gives {embedder.vectors_per_image} "
            "per image (BLIP-2): use POST /v1/embed for them.",
            "model",
        )


def decode_all(state: AppState, blobs: list[bytes]) -> list[Image.Image]:
    """Decode inline images exactly as ``/v1/embed`` decodes uploads (by content, full decode),
    after the request's pixel budget is checked from their headers."""
    from api.decoding import check_request_pixels
    from api.uploads import sniff_and_decode

    s = state.settings
    check_request_pixels(blobs, s.max_request_pixels, s.max_image_pixels)
    return [sniff_and_decode(b, None, None, s.max_image_pixels).image for b in blobs]


def embed_mixed(
    state: AppState, embedder: Embedder, texts: list[tuple[int, str]], images: list[tuple[int, Any]]
) -> np.ndarray:
    """[n, dim] float32 vectors in input order, texts and images each in one batched call
    through the model's micro-batchers (the same calls as ``/v1/embed``)."""
    n = len(texts) + len(images)
    out = np.zeros((n, embedder.dim), np.float32)
    if texts:
        out[[i for i, _ in texts]] = np.asarray(state.embed_texts(embedder, [t for _, t in texts]), np.float32)
    if images:
        vecs = np.asarray(state.embed_images(embedder, [im for _, im in images]), np.float32)
        out[[i for i, _ in images]] = vecs.reshape(len(images), embedder.dim)
    return out


def token_counts(embedder: Embedder, texts: list[str]) -> int:
    """Tokens of ``texts`` by the model's own tokenizer (0 when it has none to ask)."""
    tokenizer = getattr(getattr(embedder, "processor", None), "tokenizer", None)
    if tokenizer is None or not texts:
        return 0
    try:
        ids = tokenizer(texts, truncation=True)["input_ids"]
    except Exception:  # noqa: BLE001 - usage is informational: never fail a request over it
        return 0
    return int(sum(len(i) for i in ids))
