"""Captions: equal to model.generate; index-time and collection (re)captioning, resumable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from transformers import Blip2ForConditionalGeneration, Blip2Processor, BlipForConditionalGeneration, BlipProcessor

from indexer.captions import caption_collection
from models.captioners import Decoding, load_captioner
from service.indexing import index_paths
from storage.collection import Collection
from tests.helpers import make_image, write_images


@pytest.fixture(scope="session")
def captioner(tiny_models):
    return load_captioner(str(tiny_models["blip-caption"]), device="cpu", batch_size=4)


@pytest.mark.parametrize(
    "decoding",
    [
        Decoding(max_new_tokens=8),
        Decoding(max_new_tokens=6, num_beams=3),
        Decoding(max_new_tokens=6, prompt="a photo of"),
    ],
    ids=["greedy", "beam3", "prompt"],
)
@pytest.mark.parametrize("family", ["blip", "blip2"])
def test_captions_equal_model_generate(tiny_models, captioner, decoding, family):
    if family == "blip":
        path = tiny_models["blip-caption"]
        model = BlipForConditionalGeneration.from_pretrained(path).eval()
        processor = BlipProcessor.from_pretrained(path)
    else:
        path = tiny_models["blip2-caption"]
        model = Blip2ForConditionalGeneration.from_pretrained(path).eval()
        processor = Blip2Processor.from_pretrained(path)
        captioner = load_captioner(str(path), device="cpu", batch_size=3)
        assert captioner.family == "blip2"
    images = [make_image(i) for i in range(5)]
    ours = captioner.caption(images, decoding)
    for img, got in zip(images, ours, strict=True):
        inputs = processor(images=img, text=decoding.prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(
                **inputs,
                max_new_tokens=decoding.max_new_tokens,
                num_beams=decoding.num_beams,
                output_scores=True,
                return_dict_in_generate=True,
            )
        if decoding.num_beams == 1:
            # Not a float tie: at every greedy step the chosen token's logit leads the runner-up's
            # by far more than kernels (CPU instruction sets, batch sizes) can move it, so our
            # batched decoding must pick the same tokens.
            assert min(float(-torch.topk(sc[0], 2).values.diff()) for sc in out.scores) > 1e-3
        assert got == processor.decode(out.sequences[0], skip_special_tokens=True).strip()
    assert len(set(ours)) > 1  # different images, different captions
    if decoding.prompt and family == "blip":
        assert all(c.startswith(decoding.prompt) for c in ours)


def test_index_with_captions(settings, blip_embedder, captioner, tmp_path):
    write_images(tmp_path / "in", 6)
    index_paths(settings, [tmp_path / "in"], "c", embedder=blip_embedder, captioner=captioner, progress=False)
    t = Collection.open(settings.data_dir, "c").read_table(["uri", "caption", "caption_model"]).to_pylist()
    assert all(r["caption"] and r["caption_model"] == captioner.model_id for r in t)
    from PIL import Image

    expected = captioner.caption([Image.open(t[0]["uri"]).convert("RGB")])[0]
    assert t[0]["caption"] == expected


def test_recaption_is_idempotent_and_keeps_embeddings(settings, blip_embedder, captioner, tmp_path):
    write_images(tmp_path / "in", 10)
    index_paths(settings, [tmp_path / "in"], "c", embedder=blip_embedder, progress=False)
    coll = Collection.open(settings.data_dir, "c")
    ids_before, emb_before = coll.all_embeddings()
    index_file = coll.manifest.index.file
    first = caption_collection(coll, captioner, commit_every=3, progress=False)
    assert first["captioned"] == 10 and first["failed"] == 0
    second = caption_collection(coll, captioner, progress=False)
    assert second["captioned"] == 0
    ids_after, emb_after = coll.all_embeddings()
    assert (ids_before == ids_after).all() and (emb_before == emb_after).all()
    assert coll.reload().index.file == index_file  # the index stays valid
    caps = coll.read_table(["caption"]).column("caption").to_pylist()
    assert all(caps)


@pytest.mark.slow
def test_recaption_killed_midway_then_resumed(tmp_path, tiny_models):
    write_images(tmp_path / "in", 80)
    env = {
        **os.environ,
        "BLIPSEARCH_DATA_DIR": str(tmp_path / "data"),
        "HF_HUB_OFFLINE": "1",
        "BLIPSEARCH_CAPTION_BATCH_SIZE": "2",
    }
    base = [sys.executable, "-m", "cli"]
    subprocess.run(
        [*base, "index", str(tmp_path / "in"), "-c", "k", "--model", str(tiny_models["blip-itm"])],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    cmd = [
        *base,
        "caption",
        "-c",
        "k",
        "--caption-model",
        str(tiny_models["blip-caption"]),
        "--num-beams",
        "4",
        "--max-new-tokens",
        "20",
        "--json",
    ]
    coll = Collection.open(tmp_path / "data", "k")

    def captioned() -> int:
        return sum(c is not None for c in coll.read_table(["caption"]).column("caption").to_pylist())

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while captioned() == 0 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    killed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = captioned()
    assert killed and 0 < partial < 80, partial
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["captioned"] == 80 - partial  # only the rest
    assert captioned() == 80
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert json.loads(again.stdout)["captioned"] == 0


def test_caption_collection_is_a_resumable_job(settings, blip_embedder, captioner, tmp_path, monkeypatch):
    """``caption --collection`` is a ``caption`` job in ``jobs list``; a failed one resumes by id."""
    from typer.testing import CliRunner

    from cli.main import app
    from storage.catalog import open_catalog

    write_images(tmp_path / "in", 6)
    index_paths(settings, [tmp_path / "in"], "c", embedder=blip_embedder, progress=False)
    coll = Collection.open(settings.data_dir, "c")
    catalog = open_catalog(settings.catalog_url())
    decoding = Decoding(max_new_tokens=5)
    real = captioner.caption_pixels
    calls = []

    def dies_on_the_second_commit(pixels, dec):
        calls.append(len(pixels))
        if len(calls) == 2:
            raise RuntimeError("the captioner died")
        return real(pixels, dec)

    monkeypatch.setattr(captioner, "caption_pixels", dies_on_the_second_commit)
    with pytest.raises(RuntimeError, match="captioner died"):
        caption_collection(coll, captioner, decoding, commit_every=2, progress=False, catalog=catalog)
    monkeypatch.setattr(captioner, "caption_pixels", real)
    captioned = sum(c is not None for c in coll.read_table(["caption"]).column("caption").to_pylist())
    assert captioned == 2  # the first commit is kept

    cli = CliRunner()
    base = ["--data-dir", str(settings.data_dir), "--json"]
    listed = json.loads(cli.invoke(app, ["jobs", "list", *base]).stdout)["jobs"]
    job = next(j for j in listed if j["kind"] == "caption")
    assert (job["collection"], job["state"], job["model_id"]) == ("c", "failed", captioner.model_id)
    assert "captioner died" in job["error"] and job["settings"]["max_new_tokens"] == 5

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = cli.invoke(app, ["jobs", "resume", job["id"], *base])
    assert out.exit_code == 0, out.output
    resumed = json.loads(out.stdout)
    assert (resumed["id"], resumed["kind"], resumed["state"]) == (job["id"], "caption", "succeeded")
    assert resumed["counts"]["captioned"] == 4 and resumed["counts"]["progress"]["done"] == 4  # only the rest
    caps = coll.read_table(["caption", "caption_model"]).to_pylist()
    assert all(r["caption"] and r["caption_model"] == captioner.model_id for r in caps)

    again = cli.invoke(app, ["caption", "-c", "c", "--caption-model", captioner.model_id, *base])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["captioned"] == 0
    kinds = [j["kind"] for j in json.loads(cli.invoke(app, ["jobs", "list", *base]).stdout)["jobs"]]
    assert kinds.count("caption") == 2


def _load_via_settings(path, tmp_path, precision):  # type: ignore[no-untyped-def]
    """Through the product's path: Settings -> service.models.load_captioner."""
    from blipsearch.config import Settings
    from service.models import load_captioner as load

    return load(Settings(data_dir=tmp_path / "data", precision=precision, caption_model=str(path), device="cpu"))


