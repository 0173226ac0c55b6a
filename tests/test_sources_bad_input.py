"""Hostile object names and inputs through the CLI, against a real S3 API on loopback (moto's
server): '..' in bucket names and keys, percent-encoded dots, keys over S3's 1,024 bytes, unicode,
a shard list of ten million names. Each is a one-line error (exit 2) or a per-item failure with
its reason, never a traceback, never an object other than the one named, never a credential."""

from __future__ import annotations

import io
import json
import time

import pytest
from typer.testing import CliRunner

from storage.collection import Collection
from tests.helpers import make_image
from tests.s3server import KEY_ID, S3, SECRET

pytestmark = pytest.mark.timeout(300)


def _jpeg(i: int) -> bytes:
    buf = io.BytesIO()
    make_image(i, (40, 30)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def cli(s3: S3, tmp_path, tiny_models, monkeypatch):
    from cli.main import app

    monkeypatch.setenv("BLIPSEARCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BLIPSEARCH_MODEL", str(tiny_models["blip-itm"]))

    def run(*args: str, as_json: bool = False) -> tuple[int, str]:
        extra = ["--json"] if as_json else []
        result = CliRunner().invoke(app, ["index", *args, "--collection", "bad", *extra])
        out = result.stdout + (result.stderr or "")
        assert "Traceback" not in out and SECRET not in out and KEY_ID not in out, out
        return result.exit_code, out

    return run


def _one_line_exit_2(code: int, out: str) -> str:
    assert code == 2, out
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, out
    return lines[0]


@pytest.mark.slow
def test_hostile_names_are_refused_or_fail_per_item(s3: S3, cli, tmp_path):
    bucket = s3.bucket(f"bad-{time.monotonic_ns() % 10**8}")
    s3.put(bucket, "secret/s.jpg", _jpeg(1))
    s3.put(bucket, "in/ok.jpg", _jpeg(2))
    s3.put(bucket, "in/%2e%2e/lit.jpg", _jpeg(3))  # a key that merely contains "%2e%2e"
    s3.put(bucket, "in/日本語/ünï.jpg", _jpeg(4))

    # Inputs naming '.'/'..' segments (in the bucket or the key), no bucket, or a key over 1,024
    # bytes: refused before any request, in one line.
    for raw in (
        "s3://../secret/s.jpg",
        "s3://./x",
        f"s3://{bucket}/in/../secret/s.jpg",
        f"s3://{bucket}/in/./ok.jpg",
        "s3:///in/ok.jpg",
        f"s3://{bucket}/" + "k" * 1025,
    ):
        line = _one_line_exit_2(*cli(raw))
        assert "Unusable object URL" in line, line

    # A file list naming the same things: each is that item's failure (bad_key); the good and the
    # unicode objects are read, the literal "%2e%2e" key is that object (not its parent's sibling).
    lst = "\n".join(
        [
            f"s3://{bucket}/in/ok.jpg",
            f"s3://{bucket}/in/../secret/s.jpg",
            f"s3://{bucket}/in/%2e%2e/lit.jpg",
            f"s3://{bucket}/in/日本語/ünï.jpg",
            f"s3://{bucket}/" + "é" * 513,  # 1,026 bytes of UTF-8
        ]
    )
    (tmp_path / "l.txt").write_text(lst + "\n", encoding="utf-8")
    code, out = cli(str(tmp_path / "l.txt"), as_json=True)
    assert code == 0, out
    report = json.loads(out)
    assert report["added"] == 3, report
    assert sorted(f["reason"] for f in report["failures"]) == ["bad_key", "bad_key"], report["failures"]
    uris = {r["uri"] for r in Collection.open(tmp_path / "data", "bad").read_table(["uri"]).to_pylist()}
    assert uris == {f"s3://{bucket}/in/ok.jpg", f"s3://{bucket}/in/%2e%2e/lit.jpg", f"s3://{bucket}/in/日本語/ünï.jpg"}
    sha = {r["uri"]: r["sha256"] for r in Collection.open(tmp_path / "data", "bad").read_table().to_pylist()}
    import hashlib

    assert sha[f"s3://{bucket}/in/%2e%2e/lit.jpg"] == hashlib.sha256(_jpeg(3)).hexdigest()


def test_a_shard_list_of_ten_million_names_is_refused_at_once(cli, tmp_path):
    for pattern in (f"{tmp_path}/shards/{{0000000..9999999}}.tar", "s3://bkt-x/s/{0000000..9999999}.tar"):
        t0 = time.monotonic()
        line = _one_line_exit_2(*cli(pattern))
        assert time.monotonic() - t0 < 30 and "10,000,000" in line, line
