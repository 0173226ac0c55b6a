"""Text queries on the cached OpenVINO text tower, without torch or transformers.

A ``search`` on a collection built with BLIP in ``fast`` mode on OpenVINO needs one thing from
the model: the text tower, which models/openvino_runtime.py has already exported (IR cache) and
OpenVINO has already compiled (its blob cache). Loading torch, transformers and the whole
checkpoint for that costs seconds. So when the full embedder first runs a text query on
OpenVINO, it writes a *query record* (``write_record``): what a later process needs to encode
texts exactly as it does (the IR path, the compile settings, the tokenizer's padding and
truncation, the model's identity). ``open_query_embedder`` finds that record, and returns an
embedder that tokenizes with ``tokenizers`` (the checkpoint's own tokenizer.json) and runs the
same compiled tower, so its vectors equal the full embedder's. Anything else (an image, ITM
tokens, the torch model) loads the full embedder on first use and delegates to it.

A record is found by a key over everything that changes the outcome: the model folder's files
(names, sizes, modification times), the load options, the CPU flags and the kernel libraries'
environment, and the OpenVINO version. Anything else is a miss, and the full embedder loads.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import json
import logging
import os
import sys
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.base import Embedder
from models.text_preprocess import TextPreprocessor

if TYPE_CHECKING:
    from PIL import Image

    from models.options import EmbedderOptions

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install -e .[openvino]"
COMPILED_SUFFIX = "-compiled"  # OpenVINO's compiled-blob cache: a folder beside the IR cache's
TELEMETRY = "openvino_telemetry"  # OpenVINO's optional usage-telemetry package (import_openvino)
QUERY_SUFFIX = "-query"  # query records: a folder beside the IR cache's
RECORD_VERSION = 1
TOKENIZER_FILE = "tokenizer.json"
# The environment the kernels (and torch's default thread count) read.
_ENV_PREFIXES = ("OMP_", "MKL_", "ONEDNN_", "DNNL_", "ATEN_", "OV_", "KMP_")
# The options an embedder's outcome does not depend on (where the cache is; resolved below).
_KEY_SKIP = ("runtime_cache_dir",)


class _NoTelemetry(importlib.abc.MetaPathFinder):
    """Refuses ``openvino_telemetry`` while ``openvino`` is imported (``import_openvino``)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == TELEMETRY or name.startswith(TELEMETRY + "."):
            raise ModuleNotFoundError(f"{name} is not loaded by blipsearch", name=name)
        return None


def import_openvino() -> Any:
    """The ``openvino`` module; ImportError when the extra is not installed.

    Imported without OpenVINO's usage telemetry: ``import openvino`` imports its model
    converter (openvino.tools.ovc), which sends an "import" event to an analytics server from a
    forked process unless the user opted out in ``~/intel``. A search engine must not contact
    anyone unasked, and the fork costs each start about 0.1-0.2 s. The converter falls back to
    its own no-op stub when the optional ``openvino_telemetry`` package cannot be imported, so
    that import is refused while ``openvino`` loads; ``convert_model`` works as before."""
    if "openvino" in sys.modules:
        return sys.modules["openvino"]
    finder = _NoTelemetry()
    sys.meta_path.insert(0, finder)
    try:
        import openvino
    finally:
        sys.meta_path.remove(finder)
    return openvino


def compiled_cache(cache_dir: Path) -> Path:
    """Where OpenVINO keeps compiled blobs for the IR cache ``cache_dir`` (beside it, so the IR
    cache holds only one folder per tower)."""
    return cache_dir.with_name(cache_dir.name + COMPILED_SUFFIX)


def compile_config(hint: str, threads: int, cache_dir: Path | None) -> dict[str, Any]:
    """The CPU plugin's settings for a tower. With a cache folder, OpenVINO's own compiled-model
    cache (``CACHE_DIR``) keeps the compiled blob, so a later process imports it instead of
    compiling the IR again (seconds for a base-size tower)."""
    config: dict[str, Any] = {
        "INFERENCE_PRECISION_HINT": hint,
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
    }
    if cache_dir is not None:
        config["CACHE_DIR"] = str(compiled_cache(cache_dir))
    return config


def _openvino_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("openvino")
    except metadata.PackageNotFoundError:
        return None


def _cpu_flags_line() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.split(":", 1)[0].strip() in ("flags", "Features"):
                return line
    except OSError:
        pass
    return ""


def _may_have_cuda() -> bool:
    """Whether ``device="auto"`` could pick a GPU here (then no record applies)."""
    return Path("/dev/nvidiactl").exists() or Path("/proc/driver/nvidia").exists()


def record_key(model_dir: str, options: dict[str, Any]) -> str | None:
    """The record key of the local model folder ``model_dir`` loaded with ``options`` (the
    embedder's load options); None when no record can apply (not a folder, not a CPU)."""
    folder = Path(model_dir)
    if not folder.is_dir() or options.get("precision") != "fast":
        return None
    if options.get("device") not in ("cpu", "auto") or options.get("dtype") not in ("auto", "fp32"):
        return None
    if options.get("device") == "auto" and _may_have_cuda():
        return None
    try:
        files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file())
    except OSError:
        return None
    parts = {
        "version": RECORD_VERSION,
        "model": str(folder.resolve()),
        "files": files,
        "options": {k: v for k, v in sorted(options.items()) if k not in _KEY_SKIP and k not in ("device", "dtype")},
        "env": sorted((k, v) for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)),
        "cpu": _cpu_flags_line(),
        "cpus": os.cpu_count(),
        "openvino": _openvino_version(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def record_path(cache_dir: Path, key: str) -> Path:
    return cache_dir.with_name(cache_dir.name + QUERY_SUFFIX) / f"{key}.json"


def write_record(cache_dir: Path, key: str, record: dict[str, Any]) -> None:
    """Store ``record`` under ``key`` (temp file, then renamed into place); a cache that cannot
    be written costs the fast start, never the query."""
    path = record_path(cache_dir, key)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"version": RECORD_VERSION, **record}, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("Could not write the query record %s: %s", path, exc)
        tmp.unlink(missing_ok=True)


