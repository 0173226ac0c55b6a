"""Dataset formats recognised by content, built with the libraries that write them: Parquet and
Arrow with image bytes (the ``datasets`` library's ``Image`` feature, ``to_parquet``,
``save_to_disk``), imagefolder metadata, img2dataset output folders (shards written with the
``webdataset`` library), locally and in a bucket on the loopback S3 server."""

from __future__ import annotations

import io
import json
import struct
import zlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from media.safe_read import read_verified
from service.indexing import index_paths
from storage.collection import Collection
from tests.helpers import make_image

pytestmark = pytest.mark.timeout(300)


def _png(i: int, size: tuple[int, int] = (36, 28)) -> bytes:
    buf = io.BytesIO()
    make_image(i, size).save(buf, "PNG")
    return buf.getvalue()


def _bomb() -> bytes:
    """A tiny PNG declaring 30000x30000 pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")
    )


def _records(settings, name: str) -> list[dict]:
    return Collection.open(settings.data_dir, name).read_table().to_pylist()


def _hf_dataset(n: int, start: int = 0):
    import datasets

    return datasets.Dataset.from_dict(
        {"image": [Image.open(io.BytesIO(_png(start + i))) for i in range(n)], "label": [i % 3 for i in range(n)]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}),
    )


def test_parquet_and_arrow_image_bytes_from_the_datasets_library(settings, blip_embedder, tmp_path):
    import datasets

    ds = _hf_dataset(5)
    ds.to_parquet(str(tmp_path / "train.parquet"))
    report = index_paths(settings, [tmp_path / "train.parquet"], "hf", embedder=blip_embedder, progress=False)
    assert report.added == 5 and report.failed == 0
    rows = sorted(_records(settings, "hf"), key=lambda r: r["uri"])
    assert rows[0]["uri"] == f"dataset://{tmp_path / 'train.parquet'}#image/0"
    assert sorted(json.loads(r["metadata"])["label"] for r in rows) == [0, 0, 1, 1, 2]
    for r in rows:  # each row reads back from the dataset file, hash-checked
        assert read_verified(r["uri"], r["sha256"], 1 << 20) == _png(int(r["uri"].rsplit("/", 1)[1]))
    again = index_paths(settings, [tmp_path / "train.parquet"], "hf", embedder=blip_embedder, progress=False)
    assert (again.added, again.skipped_duplicates) == (0, 5)

    # save_to_disk: a DatasetDict (one folder per split) with the same images plus new ones.
    dd = datasets.DatasetDict({"train": ds, "test": _hf_dataset(2, start=50)})
    dd.save_to_disk(str(tmp_path / "saved"))
    saved = index_paths(settings, [tmp_path / "saved"], "hf", embedder=blip_embedder, progress=False)
    assert (saved.added, saved.skipped_duplicates) == (2, 5)
    test_rows = [r for r in _records(settings, "hf") if json.loads(r["metadata"]).get("split") == "test"]
    assert len(test_rows) == 2 and all(r["uri"].endswith((".arrow#image/0", ".arrow#image/1")) for r in test_rows)
    assert read_verified(test_rows[0]["uri"], test_rows[0]["sha256"], 1 << 20)[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_binary_column_with_bombs_and_non_images_fails_per_row(settings, blip_embedder, tmp_path):
    table = pa.table(
        {
            "jpg": pa.array([_png(1), _bomb(), b"not an image", None, _png(2)], pa.binary()),
            "caption": ["a", "b", "c", "d", "e"],
        }
    )
    pq.write_table(table, tmp_path / "blobs.parquet", row_group_size=2)
    report = index_paths(settings, [tmp_path / "blobs.parquet"], "bin", embedder=blip_embedder, progress=False)
    reasons = sorted(f["reason"] for f in report.failures)
    assert report.added == 2 and reasons == ["not_an_image", "source_error", "too_many_pixels"]
    row = {json.loads(r["metadata"])["caption"]: r for r in _records(settings, "bin")}["e"]
    assert row["uri"].endswith("#jpg/4") and read_verified(row["uri"], row["sha256"], 1 << 20) == _png(2)


def test_imagefolder_metadata_jsonl_and_csv(settings, blip_embedder, tmp_path):
    root = tmp_path / "folder"
    (root / "train").mkdir(parents=True)
    (root / "val").mkdir()
    for i in range(3):
        (root / "train" / f"{i}.png").write_bytes(_png(100 + i))
    (root / "val" / "v.png").write_bytes(_png(200))
    (root / "train" / "metadata.jsonl").write_text(
        "\n".join(json.dumps({"file_name": f"{i}.png", "text": f"caption {i}", "n": i}) for i in range(2))
        + "\n"
        + json.dumps({"file_name": "missing.png", "text": "x"})
        + "\n"
        + json.dumps({"file_name": "../val/v.png", "text": "escape"})
        + "\n"
    )
    (root / "val" / "metadata.csv").write_text("file_name,text\nv.png,a val image\n")
    report = index_paths(settings, [root], "folder", embedder=blip_embedder, progress=False)
    assert report.added == 4, report.failures
    assert sorted(f["error"] for f in report.failures) == ["listed in metadata.jsonl but missing", "unusable file_name"]
    meta = {r["uri"].rsplit("/", 1)[1]: json.loads(r["metadata"] or "{}") for r in _records(settings, "folder")}
    assert meta["0.png"] == {"text": "caption 0", "n": 0} and meta["2.png"] == {}
    assert meta["v.png"] == {"text": "a val image"}


def _img2dataset(folder, shards: int, per_shard: int, failed_every: int = 3) -> dict[str, dict]:
    """An img2dataset ``--output_format webdataset`` folder, shards written by webdataset."""
    import webdataset as wds

    folder.mkdir(parents=True, exist_ok=True)
    expected: dict[str, dict] = {}
    for s in range(shards):
        rows = []
        with wds.TarWriter(str(folder / f"{s:05d}.tar")) as sink:
            for i in range(per_shard):
                key = f"{s:05d}{i:04d}"
                url = f"https://example.com/{key}.jpg"
                if i % failed_every == failed_every - 1:
                    rows.append(
                        {
                            "key": key,
                            "url": url,
                            "caption": f"c{key}",
                            "status": "failed_to_download",
                            "error_message": "HTTP Error 404: Not Found",
                            "width": None,
                        }
                    )
                    continue
                sink.write(
                    {
                        "__key__": key,
                        "jpg": _png(1000 + s * 100 + i),
                        "txt": f"c{key}",
                        "json": {"key": key, "url": url, "caption": f"c{key}", "status": "success"},
                    }
                )
                rows.append(
                    {
                        "key": key,
                        "url": url,
                        "caption": f"c{key}",
                        "status": "success",
                        "error_message": None,
                        "width": 36,
                    }
                )
                expected[key] = {"url": url}
        pq.write_table(pa.Table.from_pylist(rows), folder / f"{s:05d}.parquet")
        (folder / f"{s:05d}_stats.json").write_text(json.dumps({"count": per_shard, "successes": len(expected)}))
    return expected


def test_img2dataset_output_locally_and_in_a_bucket(s3, settings, blip_embedder, tmp_path):
    expected = _img2dataset(tmp_path / "out", shards=2, per_shard=6)
    report = index_paths(settings, [tmp_path / "out"], "laion", embedder=blip_embedder, progress=False)
    assert report.added == len(expected) == 8
    assert len(report.failures) == 4 and all(
        "not downloaded (failed_to_download): HTTP Error 404" in f["error"] for f in report.failures
    )
    rows = _records(settings, "laion")
    for r in rows:
        meta = json.loads(r["metadata"])
        assert meta["url"] == expected[meta["key"]]["url"] and meta["text"] == f"c{meta['key']}"
        assert meta["width"] == 36 and meta.get("status", "success") == "success" and "error_message" not in meta

    # The same folder in a bucket: listed, shards streamed, metadata joined, nothing embedded twice.
    bucket = s3.bucket("img2dataset-out")
    for p in sorted((tmp_path / "out").iterdir()):
        s3.put(bucket, f"laion/{p.name}", p.read_bytes())
    remote = index_paths(settings, [f"s3://{bucket}/laion"], "laion-s3", embedder=blip_embedder, progress=False)
    assert remote.added == 8 and len(remote.failures) == 4
    rrow = next(r for r in _records(settings, "laion-s3") if json.loads(r["metadata"])["key"] == "000010001")
    assert rrow["uri"] == f"s3://{bucket}/laion/00001.tar#000010001.jpg"
    assert read_verified(rrow["uri"], rrow["sha256"], 1 << 20) == _png(1101)

    # A Hugging Face Parquet file in the bucket, too.
    _hf_dataset(3, start=70).to_parquet(str(tmp_path / "hf.parquet"))
    s3.put(bucket, "hf/train-00000-of-00001.parquet", (tmp_path / "hf.parquet").read_bytes())
    hf = index_paths(
        settings, [f"s3://{bucket}/hf/train-00000-of-00001.parquet"], "hf-s3", embedder=blip_embedder, progress=False
    )
    assert hf.added == 3
    r0 = next(r for r in _records(settings, "hf-s3") if r["uri"].endswith("#image/2"))
    assert r0["uri"].startswith(f"dataset://s3://{bucket}/hf/") and read_verified(
        r0["uri"], r0["sha256"], 1 << 20
    ) == _png(72)
