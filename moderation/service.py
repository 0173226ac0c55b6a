"""Assemble a Moderator: policy, ITC model, ITM scorer, and the blocklist collection's engine."""

from __future__ import annotations

from pathlib import Path

from blipsearch.config import Settings
from blipsearch.errors import InvalidInputError, NotFoundError
from models.base import Embedder
from moderation.checks import Moderator
from moderation.policy import Policy, load_policy
from search.service import load_model


def policy_path(settings: Settings, name: str) -> Path:
    """A named policy in the policy folder (``BLIPSEARCH_POLICY_DIR``): NAME.yaml/.yml/.json."""
    from storage.collection import validate_name

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
) -> Moderator:
    from models import load_itm

    if embedder is None:
        embedder = load_model(settings, model or settings.model)
    scorer = load_itm(embedder, first_token=settings.itm_first_token, batch_size=settings.itm_batch_size)
    blocklist = None
    if policy.blocklist is not None:
        from search.service import open_engine

        blocklist = open_engine(settings, policy.blocklist.collection, embedder=embedder)
    return Moderator(policy, embedder, scorer, blocklist=blocklist, shared_kv=shared_kv)


def moderator_from_file(settings: Settings, path: Path | str, model: str | None = None) -> Moderator:
    return build_moderator(settings, load_policy(path), model=model)
