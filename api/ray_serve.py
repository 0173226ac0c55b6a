"""Sharded serving on Ray Serve: ``blipsearch serve --runner ray --shards N [--replicas R]``.

The application has two kinds of deployment:

* ``shard-0`` … ``shard-{N-1}``: each runs a ``search.shard_server.ShardServer``, the exact
  index over its part of every collection's records (the Parquet shards dealt round-robin,
  ``search.sharded.split``), read from the data directory, which every node must see at the
  same path (a shared filesystem). ``R`` replicas each; Ray Serve replaces a replica that dies.
* ``router``: the same HTTP API as ``blipsearch serve`` (api/app.py), whose collections'
  indexes are ``search.sharded.ShardedIndex`` objects fanning each query out to the shard
  deployments and merging their top-k exactly. Everything above the index (query encoding,
  filters, ``min_score``, moderation exclusion, ITM re-ranking, records) runs as on one node.

A shard that does not answer within ``BLIPSEARCH_SHARD_TIMEOUT_S`` fails the query with 503, or,
with ``BLIPSEARCH_SHARD_PARTIAL=true``, leaves it out and flags the answer (``partial``,
``missing_shards``; ``X-Missing-Shards`` on clip-retrieval's /knn-service).

Ray is an optional extra (``pip install -e .[serve]``), imported only here, lazily.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from blipsearch.config import Settings
from blipsearch.errors import ConfigError, InvalidInputError
from search.shard_server import ShardServer
from search.sharded import ShardedIndex, split
from storage.collection import Collection

if TYPE_CHECKING:  # the shard replicas import this module: keep torch and the models out of them
    from search.engine import IndexLoader

log = logging.getLogger(__name__)
APP_NAME = "blipsearch"
MAX_SHARDS = 256
# Environment the replicas need besides the settings (which travel as an argument).
PASSED_ENV_PREFIXES = ("HF_", "TRANSFORMERS_", "BLIPSEARCH_", "OMP_", "MKL_")


def import_serve() -> Any:
    try:
        from ray import serve
    except ImportError as exc:
        raise ConfigError(
            "Sharded serving needs Ray Serve: pip install -e '.[serve]' (or pip install 'ray[serve]')."
        ) from exc
    return serve


class ShardDeployment:
    """One index shard (a Ray Serve deployment's replica)."""

    def __init__(self, data_dir: str, shard_no: int, n_shards: int) -> None:
        self.server = ShardServer(Path(data_dir), shard_no, n_shards)

    async def search(
        self,
        collection: str,
        version: str,
        shards: list[dict[str, Any]],
        queries: np.ndarray,
        k: int,
        allowed: np.ndarray | None,
        excluded: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        # FAISS releases the GIL: concurrent queries overlap in threads, off the replica's event loop.
        return await asyncio.to_thread(self.server.search, collection, version, shards, queries, k, allowed, excluded)

    def stats(self) -> dict[str, Any]:
        """What this replica holds, and its memory (MB; Linux): file-backed pages are the mapped
        vectors (page cache the kernel can drop), anonymous ones the process's own heap."""
        out = self.server.stats()
        out["pid"] = os.getpid()
        try:
            status = Path("/proc/self/status").read_text().splitlines()
        except OSError:
            return out
        for line in status:
            key = line.split(":")[0]
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[f"{key}_mb"] = int(line.split()[1]) / 1024
        return out


class RayShardClient:
    """``search.sharded.ShardClient`` over a shard deployment's handle, for one collection as
    the router's manifest has it."""

    def __init__(
        self, handle: Any, collection: str, version: str, shards: list[dict[str, Any]], timeout_s: float
    ) -> None:
        self.handle = handle
        self.collection = collection
        self.version = version
        self.shards = shards
        self.timeout_s = timeout_s

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None, excluded: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        from ray.exceptions import ActorDiedError, ActorUnavailableError

        deadline = time.monotonic() + self.timeout_s
        while True:
            call = self.handle.search.remote(self.collection, self.version, self.shards, queries, k, allowed, excluded)
            try:
                return call.result(timeout_s=max(0.01, deadline - time.monotonic()))
            except (ActorDiedError, ActorUnavailableError):
                # The replica went away under this query: Ray Serve routes the retry to a live
                # (or replacement) replica; the query's deadline still holds.
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)
            except TimeoutError:
                call.cancel()
                raise


def sharded_loader(settings: Settings, handles: list[Any]) -> IndexLoader:
    """collection -> a ``ShardedIndex`` over ``handles`` (one per shard), for the router's engines."""
    pool = ThreadPoolExecutor(max_workers=max(8, 8 * len(handles)), thread_name_prefix="shard-fanout")

    def load(coll: Collection) -> ShardedIndex:
        m = coll.manifest
        parts = split(m.shards, len(handles))
        clients = [
            RayShardClient(
                h,
                coll.name,
                coll.root.name,
                [s.model_dump(mode="json", include={"file", "rows", "min_id", "max_id", "deleted"}) for s in part],
                settings.shard_timeout_s,
            )
            for h, part in zip(handles, parts, strict=True)
        ]
        return ShardedIndex(
            clients,
            m.dim,
            m.vectors_per_item,
            ntotal=m.count,
            lookup=coll.embeddings_of,
            timeout_s=settings.shard_timeout_s,
            partial=settings.shard_partial,
            pool=pool,
        )

    return load


class Router:
    """The HTTP API over the shard deployments (the application's ingress)."""

    def __init__(self, settings: Settings, *shards: Any) -> None:
        self.settings = settings
        self.shards = list(shards)

    def __serve_build_asgi_app__(self) -> Any:
        from api.app import create_app

        return create_app(self.settings, index_loader=sharded_loader(self.settings, self.shards))


def build_app(settings: Settings, shards: int, replicas: int, router_replicas: int = 1) -> Any:
    """The Ray Serve application: ``shards`` shard deployments of ``replicas`` each, and the router."""
    if not 1 <= shards <= MAX_SHARDS:
        raise InvalidInputError(f"--shards must be between 1 and {MAX_SHARDS}, got {shards}.")
    if replicas < 1 or router_replicas < 1:
        raise InvalidInputError("--replicas and --router-replicas must be at least 1.")
    serve = import_serve()
    shard_cls = serve.deployment(ShardDeployment)
    bound = [
        shard_cls.options(
            name=f"shard-{i}",
            num_replicas=replicas,
            ray_actor_options={"num_cpus": settings.ray_shard_cpus},
            max_ongoing_requests=64,
        ).bind(str(settings.data_dir), i, shards)
        for i in range(shards)
    ]
    router = serve.deployment(serve.ingress()(Router)).options(
        name="router",
        num_replicas=router_replicas,
        ray_actor_options={"num_cpus": settings.ray_router_cpus},
        max_ongoing_requests=256,
    )
    return router.bind(settings, *bound)


def check_capacity(settings: Settings, shards: int, replicas: int, router_replicas: int, cpus: float) -> None:
    """Refuse (ConfigError, exit 2) a deployment whose CPU reservations exceed what the cluster
    has: Ray would wait for ever to place the replicas that do not fit, without a word."""
    shard_cpus = shards * replicas * settings.ray_shard_cpus
    router_cpus = router_replicas * settings.ray_router_cpus
    if shard_cpus + router_cpus > cpus + 1e-9:
        raise ConfigError(
            f"The deployment reserves {shard_cpus + router_cpus:g} CPUs ({shards} shard(s) x {replicas} replica(s) x "
            f"BLIPSEARCH_RAY_SHARD_CPUS={settings.ray_shard_cpus:g} + {router_replicas} router(s) x "
            f"BLIPSEARCH_RAY_ROUTER_CPUS={settings.ray_router_cpus:g}) but the Ray cluster has {cpus:g}; Ray would "
            "wait for ever to place it. Lower those settings (fractions such as 0.5 work), or use fewer "
            "--shards/--replicas."
        )


def check_reachable(address: str, timeout_s: float = 3.0) -> None:
    """Fail fast, with a clear message, when nothing listens at a HOST:PORT (or ray://HOST:PORT)
    address (Ray itself retries for minutes). ``auto`` and other forms are left to Ray."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(
            f"No Ray cluster answers at {address} ({exc.strerror or exc}). Start one there with "
            "'ray start --head', or leave --address out to run on a new local Ray."
        ) from exc


def passed_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(PASSED_ENV_PREFIXES)}


def run(
    settings: Settings,
    *,
    shards: int,
    replicas: int,
    router_replicas: int = 1,
    host: str = "127.0.0.1",
    port: int = 8000,
    address: str | None = None,
    ready: threading.Event | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Deploy on Ray (a new local one unless ``address`` names a running cluster) and serve until
    interrupted (or ``stop`` is set); then the application is deleted, and a Ray this call
    started is shut down. On a cluster, every node needs blipsearch installed and the data
    directory at the same path."""
    serve = import_serve()
    import ray

    app = build_app(settings, shards, replicas, router_replicas)
    connected = not ray.is_initialized()
    own_cluster = connected and address is None  # a Ray this call starts, and stops at the end
    if connected:
        if address is not None:
            check_reachable(address)
        try:
            ray.init(
                address=address,
                runtime_env={"env_vars": passed_env()},
                include_dashboard=False,
                log_to_driver=False,
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"Cannot start or join Ray (--address {address}): {exc}") from exc
    try:
        check_capacity(settings, shards, replicas, router_replicas, float(ray.cluster_resources().get("CPU", 0)))
    except ConfigError:
        if connected:
            ray.shutdown()
        raise
    stop = stop or threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        if threading.current_thread() is threading.main_thread():
            signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(app, name=APP_NAME, route_prefix="/")
        print(
            f"blipsearch on Ray Serve: http://{host}:{port} ({shards} shard(s) x {replicas} replica(s), "
            f"{router_replicas} router replica(s)); Ctrl-C stops it.",
            flush=True,
        )
        if ready is not None:
            ready.set()
        while not stop.wait(0.5):
            pass
    finally:
        try:
            serve.delete(APP_NAME)
        finally:
            if own_cluster:
                serve.shutdown()
            if connected:
                ray.shutdown()
