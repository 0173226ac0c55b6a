"""``blipsearch mcp`` driven by the MCP SDK's own client: over stdio (the command started as a
subprocess, as an agent starts it) and over streamable HTTP; results compared with /v1/search/*."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from blipsearch.config import Settings
from service.indexing import index_paths
from tests.helpers import write_images
from tests.live_server import free_port, png_bytes

mcp = pytest.importorskip("mcp")
ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory, blip_embedder, tiny_models):
    from fastapi.testclient import TestClient

    from api.app import create_app
    from storage.api_keys import create_key
    from storage.catalog import open_catalog
    from storage.collection import Collection

    root = tmp_path_factory.mktemp("mcp")
    write_images(root / "imgs", 5)
    (root / "secret").mkdir()
    (root / "secret" / "s.png").write_bytes(png_bytes(1))
    settings = Settings(
        data_dir=root / "data",
        model=str(tiny_models["blip-itm"]),
        import_roots=[root / "imgs"],
        max_upload_bytes=200_000,
    )
    index_paths(settings, [root / "imgs"], "photos", embedder=blip_embedder, progress=False)
    index_paths(settings, [root / "imgs"], "hidden", embedder=blip_embedder, progress=False)
    coll = Collection.open(settings.data_dir, "photos")
    shard = coll.manifest.shards[0]
    coll.update_columns(shard.file, {i: {"caption": f"caption {i}"} for i in range(shard.min_id, shard.max_id + 1)})
    write_key, _ = create_key(open_catalog(settings.catalog_url()), "agent", "write")
    read_key, _ = create_key(open_catalog(settings.catalog_url()), "viewer", "read")
    env = {
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "BLIPSEARCH_DATA_DIR": str(settings.data_dir),
        "BLIPSEARCH_MODEL": settings.model,
        "BLIPSEARCH_PRECISION": "exact",
        "BLIPSEARCH_IMPORT_ROOTS": json.dumps([str(root / "imgs")]),
        "BLIPSEARCH_MAX_UPLOAD_BYTES": "200000",
    }
    with TestClient(create_app(settings)) as api:
        yield {"root": root, "env": env, "api": api, "write_key": write_key, "read_key": read_key}


def _params(world, *args: str):
    from mcp.client.stdio import StdioServerParameters

    return StdioServerParameters(
        command=sys.executable, args=["-m", "cli", "mcp", *args], env=world["env"], cwd=str(ROOT)
    )


def _ids(result) -> list[int]:
    assert not result.is_error, result.content
    return [h["id"] for h in result.structured_content["results"]]


def _api_ids(world, path: str, **kw) -> list[int]:
    r = world["api"].post(path, **kw)
    assert r.status_code == 200, r.text
    return [h["id"] for h in r.json()["results"]]


def _absurd_calls(world) -> list:
    """Tool calls an agent should never send, each with a word its error must name."""
    outside = str(world["root"] / "secret" / "s.png")
    calls = [
        ("search_images", {"query": "x", "collection": "photos", "k": 10**9}, "k"),
        ("search_images", {"query": "", "collection": "photos"}, "query"),
        ("search_images", {"query": "x" * 5000, "collection": "photos"}, "query"),
        ("search_images", {"query": "x", "collection": "../../etc"}, ""),
        ("search_images", {"query": "x", "collection": "hidden"}, "not served"),
        ("search_images", {"query": "x", "collection": "photos", "filters": {"bogus": 1}}, "bogus"),
        ("search_images", {"query": "x", "collection": "photos", "mode": "telepathy"}, "mode"),
        ("similar", {"collection": "photos", "id": -1}, "id"),
        ("similar", {"collection": "photos", "id": 99999}, "99999"),
        ("describe", {"collection": "photos", "id": "two"}, "id"),
        ("search_by_image", {"collection": "photos", "image_base64": "!!!not base64!!!"}, "base64"),
        (
            "search_by_image",
            {"collection": "photos", "image_base64": base64.b64encode(bytes(300_000)).decode()},
            "limit",
        ),
        ("search_by_image", {"collection": "photos", "image_base64": "http://example.com/x.png"}, "not fetched"),
        ("search_by_image", {"collection": "photos", "path": outside}, "outside the import roots"),
        ("search_by_image", {"collection": "photos", "path": "/etc/passwd"}, "outside the import roots"),
        ("search_by_image", {"collection": "photos"}, "exactly one"),
        ("add_image", {"collection": "photos", "image_base64": "x"}, ""),  # read-only: no such tool
    ]
    return calls


def test_stdio_tools_match_the_http_api_and_refuse_absurd_arguments(world):
    png = png_bytes(3)
    inside = sorted((world["root"] / "imgs").iterdir())[2]
    calls = _absurd_calls(world)

    async def session() -> dict:
        async with mcp.Client(_params(world, "--collection", "photos"), read_timeout_seconds=120) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            out = {"tools": tools}
            out["collections"] = (await client.call_tool("list_collections", {})).structured_content
            out["text"] = await client.call_tool(
                "search_images", {"query": "a red square", "collection": "photos", "k": 3}
            )
            out["hybrid"] = await client.call_tool(
                "search_images", {"query": "caption 2", "collection": "photos", "k": 3, "mode": "hybrid"}
            )
            b64 = base64.b64encode(png).decode()
            out["image"] = await client.call_tool(
                "search_by_image", {"collection": "photos", "image_base64": b64, "k": 3}
            )
            out["path"] = await client.call_tool(
                "search_by_image", {"collection": "photos", "path": str(inside), "k": 2}
            )
            out["rerank"] = await client.call_tool(
                "search_images", {"query": "a red square", "collection": "photos", "k": 3, "rerank": True}
            )
            out["similar"] = await client.call_tool("similar", {"collection": "photos", "id": 1, "k": 2})
            out["describe"] = await client.call_tool("describe", {"collection": "photos", "id": 2})
            out["thumb"] = await client.read_resource("blipsearch://photos/2/thumbnail")
            out["absurd"] = [await client.call_tool(name, args) for name, args, _ in calls]
            out["after"] = await client.call_tool("list_collections", {})  # the server is still fine
            return out

    out = asyncio.run(session())
    assert out["tools"] == {"search_images", "search_by_image", "similar", "describe", "list_collections"}
    assert [c["name"] for c in out["collections"]["collections"]] == ["photos"]  # --collection limits it
    assert _ids(out["text"]) == _api_ids(
        world, "/v1/search/text", json={"query": "a red square", "collection": "photos", "k": 3}
    )
    assert _ids(out["hybrid"]) == _api_ids(
        world, "/v1/search/text", json={"query": "caption 2", "collection": "photos", "k": 3, "mode": "hybrid"}
    )
    rerank = {"query": "a red square", "collection": "photos", "k": 3, "rerank": True}
    assert _ids(out["rerank"]) == _api_ids(world, "/v1/search/text", json=rerank)
    assert all(h["itm_score"] is not None for h in out["rerank"].structured_content["results"])
    form = {"collection": "photos", "k": "3"}
    want_image = _api_ids(world, "/v1/search/image", files={"file": ("q.png", png, "image/png")}, data=form)
    assert _ids(out["image"]) == want_image
    with_path = _api_ids(
        world, "/v1/search/image", files={"file": ("q", inside.read_bytes())}, data={"collection": "photos", "k": "2"}
    )
    assert _ids(out["path"]) == with_path
    assert _ids(out["similar"]) == _api_ids(world, "/v1/search/similar", json={"collection": "photos", "id": 1, "k": 2})
    described = out["describe"].structured_content
    assert described["id"] == 2 and described["caption"] == "caption 2"
    assert described["thumbnail"] == "blipsearch://photos/2/thumbnail"
    (content,) = out["thumb"].contents
    thumb = Image.open(io.BytesIO(base64.b64decode(content.blob)))
    assert thumb.format == "JPEG" and max(thumb.size) <= 256
    for (name, args, needle), res in zip(calls, out["absurd"], strict=True):
        text = " ".join(getattr(c, "text", "") for c in res.content)
        assert res.is_error, (name, args)
        assert needle in text, (name, text)
        if "path" not in args:  # no server paths in messages (beyond the caller's own)
            assert str(world["root"]) not in text
    assert not out["after"].is_error


def test_write_key_adds_add_image_and_a_bad_key_is_refused(world):
    png = png_bytes(42)

    async def session() -> tuple:
        params = _params(world, "--write-key", world["write_key"])
        async with mcp.Client(params, read_timeout_seconds=120) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            added = await client.call_tool(
                "add_image",
                {"collection": "photos", "image_base64": base64.b64encode(png).decode(), "filename": "n.png"},
            )
            junk = await client.call_tool("add_image", {"collection": "photos", "image_base64": "aGVsbG8="})
            return tools, added, junk

    tools, added, junk = asyncio.run(session())
    assert "add_image" in tools and not added.is_error and junk.is_error
    new_id = added.structured_content["added"][0]["id"]
    assert world["api"].get(f"/v1/collections/photos/images/{new_id}").status_code == 200
    for key in (world["read_key"],):  # scope read: refused at start-up, one line, no traceback
        run = subprocess.run(
            [sys.executable, "-m", "cli", "mcp", "--write-key", key],
            env={**os.environ, **world["env"]},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        assert run.returncode != 0 and run.stderr.strip() and "Traceback" not in run.stderr


def test_streamable_http(world):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "mcp", "--transport", "http", "--port", str(port)],
        env={**os.environ, **world["env"], "BLIPSEARCH_READ_ACCESS": "key"},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        import httpx

        deadline = time.monotonic() + 90
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/mcp", timeout=2)
                break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline, "the MCP server did not start"
                time.sleep(0.3)
        assert httpx.post(f"http://127.0.0.1:{port}/mcp", json={}, timeout=10).status_code == 401  # no key

        async def session() -> list[int]:
            import httpx2  # the MCP SDK's own HTTP client
            from mcp.client.streamable_http import streamable_http_client

            headers = {"Authorization": f"Bearer {world['read_key']}"}
            async with httpx2.AsyncClient(headers=headers, timeout=120) as http:
                transport = streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http)
                async with mcp.Client(transport, read_timeout_seconds=120) as client:
                    res = await client.call_tool("search_images", {"query": "a red square", "collection": "photos"})
                    return _ids(res)

        want = _api_ids(world, "/v1/search/text", json={"query": "a red square", "collection": "photos", "k": 10})
        assert asyncio.run(session()) == want
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["mcp"], {"BLIPSEARCH_MCP_API": "false"}, "switched off"),
        (["mcp", "--transport", "carrier-pigeon"], {}, "--transport"),
        (["mcp", "--port", "9999"], {}, "--transport http only"),
    ],
)
def test_mcp_command_refusals(tmp_path, monkeypatch, args, env, needle):
    from typer.testing import CliRunner

    from cli.main import app

    monkeypatch.setenv("BLIPSEARCH_DATA_DIR", str(tmp_path))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and needle in result.output and "Traceback" not in result.output
