"""The SQL catalog: collections, jobs, API keys and moderation results.

SQLite in the data directory by default; any SQLAlchemy URL (e.g. PostgreSQL) through
``BLIPSEARCH_DATABASE_URL``. Records themselves live in Parquet, never here.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, DateTime, Index, Integer, String, Text, UniqueConstraint, create_engine, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from blipsearch.errors import ConfigError, MissingDependencyError, NotFoundError
from storage import faults, owners


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class CollectionRow(Base):
    __tablename__ = "collections"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default="images")
    model_id: Mapped[str] = mapped_column(Text)
    model_fingerprint: Mapped[str] = mapped_column(String(64))
    dim: Mapped[int] = mapped_column(Integer)
    vectors_per_item: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class JobRow(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: uuid.uuid4().hex)
    kind: Mapped[str] = mapped_column(String(32))
    collection: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    model_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    failures: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    timings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class JobFailureRow(Base):
    """One failure of a job's latest run, in the order it happened (storage/jobs.py): stored as
    the job goes, read back in pages."""

    __tablename__ = "job_failures"
    __table_args__ = (UniqueConstraint("job_id", "seq"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(36))
    seq: Mapped[int] = mapped_column(Integer)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class JobOwnerRow(Base):
    """The process that runs (or queued) a job: dead owners' jobs become ``interrupted``
    (storage/owners.py)."""

    __tablename__ = "job_owners"
    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    pid: Mapped[int] = mapped_column(Integer)
    host: Mapped[str] = mapped_column(String(255))
    started: Mapped[str] = mapped_column(String(128), default="")


ACTIVE_STATES = ("pending", "running", "cancelling")


class ApiKeyRow(Base):
    """An API key: only its sha256 is stored; the key itself is shown once at creation."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    scope: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ModerationRow(Base):
    """One moderation result: a record checked under one version of one policy."""

    __tablename__ = "moderation_results"
    __table_args__ = (
        UniqueConstraint("collection", "record_id", "policy_name", "policy_version"),
        Index("ix_moderation_collection_id", "collection", "id"),  # newest result per collection: O(log n)
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    collection: Mapped[str] = mapped_column(String(64))
    record_id: Mapped[int] = mapped_column(Integer)
    policy_name: Mapped[str] = mapped_column(String(64))
    policy_version: Mapped[str] = mapped_column(String(32))
    itc_model: Mapped[str] = mapped_column(Text)
    itm_model: Mapped[str] = mapped_column(Text)
    decision: Mapped[str] = mapped_column(String(16), index=True)
    scores: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    triggers: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


def make_engine(url: str) -> Engine:
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

            @event.listens_for(engine, "connect")
            def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.close()

            return engine
        return create_engine(url, pool_pre_ping=True)
    except ModuleNotFoundError as exc:
        raise MissingDependencyError(
            f"The catalog URL {url.split('://')[0]}://…", exc.name or "driver", "postgres"
        ) from exc
    except (SQLAlchemyError, ValueError) as exc:
        raise ConfigError(f"Invalid catalog URL for BLIPSEARCH_DATABASE_URL: {exc}") from exc


class Catalog:
    def __init__(self, url: str) -> None:
        if url.startswith("sqlite:///"):
            from pathlib import Path

            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(url)
        for attempt in range(3):  # concurrent first opens race on CREATE TABLE; the loser retries
            try:
                Base.metadata.create_all(self.engine)
                break
            except SQLAlchemyError as exc:
                if attempt == 2:
                    raise ConfigError(f"Cannot open the catalog database: {exc.__class__.__name__}: {exc}") from exc
                time.sleep(0.05 * (attempt + 1))
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._session.begin() as s:
            yield s
        faults.step("catalog commit")

    # -- collections --------------------------------------------------------------------
    def upsert_collection(self, name: str, kind: str, model: dict[str, Any]) -> None:
        try:
            self._insert_collection(name, kind, model)
        except IntegrityError:
            pass  # a concurrent writer registered it first

    def _insert_collection(self, name: str, kind: str, model: dict[str, Any]) -> None:
        with self.session() as s:
            row = s.get(CollectionRow, name)
            if row is None:
                s.add(
                    CollectionRow(
                        name=name,
                        kind=kind,
                        model_id=model["model_id"],
                        model_fingerprint=model["fingerprint"],
                        dim=model["dim"],
                        vectors_per_item=model["vectors_per_image"],
                    )
                )

    def list_collections(self) -> list[CollectionRow]:
        with self.session() as s:
            return list(s.scalars(select(CollectionRow).order_by(CollectionRow.name)))

    def delete_collection(self, name: str) -> None:
        with self.session() as s:
            row = s.get(CollectionRow, name)
            if row is not None:
                s.delete(row)

    # -- jobs -----------------------------------------------------------------------------
    def create_job(
        self, kind: str, collection: str, model_id: str | None, settings: dict[str, Any], state: str = "running"
    ) -> str:
        with self.session() as s:
            job = JobRow(
                kind=kind,
                collection=collection,
                model_id=model_id,
                settings=settings,
                state=state,
                started_at=utcnow() if state == "running" else None,
                counts={},
                failures=[],
                timings={},
            )
            s.add(job)
            s.flush()
            if state in ACTIVE_STATES:
                self._claim(s, job.id)
            return job.id

    @staticmethod
    def _claim(s: Session, job_id: str) -> None:
        """Record this process as the owner of ``job_id``."""
        me = owners.current()
        row = s.get(JobOwnerRow, job_id)
        if row is None:
            s.add(JobOwnerRow(job_id=job_id, pid=me.pid, host=me.host, started=me.started))
        else:
            row.pid, row.host, row.started = me.pid, me.host, me.started

    def _reap(self, jobs: list[JobRow]) -> list[JobRow]:
        """Mark active jobs whose owner process on this host is gone ``interrupted``; returns
        ``jobs`` as they are now."""
        active = [j.id for j in jobs if j.state in ACTIVE_STATES]
        if not active:
            return jobs
        with self.session() as s:
            rows = list(s.scalars(select(JobOwnerRow).where(JobOwnerRow.job_id.in_(active))))
        dead = [r for r in rows if not owners.is_alive(owners.ProcessId(r.pid, r.host, r.started))]
        changed = {
            r.job_id
            for r in dead
            if self.transition(
                r.job_id,
                ACTIVE_STATES,
                "interrupted",
                finished_at=utcnow(),
                error=f"the process that ran this job (pid {r.pid}) ended without finishing it; "
                "resume it with: blipsearch jobs resume ID",
            )
        }
        if not changed:
            return jobs
        with self.session() as s:
            return [(s.get(JobRow, j.id) or j) if j.id in changed else j for j in jobs]

    def update_job(self, job_id: str, **fields: Any) -> None:
        with self.session() as s:
            job = s.get(JobRow, job_id)
            if job is None:
                raise NotFoundError(f"No job {job_id!r}")
            for k, v in fields.items():
                setattr(job, k, v)
            if fields.get("state") == "running":
                self._claim(s, job_id)

    def transition(self, job_id: str, from_states: tuple[str, ...], to_state: str, **fields: Any) -> bool:
        """Set a job's state only if it is in ``from_states`` (one atomic UPDATE). True if done."""
        from sqlalchemy import update

        with self.session() as s:
            res = s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state.in_(from_states))
                .values(state=to_state, **fields)
            )
            done = bool(getattr(res, "rowcount", 0))
            if done and to_state == "running":
                self._claim(s, job_id)
            return done

    def get_job(self, job_id: str) -> JobRow:
        with self.session() as s:
            job = s.get(JobRow, job_id)
            if job is None:
                raise NotFoundError(f"No job {job_id!r}. List jobs with: blipsearch jobs list")
        return self._reap([job])[0]

    def list_jobs(self, collection: str | None = None, limit: int = 50) -> list[JobRow]:
        with self.session() as s:
            q = select(JobRow).order_by(JobRow.created_at.desc()).limit(limit)
            if collection:
                q = q.where(JobRow.collection == collection)
            jobs = list(s.scalars(q))
        return self._reap(jobs)


@functools.lru_cache(maxsize=8)
def open_catalog(url: str) -> Catalog:
    """One Catalog (engine and pool) per URL per process."""
    return Catalog(url)