def read_record(cache_dir: Path, key: str) -> dict[str, Any] | None:
    path = record_path(cache_dir, key)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("version") != RECORD_VERSION:
        return None
    ir = Path(str(record.get("ir", "")))
    if not (ir.is_file() and ir.with_suffix(".bin").is_file()):
        return None
    return record


def load_tokenizer(model_dir: str, record: dict[str, Any]) -> Any:
    """The checkpoint's fast tokenizer (``tokenizers``), padded and truncated as the
    embedder's transformers tokenizer call does (``padding=True, truncation=True``)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(model_dir) / TOKENIZER_FILE))
    pad = record["padding"]
    tok.enable_truncation(max_length=int(record["max_text_tokens"]), direction=pad["truncation_side"])
    tok.enable_padding(
        direction=pad["side"], pad_id=int(pad["id"]), pad_type_id=int(pad["type_id"]), pad_token=pad["token"]
    )
    return tok


class OpenVinoQueryEmbedder(Embedder):
    """Texts on the recorded OpenVINO text tower; everything else on the full embedder, which
    ``load_full`` loads on first use."""

    def __init__(self, record: dict[str, Any], load_full: Callable[[], Embedder]) -> None:
        self.record = record
        self._load_full = load_full
        self._full: Embedder | None = None
        self._lock = threading.Lock()
        self._local = threading.local()
        for name in ("model_id", "fingerprint", "family", "dim", "vectors_per_image", "batch_size", "precision"):
            setattr(self, name, record[name])
        self.has_itm = bool(record["has_itm"])
        self.multilingual = bool(record["multilingual"])
        self.text_preprocess = record["text_preprocess"]
        self.device = "cpu"
        self.prepare_text = TextPreprocessor(record["text_preprocess"], record["text_max_words"])
        self.tokenizer = load_tokenizer(record["model_id"], record)
        ov = import_openvino()
        config = compile_config(record["hint"], int(record["threads"]), Path(record["cache_dir"]))
        self._compiled = ov.Core().compile_model(record["ir"], "CPU", config)

    # -- texts: the recorded tower ----------------------------------------------------------
    def _request(self) -> Any:
        req = getattr(self._local, "request", None)
        if req is None:
            req = self._local.request = self._compiled.create_infer_request()
        return req

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for i in range(0, len(texts), self.batch_size):
            encs = self.tokenizer.encode_batch([self.prepare_text(t) for t in texts[i : i + self.batch_size]])
            ids = np.ascontiguousarray([e.ids for e in encs], dtype=np.int64)
            mask = np.ascontiguousarray([e.attention_mask for e in encs], dtype=np.int64)
            res = self._request().infer([ids, mask])
            out.append(np.asarray(res[0], dtype=np.float32))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def stage_dtypes(self) -> dict[str, str]:
        return dict(self.record["stage_dtypes"])

    def stage_runtimes(self) -> dict[str, str]:
        return dict(self.record["stage_runtimes"])

    @property
    def input_size(self) -> int | None:
        size = self.record.get("input_size")
        return int(size) if size is not None else None

    # -- everything else: the full embedder ---------------------------------------------------
    def full(self) -> Embedder:
        with self._lock:
            if self._full is None:
                log.info("loading the full model %s (the query record covers text queries only)", self.model_id)
                self._full = self._load_full()
            return self._full

    def preprocess(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.full().preprocess(images)

    def preprocessor(self) -> Callable[[Sequence[Image.Image]], np.ndarray]:
        return self.full().preprocessor()

    def embed_pixels(self, pixel_values: np.ndarray) -> np.ndarray:
        return self.full().embed_pixels(pixel_values)

    def vision_tokens(self, pixel_values: np.ndarray) -> Any:
        return self.full().vision_tokens(pixel_values)

    def embed_tokens(self, tokens: Any) -> np.ndarray:
        return self.full().embed_tokens(tokens)

    def embed_pixels_with_tokens(self, pixel_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.full().embed_pixels_with_tokens(pixel_values)

    def __getattr__(self, name: str) -> Any:  # the torch model, processor, plan, tokenize, ...
        if name.startswith("__") or name in ("record", "_full", "_load_full", "_lock", "_local"):
            raise AttributeError(name)
        return getattr(self.full(), name)


def load_options(options: EmbedderOptions) -> dict[str, Any]:
    return asdict(options)


def open_query_embedder(
    source: str, options: EmbedderOptions, load_full: Callable[[], Embedder]
) -> OpenVinoQueryEmbedder | None:
    """The text-query embedder of ``source`` from its record, or None (no record: load the
    full embedder). ``source`` must be a local model folder; hub ids always load fully."""
    if options.runtime_cache_dir is None or not Path(source).expanduser().is_dir():
        return None
    model_dir = str(Path(source).expanduser().resolve())
    key = record_key(model_dir, load_options(options))
    if key is None:
        return None
    record = read_record(Path(options.runtime_cache_dir), key)
    if record is None or record.get("model_id") != model_dir:
        return None
    try:
        return OpenVinoQueryEmbedder(record, load_full)
    except Exception as exc:  # noqa: BLE001 - a record that does not open means: load the model
        log.warning("query record for %s did not open (%s); loading the full model", model_dir, exc)
        return None
