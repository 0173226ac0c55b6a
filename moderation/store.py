"""Moderation results in the catalog: idempotent writes, queries, and each record's effective
decision (used by search to exclude ``block``, and to filter other decisions).

A record's effective decision is, for each policy, its latest result, and across policies the
most severe of those, unless a person decided: the latest manual decision (``save_manual``,
stored under the reserved policy name ``_manual``, which no policy file can take) wins over
every automatic one.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import func, select

from moderation.policy import SEVERITY, Policy
from storage.catalog import Catalog, ModerationRow, utcnow

if TYPE_CHECKING:  # moderation.checks loads the model stack (torch); search only reads decisions
    from moderation.checks import CheckResult

DECISIONS = tuple(SEVERITY)
MANUAL = "_manual"  # policy name of manual decisions (policy names cannot start with "_")


def save_results(
    catalog: Catalog,
    collection: str,
    policy: Policy,
    models: dict[str, str | None],
    results: Iterable[tuple[int, CheckResult]],
) -> int:
    """Insert results; a (record, policy name, version) already stored is left as it is.
    Returns the number of rows written."""
    rows = [
        {
            "collection": collection,
            "record_id": int(rid),
            "policy_name": policy.name,
            "policy_version": policy.version,
            "itc_model": models["itc"] or "",  # "" = no BLIP check in the policy
            "itm_model": models["itm"] or "",  # "" = ITC-only (a model without an ITM head)
            "decision": res.decision,
            # category scores, then one entry per record-level kind: {"check": kind, **its evidence}
            "scores": [c.to_dict() for c in res.categories] + [{"check": k, **v} for k, v in res.checks.items()],
            "triggers": res.triggers,
            "created_at": utcnow(),
        }
        for rid, res in results
    ]
    if not rows:
        return 0
    dialect = catalog.engine.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    stmt = insert(ModerationRow).values(rows).on_conflict_do_nothing().returning(ModerationRow.id)
    with catalog.session() as s:
        return len(s.execute(stmt).all())  # rows actually inserted (rowcount is -1 on some drivers)


def done_ids(catalog: Catalog, collection: str, policy: Policy) -> set[int]:
    with catalog.session() as s:
        q = select(ModerationRow.record_id).where(
            ModerationRow.collection == collection,
            ModerationRow.policy_name == policy.name,
            ModerationRow.policy_version == policy.version,
        )
        return set(s.scalars(q))


def query_results(
    catalog: Catalog,
    collection: str | None = None,
    decision: str | None = None,
    policy: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    with catalog.session() as s:
        q = select(ModerationRow).order_by(ModerationRow.id).limit(limit).offset(offset)
        if collection:
            q = q.where(ModerationRow.collection == collection)
        if decision:
            q = q.where(ModerationRow.decision == decision)
        if policy:
            q = q.where(ModerationRow.policy_name == policy)
        return [_row_dict(r) for r in s.scalars(q)]


def _row_dict(r: ModerationRow) -> dict[str, Any]:
    return {
        "collection": r.collection,
        "id": r.record_id,
        "policy": r.policy_name,
        "policy_version": r.policy_version,
        "itc_model": r.itc_model,
        "itm_model": r.itm_model,
        "decision": r.decision,
        "scores": r.scores,
        "triggers": r.triggers,
        "created_at": r.created_at.isoformat(),
    }


def _combine(latest: dict[str, str]) -> str:
    """A record's effective decision from its latest decision per policy."""
    if MANUAL in latest:
        return latest[MANUAL]
    return max(latest.values(), key=SEVERITY.__getitem__)


def effective_decisions(catalog: Catalog, collection: str) -> dict[int, str]:
    latest: dict[tuple[int, str], tuple[int, str]] = {}
    with catalog.session() as s:
        q = select(ModerationRow.id, ModerationRow.record_id, ModerationRow.policy_name, ModerationRow.decision).where(
            ModerationRow.collection == collection
        )
        for row_id, rid, pol, dec in s.execute(q):
            if (rid, pol) not in latest or latest[(rid, pol)][0] < row_id:
                latest[(rid, pol)] = (row_id, dec)
    per_record: dict[int, dict[str, str]] = {}
    for (rid, pol), (_, dec) in latest.items():
        per_record.setdefault(rid, {})[pol] = dec
    return {rid: _combine(pols) for rid, pols in per_record.items()}