@pytest.mark.parametrize("name", ["blip-caption", "blip2-caption"])
def test_fast_captioner_holds_the_generation_bound(tiny_models, tmp_path, name):
    """``fast``: vision encoder on OpenVINO bf16, decoder under bf16 autocast where the CPU has
    bf16 units; within the generation bound (evaluation/fidelity.py). Elsewhere (scripts/test.sh's
    AVX2 pass) ``fast`` is the fp32 forward."""
    from evaluation.fidelity import generation_fidelity
    from models.fast_runtime import openvino_available
    from models.precision import has_native_bf16

    native = has_native_bf16()
    vision = ("openvino bf16" if openvino_available() else "torch bf16") if native else "torch fp32"
    exact, fast = (_load_via_settings(tiny_models[name], tmp_path, p) for p in ("exact", "fast"))
    assert exact.stage_runtimes() == {"vision": "torch fp32", "decoder": "torch fp32"}
    assert fast.stage_runtimes() == {"vision": vision, "decoder": "torch bf16" if native else "torch fp32"}
    assert fast.describe()["runtimes"] == fast.stage_runtimes() and fast.describe()["precision"] == "fast"
    pixels = exact.preprocess([make_image(i, (64, 48)) for i in range(6)])
    tokens, logits = exact.greedy_logits(pixels, Decoding(max_new_tokens=10))
    forced = fast.forced_logits(pixels, tokens)
    f = generation_fidelity(tokens.numpy(), logits.numpy(), forced.numpy(), exact.eos_token_ids)
    assert f.positions > 0 and f.holds(), f.as_dict()
    if native:
        assert f.mean_abs_dlogp > 0.0  # bf16 ran: not the fp32 forward again
    else:
        torch.testing.assert_close(forced, logits, rtol=1e-5, atol=1e-5)  # fast is exact here
    # captions come out of the same path, batched, with beams too
    assert len(fast.caption_pixels(pixels, Decoding(max_new_tokens=6, num_beams=3))) == len(pixels)
