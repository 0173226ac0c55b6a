"""``from_pretrained`` from a hub id or a local directory, with one actionable error."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from blipsearch.errors import ModelLoadError

log = logging.getLogger(__name__)

# How long the Hub may take to accept a connection before a hub id that is not cached is refused.
HUB_PROBE_TIMEOUT_S = 1.0

# What the model of each role is, and the flag / variable / field that chooses it (named by load errors).
Hint = tuple[str, str]  # (what the model is, how to choose a local directory instead)
MODEL_HINT: Hint = ("model", "pass `--model DIR` or set BLIPSEARCH_MODEL=DIR")
CAPTION_HINT: Hint = ("caption model", "pass `--caption-model DIR` or set BLIPSEARCH_CAPTION_MODEL=DIR")
RERANK_HINT: Hint = ("ITM model", "pass `--rerank-model DIR` (API: rerank_model)")
VQA_HINT: Hint = ("VQA model", "set the policy's `vqa_model: DIR`")
_HINT: ContextVar[Hint] = ContextVar("model_hint", default=MODEL_HINT)


@contextlib.contextmanager
def naming(hint: Hint) -> Iterator[None]:
    """Load errors raised inside name ``hint``'s flag and variable (a captioner's, a re-ranker's)."""
    token = _HINT.set(hint)
    try:
        yield
    finally:
        _HINT.reset(token)


def _looks_like_path(source: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything else is meant as a filesystem path."""
    return source.startswith((".", "/", "~")) or source.count("/") > 1 or "\\" in source


def resolve_source(source: str) -> str:
    """A local directory (validated) or a hub id, as given."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelLoadError(
                f"Model path {str(path)!r} is not a model directory (expected a folder with config.json, "
                "as written by save_pretrained or `huggingface-cli download --local-dir`)."
            )
        return str(path.resolve())
    if _looks_like_path(source):
        raise ModelLoadError(f"Model directory {str(path)!r} does not exist. {how_to_fix(source)}")
    return source


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _hub_offline() -> bool:
    """Whether the Hub client runs offline (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE): the environment
    now, or as huggingface_hub read it at import."""
    if _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE")):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - installed with transformers
        return False
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def _hub_endpoint() -> str:
    env = os.environ.get("HF_ENDPOINT")
    if env:
        return env.rstrip("/")
    from huggingface_hub import constants

    return str(constants.ENDPOINT).rstrip("/")


_PROBED: dict[str, tuple[float, bool]] = {}  # endpoint -> (when, reachable): one probe a minute at most


def _reachable(endpoint: str, timeout_s: float) -> bool:
    """Whether a TCP connection to ``endpoint`` (or the proxy that reaches it) opens within
    ``timeout_s``; remembered for a minute, so the config, weights and processor of one load probe once."""
    seen = _PROBED.get(endpoint)
    if seen is not None and time.monotonic() - seen[0] < 60:
        return seen[1]
    ok = _probe(endpoint, timeout_s)
    _PROBED[endpoint] = (time.monotonic(), ok)
    return ok


def _probe(endpoint: str, timeout_s: float) -> bool:
    """Name resolution runs in the same bounded thread as the connect: without a network it can hang."""
    url = urllib.parse.urlsplit(endpoint)
    if url.hostname is None:
        return False
    target = f"{url.scheme}://{url.netloc}"
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(url.hostname):
        p = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = p.hostname or "", p.port or 80
    else:
        host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    ok = threading.Event()

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                ok.set()
        except OSError:
            pass

    worker = threading.Thread(target=probe, name=f"hub-probe {target}", daemon=True)
    worker.start()
    worker.join(timeout_s + 0.1)
    return ok.is_set()


def _cached(repo_id: str) -> bool:
    """Whether the Hub cache holds ``repo_id``'s config.json (then it loads without the network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - a malformed id or cache: not cached
        return False
    return isinstance(found, str)


def check_hub(source: str) -> bool:
    """Before any download: a hub id that is not cached needs the Hub, so refuse it at once when
    the client is offline or the endpoint does not answer within ``HUB_PROBE_TIMEOUT_S``
    (instead of retrying for half a minute). Returns whether to load from the cache only."""
    if Path(source).is_dir():
        return False
    cached = _cached(source)
    if _hub_offline():
        if not cached:
            raise ModelLoadError(
                f"Could not load {_what_model()} {source!r}: HF_HUB_OFFLINE is set and it is not in the local "
                f"Hugging Face cache. {how_to_fix(source)}"
            )
        return True
    endpoint = _hub_endpoint()
    if _reachable(endpoint, HUB_PROBE_TIMEOUT_S):
        return False
    if cached:
        return True  # the cached copy loads without asking the unreachable Hub
    raise ModelLoadError(
        f"Could not load {_what_model()} {source!r}: it is not a local directory, not in the local Hugging Face "
        f"cache, and the Hub ({endpoint}) could not be reached (no connection within {HUB_PROBE_TIMEOUT_S:g} s). "
        f"{how_to_fix(source)}"
    )


def _what_model() -> str:
    return _HINT.get()[0]


def how_to_fix(source: str) -> str:
    """What to do about a model that cannot load: name the flag and variable of the model's role."""
    where = _HINT.get()[1]
    return (
        f"Use a local model directory: {where}. To get one, download the checkpoint on a machine with "
        f"access to the Hugging Face Hub (`huggingface-cli download {source} --local-dir "
        f"./models/{source.split('/')[-1]}`) and copy that folder here."
    )


def from_pretrained(cls: Any, source: str, what: str, **kwargs: Any) -> Any:
    """Call ``cls.from_pretrained`` and turn every way it can fail into a ModelLoadError."""
    resolved = resolve_source(source)
    if check_hub(resolved):
        kwargs.setdefault("local_files_only", True)
    try:
        return cls.from_pretrained(resolved, **kwargs)
    except ModelLoadError:
        raise
    except Exception as exc:
        offline = _hub_offline()
        if Path(resolved).is_dir():
            reason = f"the directory {resolved!r} does not hold a loadable {what}: {exc}"
            raise ModelLoadError(f"Could not load {what} from {resolved!r}: {reason}") from exc
        where = (
            "HF_HUB_OFFLINE is set and it is not in the local cache"
            if offline
            else ("it is not in the local cache and the Hugging Face Hub could not be reached (or has no such repo)")
        )
        raise ModelLoadError(
            f"Could not load {what} {source!r}: {where} ({type(exc).__name__}). {how_to_fix(source)}"
        ) from exc
