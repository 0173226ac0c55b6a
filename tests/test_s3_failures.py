"""Object-store failures against a real S3 API on loopback (moto's server): an object the
credentials may not read (moto enforcing IAM policies on signed requests), and the server
killed in the middle of a job (every connection dropped), then back for the resume."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import pytest

from service.indexing import index_paths
from storage.catalog import open_catalog
from storage.collection import Collection
from tests.helpers import make_image
from tests.s3server import S3, SECRET, Outage

pytestmark = pytest.mark.timeout(300)


def _jpeg(i: int) -> bytes:
    buf = io.BytesIO()
    make_image(i, (40, 30)).save(buf, "JPEG")
    return buf.getvalue()


def _uris(settings: Any, name: str) -> list[str]:
    return [r["uri"] for r in Collection.open(settings.data_dir, name).read_table(["uri"]).to_pylist()]


def _fresh_fs() -> None:
    import fsspec

    fsspec.filesystem("s3").clear_instance_cache()  # clients hold the credentials they started with


def test_a_forbidden_object_is_a_per_item_failure_with_its_reason(s3: S3, settings, blip_embedder, monkeypatch):
    import boto3
    from moto import settings as moto_settings

    bucket = s3.bucket(f"perm-{time.monotonic_ns() % 10**8}")
    for i in range(3):
        s3.put(bucket, f"p/open/{i}.jpg", _jpeg(600 + i))
    s3.put(bucket, "p/private/x.jpg", _jpeg(650))
    iam = boto3.client("iam", endpoint_url=s3.endpoint, region_name="us-east-1")
    user = f"reader-{bucket}"
    iam.create_user(UserName=user)
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]},
            {"Effect": "Deny", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/p/private/*"},
        ],
    }
    iam.put_user_policy(UserName=user, PolicyName="read-open", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    # From here on the server checks every request's signature and the user's policy.
    monkeypatch.setattr(moto_settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    _fresh_fs()
    try:
        report = index_paths(settings, [f"s3://{bucket}/p"], "perm", embedder=blip_embedder, progress=False)
    finally:
        _fresh_fs()
    assert report.added == 3, report.failures
    assert [(f["path"], f["reason"]) for f in report.failures] == [(f"s3://{bucket}/p/private/x.jpg", "forbidden")]
    err = report.failures[0]["error"]
    assert "\n" not in err and key["SecretAccessKey"] not in err and SECRET not in err
    assert sorted(_uris(settings, "perm")) == [f"s3://{bucket}/p/open/{i}.jpg" for i in range(3)]


class _KillsServerAfterFirstBatch:
    """The real embedder; after its first batch the S3 server the job reads from dies."""

    def __init__(self, embedder: Any, server: Outage) -> None:
        self._embedder = embedder
        self._server = server
        self.batches = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._embedder, name)

    def embed_batch(self, pixels: Any, **kwargs: Any) -> Any:
        self.batches += 1
        if self.batches == 1:
            self._server.kill()
        return self._embedder.embed_batch(pixels, **kwargs)


@pytest.mark.slow
def test_a_server_killed_mid_job_fails_it_in_one_line_and_the_resume_adds_each_object_once(
    s3: S3, settings, blip_embedder, monkeypatch
):
    bucket = s3.bucket(f"kill-{time.monotonic_ns() % 10**8}")
    n = 72  # more than the pipeline and the prefetch read ahead of the first batch
    keys = [f"many/{i:03d}.jpg" for i in range(n)]
    for i, k in enumerate(keys):
        s3.put(bucket, k, _jpeg(700 + i))
    # The job reaches the store on a port that dies with every connection, then comes back.
    server = Outage(s3.port).start()
    endpoint = server.endpoint
    monkeypatch.setenv("BLIPSEARCH_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("BLIPSEARCH_OBJECT_RETRIES", "1")
    cfg = settings.model_copy(update={"s3_endpoint_url": endpoint, "batch_size": 2, "shard_size": 2})
    dying = _KillsServerAfterFirstBatch(blip_embedder, server)
    t0 = time.monotonic()
    from blipsearch.errors import InvalidInputError

    with pytest.raises(InvalidInputError) as err:
        index_paths(cfg, [f"s3://{bucket}/many"], "killed", embedder=dying, progress=False)  # type: ignore[arg-type]
    assert time.monotonic() - t0 < 60
    msg = str(err.value)
    assert "stopped answering" in msg and "\n" not in msg and SECRET not in msg
    job = open_catalog(cfg.catalog_url()).list_jobs("killed")[0]
    assert job.state == "failed" and "stopped answering" in (job.error or "") and "\n" not in (job.error or "")
    committed = _uris(settings, "killed")
    assert 2 <= len(committed) < n and len(set(committed)) == len(committed)

    # The server comes back on the same port; the job is resumed. A committed object rewritten
    # with other bytes of the same size is not fetched again (it is skipped by its listed size).
    server.start()
    try:
        first = committed[0].split(f"s3://{bucket}/", 1)[1]
        same_size = bytearray(_jpeg(700 + keys.index(first)))
        same_size[-3] ^= 0xFF
        s3.put(bucket, first, bytes(same_size))
        resumed = index_paths(
            cfg, [f"s3://{bucket}/many"], "killed", embedder=blip_embedder, progress=False, job_id=job.id
        )
        assert (resumed.added, resumed.skipped_duplicates, resumed.failed) == (n - len(committed), len(committed), 0)
        uris = _uris(settings, "killed")
        assert sorted(uris) == sorted(f"s3://{bucket}/{k}" for k in keys)  # every object once
        assert open_catalog(cfg.catalog_url()).get_job(job.id).state == "succeeded"
        again = index_paths(cfg, [f"s3://{bucket}/many"], "killed", embedder=blip_embedder, progress=False)
        assert (again.added, again.updated, again.skipped_duplicates) == (0, 0, n)  # an unchanged bucket
    finally:
        server.kill()