def save_manual(catalog: Catalog, collection: str, rid: int, decision: str, note: str = "", by: str = "") -> None:
    """Record a person's decision on a record (``allow`` or ``block``); it overrides every
    automatic result, and a later manual decision overrides it."""
    if decision not in ("allow", "block"):
        raise ValueError(f"manual decisions are allow or block, not {decision!r}")
    with catalog.session() as s:
        s.add(
            ModerationRow(
                collection=collection,
                record_id=int(rid),
                policy_name=MANUAL,
                policy_version=uuid.uuid4().hex,  # every manual decision is its own row
                itc_model="",
                itm_model="",
                decision=decision,
                scores=[],
                triggers=[{"check": "manual", "action": decision, "note": note, "by": by}],
                created_at=utcnow(),
            )
        )


def _latest_rows(
    catalog: Catalog, collection: str, rids: Iterable[int] | None = None
) -> dict[int, list[ModerationRow]]:
    """Each record's latest row per policy (manual decisions included)."""
    latest: dict[tuple[int, str], ModerationRow] = {}
    with catalog.session() as s:
        q = select(ModerationRow).where(ModerationRow.collection == collection)
        if rids is not None:
            q = q.where(ModerationRow.record_id.in_([int(r) for r in rids]))
        for row in s.scalars(q):
            key = (row.record_id, row.policy_name)
            if key not in latest or latest[key].id < row.id:
                latest[key] = row
    out: dict[int, list[ModerationRow]] = {}
    for (rid, _), row in sorted(latest.items(), key=lambda kv: kv[1].id):
        out.setdefault(rid, []).append(row)
    return out


def record_decision(catalog: Catalog, collection: str, rid: int) -> dict[str, Any]:
    """One record's effective decision, the manual decision if any, and the latest result of
    each policy (with its triggers: category, prompt, score)."""
    rows = _latest_rows(catalog, collection, [rid]).get(int(rid), [])
    manual = next((r for r in rows if r.policy_name == MANUAL), None)
    return {
        "collection": collection,
        "id": int(rid),
        "decision": _combine({r.policy_name: r.decision for r in rows}) if rows else None,
        "manual": _row_dict(manual) if manual else None,
        "results": [_row_dict(r) for r in rows if r.policy_name != MANUAL],
    }


def review_queue(
    catalog: Catalog, collection: str, decisions: Iterable[str] = ("flag", "review"), limit: int = 100, offset: int = 0
) -> tuple[int, list[dict[str, Any]]]:
    """Records whose effective decision is in ``decisions`` (oldest first): (total, one page),
    each with the policy triggers that led there."""
    want = set(decisions)
    items: list[dict[str, Any]] = []
    for rid, rows in _latest_rows(catalog, collection).items():
        decision = _combine({r.policy_name: r.decision for r in rows})
        if decision not in want:
            continue
        triggers = [
            {"policy": r.policy_name, "policy_version": r.policy_version, **t}
            for r in rows
            if r.policy_name != MANUAL
            for t in (r.triggers or [])
            if t.get("action") == decision
        ]
        items.append({"collection": collection, "id": rid, "decision": decision, "triggers": triggers})
    items.sort(key=lambda x: int(x["id"]))
    return len(items), items[offset : offset + limit]


class DecisionCache:
    """Record ids by effective decision for one collection, re-read only when results change."""

    def __init__(self, catalog: Catalog, collection: str) -> None:
        self.catalog = catalog
        self.collection = collection
        self._stamp: int | None = None
        self._by_decision: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def ids(self, decisions: Iterable[str]) -> np.ndarray:
        with self.catalog.session() as s:  # results are only ever inserted: the newest id is a version
            top = s.scalar(select(func.max(ModerationRow.id)).where(ModerationRow.collection == self.collection))
        stamp = int(top or 0)
        with self._lock:
            if stamp != self._stamp:
                eff = effective_decisions(self.catalog, self.collection)
                self._by_decision = {
                    d: np.array(sorted(r for r, x in eff.items() if x == d), dtype=np.int64) for d in DECISIONS
                }
                self._stamp = stamp
            parts = [self._by_decision.get(d, np.zeros(0, np.int64)) for d in set(decisions)]
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
