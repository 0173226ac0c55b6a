"""Moderation check kinds beyond BLIP scores: PDQ hashes (bit for bit with Meta's reference through
``threatexchange`` and ``pdqhash``), hash lists on a FAISS binary index, the NudeNet detector
(scores equal to the ``nudenet`` package's own ``detect``), text rules, and the CLI with them."""

from __future__ import annotations

import io
import json
import time
import tracemalloc

import numpy as np
import pdqhash
import pytest
import yaml
from PIL import Image, ImageDraw, ImageFilter, ImageOps
from threatexchange.signal_type.pdq.pdq_hasher import pdq_from_file

from media.pdq import bits_to_hex, distance, pdq_dihedral, pdq_hash
from moderation.checks import Moderator
from moderation.hashlists import MAX_LINE, HashList, read_hashes
from moderation.policy import PolicyError, parse_policy
from service.indexing import index_paths
from storage.collection import Collection
from tests.test_moderation import photo


def _reference(path) -> tuple[str, int]:
    hex_, quality = pdq_from_file(path)
    return hex_, int(quality)


def _jpeg(im: Image.Image, q: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=q)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _images(folder, n=6):
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(n):
        im = photo(i, (200 + 37 * i, 150 + 23 * i))
        p = folder / f"p{i}.{'jpg' if i % 2 else 'png'}"
        im.save(p, quality=90) if i % 2 else im.save(p)
        paths.append(p)
    gray = folder / "gray.png"
    photo(99).convert("L").save(gray)
    return [*paths, gray]


# -- PDQ ------------------------------------------------------------------------------------
def test_pdq_hashes_equal_the_reference_at_indexing_and_by_backfill(settings, blip_embedder, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cli.main import app as cli

    paths = _images(tmp_path / "imgs")
    index_paths(settings, [tmp_path / "imgs"], "c", embedder=blip_embedder, progress=False)
    rows = Collection.open(settings.data_dir, "c").read_table(["uri", "pdq_hash", "pdq_quality"]).to_pylist()
    by_uri = {r["uri"]: r for r in rows}
    for p in paths:
        ref_hex, ref_q = _reference(p)
        got = by_uri[str(p.resolve())]
        assert got["pdq_hash"] == ref_hex and got["pdq_quality"] == ref_q, p.name
        bits, q = pdqhash.compute(np.asarray(Image.open(p).convert("RGB")))
        assert bits_to_hex(bits) == ref_hex and int(q) == ref_q
    # A collection indexed without pdqhash gets the same hashes from the backfill, once.
    unhashed = settings.model_copy(update={"pdq_hashes": False})  # BLIPSEARCH_PDQ_HASHES=0
    index_paths(unhashed, [tmp_path / "imgs"], "old", embedder=blip_embedder, progress=False)
    old = Collection.open(settings.data_dir, "old")
    assert old.read_table(["pdq_hash"]).column("pdq_hash").null_count == len(paths)
    monkeypatch.setenv("BLIPSEARCH_DATA_DIR", str(settings.data_dir))
    runner = CliRunner()
    out = runner.invoke(cli, ["moderate", "backfill-pdq", "-c", "old", "--json"])
    assert out.exit_code == 0, out.stderr
    assert json.loads(out.stdout)["hashed"] == len(paths)
    again = json.loads(runner.invoke(cli, ["moderate", "backfill-pdq", "-c", "old", "--json"]).stdout)
    assert again["hashed"] == 0 and again["already_hashed"] == len(paths)
    filled = Collection.open(settings.data_dir, "old").read_table(["uri", "pdq_hash", "pdq_quality"]).to_pylist()
    assert {r["uri"]: (r["pdq_hash"], r["pdq_quality"]) for r in filled} == {
        u: (r["pdq_hash"], r["pdq_quality"]) for u, r in by_uri.items()
    }


# -- hash lists -----------------------------------------------------------------------------
VARIANTS = {
    "jpeg_q60": lambda im: _jpeg(im, 60),
    "resize_50pc": lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.BILINEAR),
    "flip": ImageOps.mirror,
}


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_hash_lists_match_variants_at_the_threshold_and_not_others(tmp_path):
    known = [photo(i) for i in range(8)]
    others = [photo(100 + i) for i in range(8)]
    refs = {name: [pdq_hash(t(im)).hex for im in known] for name, t in VARIANTS.items()}
    for name in VARIANTS:  # the list holds the variants; the originals are checked
        _write(tmp_path / f"{name}.pdq", ["# known, " + name, *refs[name]])
    rules = [{"name": n, "path": f"{n}.pdq", "action": "block", "dihedral": n == "flip"} for n in VARIANTS]
    pol = parse_policy({"name": "h", "version": 1, "hash_lists": rules})
    pol._source_dir = tmp_path
    mod = Moderator(pol, None, None)
    for i, res in enumerate(mod.check_images(known)):
        lists = {e["list"]: e for e in res.checks["hash_lists"]["lists"]}
        for name in VARIANTS:
            assert lists[name]["matched"] and lists[name]["distance"] <= 31, (i, name, lists[name])
            assert lists[name]["distance"] == distance(pdq_hash(known[i]).hex, lists[name]["hash"]) or name == "flip"
        assert res.decision == "block" and {t["list"] for t in res.triggers} == set(VARIANTS)
        assert lists["flip"]["variant"] != "original"  # matched through a rotation/flip of the image
    for res in mod.check_images(others):
        assert res.decision == "allow", res.checks
        assert all(e["distance"] > 31 for e in res.checks["hash_lists"]["lists"])
    # Exactly at the threshold: distance d matches with threshold d, not with d - 1.
    d = mod.check_images(known[:1])[0].checks["hash_lists"]["lists"][0]["distance"]
    if d > 0:
        for thr, hit in ((d, True), (d - 1, False)):
            rule = {"name": "j", "path": str(tmp_path / "jpeg_q60.pdq"), "threshold": thr}
            p = parse_policy({"name": "h", "version": 1, "hash_lists": [rule]})
            assert (Moderator(p, None, None).check_images(known[:1])[0].decision == "block") is hit
    # Without dihedral variants a flipped copy is far from the original.
    plain = parse_policy({"name": "h", "version": 1, "hash_lists": [{"name": "f", "path": str(tmp_path / "flip.pdq")}]})
    assert Moderator(plain, None, None).check_images(known[:1])[0].decision == "allow"
    # pdqhash's dihedral hashes are the image's, then 7 rotations/flips.
    hashes, _ = pdq_dihedral(known[0])
    assert hashes[0] == pdq_hash(known[0]).hex and len(set(hashes)) == 8


def test_hash_list_formats_malformed_lines_and_reload(tmp_path):
    good = [pdq_hash(photo(i)).hex for i in range(4)]
    path = _write(tmp_path / "l.txt", [
        "# comment", good[0], "", f"pdq {good[1].upper()}", "abc", "z" * 64, good[2] + " extra", "x" * (MAX_LINE + 10),
        good[3],
    ])  # fmt: skip
    hashes, rep = read_hashes(path)
    assert rep.format == "lines" and rep.loaded == 3 and rep.malformed == 4
    assert [e["line"] for e in rep.errors] == [5, 6, 7, 8]
    assert "64 hex digits" in rep.errors[0]["error"] and "hex digits only" in rep.errors[1]["error"]
    assert [h.tobytes().hex() for h in hashes] == [good[0], good[1], good[3]]
    # ThreatExchange's `dataset -P --csv` export, with other signal types and a bad row.
    csv = _write(tmp_path / "te.csv", [
        "signal_type,signal_str,collab,category,tags",
        f"pdq,{good[0]},Sample Signals,POSITIVE_CLASS,tag1 tag2",
        "url,https://example.com/x,Sample Signals,INVESTIGATION_SEED,",
        f'pdq,{good[1]},"Collab, with comma",POSITIVE_CLASS,',
        "pdq,deadbeef,Sample,POSITIVE_CLASS,",
        f"pdq,{good[2]}",
    ])  # fmt: skip
    hashes, rep = read_hashes(csv)
    assert rep.format == "threatexchange_csv" and rep.loaded == 2 and rep.skipped == 1
    assert [e["line"] for e in rep.errors] == [5, 6]
    _, rep = read_hashes(_write(tmp_path / "hma.csv", [f"{good[0]},123,456,2020-01-01,tag"]))
    assert rep.loaded == 1 and rep.format == "threatexchange_csv"
    # The CLI reports the malformed lines and exits 2.
    from typer.testing import CliRunner

    from cli.main import app as cli

    out = CliRunner().invoke(cli, ["moderate", "hash-list", str(path)])
    assert out.exit_code == 2 and "line 5:" in out.stdout and "3 hashes" in out.stdout
    # A changed file is re-read on the next use, without a restart; a vanished one keeps the last list.
    hl = HashList("l", path)
    q = np.frombuffer(bytes.fromhex(good[3]), np.uint8).reshape(1, 32)
    assert hl.nearest(q).distance == 0 and hl.loads == 1
    _write(path, good[:2])
    assert hl.nearest(q).distance > 0 and hl.loads == 2 and len(hl) == 2
    path.unlink()
    assert hl.nearest(q) is not None and hl.reload_error
    # A symlink planted where the list was is not followed.
    (tmp_path / "target").write_text(good[0] + "\n")
    path.symlink_to(tmp_path / "target")
    with pytest.raises(PolicyError.__mro__[1], match="Cannot read"):
        HashList("s", path)


def test_large_lists_stream_with_bounded_memory_and_match_fast(tmp_path):
    n = 200_000
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    path = tmp_path / "big.pdq"
    with open(path, "w") as fh:
        fh.writelines(r.tobytes().hex() + "\n" for r in raw)
    tracemalloc.start()
    hashes, rep = read_hashes(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert rep.loaded == n and np.array_equal(hashes, raw)
    assert peak < 3 * n * 32 + (4 << 20), peak  # the hash bytes (and one copy), not per-line objects
    hl = HashList("big", path)
    q = raw[12345:12346].copy()
    q[0, 0] ^= 0b111  # 3 bits away
    m = hl.nearest(q)
    assert m.distance == 3 and m.hash == raw[12345].tobytes().hex()


# -- detector -------------------------------------------------------------------------------
def skin(seed: int) -> Image.Image:
    """Blurred skin-toned ellipses on a random background: the shipped NudeNet finds boxes in some."""
    rng = np.random.default_rng(seed)
    w, h = int(rng.integers(200, 700)), int(rng.integers(200, 700))
    im = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(0, 255, 3)))
    d = ImageDraw.Draw(im)
    for _ in range(6):
        c = (int(rng.integers(180, 240)), int(rng.integers(120, 180)), int(rng.integers(90, 150)))
        x, y, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(20, 150))
        d.ellipse([x - r, y - r, x + r, y + r], fill=c)
    return im.filter(ImageFilter.GaussianBlur(3))


def test_detector_scores_equal_nudenets_own_detect(tmp_path):
    from nudenet import NudeDetector
    from nudenet.nudenet import _read_image

    from models.detectors.nudenet import LABELS, NudeNetDetector

    ref = NudeDetector()
    mine = NudeNetDetector()
    assert LABELS == tuple(__import__("nudenet.nudenet", fromlist=["x"]).__dict__["__labels"])
    pol = parse_policy({"name": "d", "version": 1, "detectors": [
        {"name": "n", "detector": "nudenet", "classes": {c: "nudity" for c in LABELS}, "threshold": 0.3,
         "action": "review"}]})  # fmt: skip
    mod = Moderator(pol, None, None, detectors={"nudenet": mine})
    seen = 0
    for seed in (3, 0, 14, 21, 27):
        im = skin(seed)
        path = tmp_path / f"s{seed}.png"
        im.save(path)
        expected = ref.detect(str(path))
        np.testing.assert_array_equal(mine.preprocess(im), _read_image(str(path))[0])
        res = mod.check_images([im])[0]
        got = res.checks["detectors"]["nudenet"]["detections"]
        assert [d["class"] for d in got] == [d["class"] for d in expected]
        assert [d["box"] for d in got] == [d["box"] for d in expected]
        np.testing.assert_allclose([d["score"] for d in got], [d["score"] for d in expected], atol=1e-4)
        hits = [d for d in expected if d["score"] >= 0.3]
        assert (res.decision == "review") == bool(hits)
        assert [t["box"] for t in res.triggers] == [d["box"] for d in hits]
        seen += len(expected)
    assert seen > 0  # the comparison covered real boxes
    assert mine.detect([Image.new("RGB", (20000, 150), (200, 150, 120))]) == [[]]  # shrunk first: bounded memory
    bad = {"name": "d", "version": 1, "detectors": [{"name": "n", "detector": "nudenet", "classes": {"GUN": "x"},
                                                     "threshold": 0.3, "action": "block"}]}  # fmt: skip
    with pytest.raises(PolicyError, match="GUN"):
        Moderator(parse_policy(bad), None, None, detectors={"nudenet": mine})


# -- text rules -----------------------------------------------------------------------------
def _text_policy(*rules):
    return parse_policy({"name": "t", "version": 1, "text_rules": list(rules)})


def test_text_rules_keywords_regex_builtins_and_hostile_regex():
    pol = _text_policy(
        {"name": "slurs", "keywords": ["creme brulee", "Bad"], "action": "block"},
        {"name": "scam", "regex": r"send\s+(btc|bitcoin)", "action": "review", "sources": ["ocr"]},
        {"name": "mail", "builtin": "email", "action": "flag"},
        {"name": "phone", "builtin": "phone", "action": "flag"},
        {"name": "url", "builtin": "url", "action": "flag"},
        {"name": "card", "builtin": "payment_card", "action": "review"},
    )
    mod = Moderator(pol, None, None)
    img = photo(0)
    ocr = "FREE GIFT\nLa CRÈME  Brûlée is badly made\nsend bitcoin to jo.smith+x@mail.example.co.uk"
    text = "call +1 (555) 123-4567, visit shop.example.com/deal. Card 4111 1111 1111 1111, not 4111 1111 1111 1112"
    res = mod.check_images([img], [text], records=[{"ocr_text": ocr}])[0]
    by_rule: dict[str, list] = {}
    for m in res.checks["text_rules"]["matches"]:
        by_rule.setdefault(m["rule"], []).append(m)
    assert [(m["match"], m["line_no"], m["source"]) for m in by_rule["slurs"]] == [("CRÈME  Brûlée", 2, "ocr")]
    assert by_rule["slurs"][0]["line"] == "La CRÈME  Brûlée is badly made"  # "badly" is not "bad"
    assert [m["match"] for m in by_rule["scam"]] == ["send bitcoin"]
    assert [m["match"] for m in by_rule["mail"]] == ["jo.smith+x@mail.example.co.uk"]
    assert [m["match"] for m in by_rule["phone"]] == ["+1 (555) 123-4567"]
    assert [m["match"] for m in by_rule["url"]] == ["shop.example.com/deal"]
    assert [m["match"] for m in by_rule["card"]] == ["**** **** **** 1111"]  # Luhn-valid only, masked
    assert "4111 1111 1111 1111" not in json.dumps(res.to_dict())
    assert res.decision == "block"
    clean = mod.check_images([img], ["a quiet afternoon"], records=[{"ocr_text": "nothing bad-free here"}])[0]
    assert {m["rule"] for m in clean.checks["text_rules"]["matches"]} == {"slurs"}  # "bad" at a word boundary
    none = mod.check_images([img], ["a quiet afternoon"], records=[{}])[0]  # no OCR column: tolerated
    assert none.decision == "allow" and none.checks["text_rules"]["matches"] == []
    # Without stored OCR text, the moderator's OCR reader (service: the configured engine) reads the image.
    reader = Moderator(pol, None, None, ocr=lambda im: f"a {im.width}px image: mail x@y.example")
    read = reader.check_images([img])[0]
    assert read.checks["text_rules"]["ocr_read"] and read.checks["text_rules"]["matches"][0]["match"] == "x@y.example"

    def broken(im):
        raise RuntimeError("engine crashed")

    failed = Moderator(pol, None, None, ocr=broken).check_images([img])[0]
    assert failed.decision == "review" and "OCR failed: engine crashed" in failed.triggers[0]["error"]
    # A catastrophic pattern runs out of its budget instead of hanging, and is not a silent allow.
    hostile = Moderator(_text_policy({"name": "evil", "regex": r"(a+)+$", "action": "flag", "timeout_ms": 20}),
                        None, None)  # fmt: skip
    t0 = time.perf_counter()
    out = hostile.check_images([img], ["a" * 5000 + "!\n" + "a" * 5000 + "!"])[0]
    assert time.perf_counter() - t0 < 1.0
    assert out.triggers[0]["timed_out"] and out.decision == "review"
    with pytest.raises(PolicyError, match=r"text_rules\[0\]\.regex: not a valid regular expression"):
        _text_policy({"name": "x", "regex": "(unclosed", "action": "flag"})
    with pytest.raises(PolicyError, match="exactly one of"):
        _text_policy({"name": "x", "regex": "a", "keywords": ["b"], "action": "flag"})


# -- CLI ------------------------------------------------------------------------------------
def test_moderate_check_run_and_calibrate_with_the_new_policy_keys(tmp_path, tiny_models, monkeypatch):
    from typer.testing import CliRunner

    from cli.main import app as cli

    monkeypatch.setenv("BLIPSEARCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BLIPSEARCH_MODEL", str(tiny_models["blip-itm"]))
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(3):
        photo(i).save(imgs / f"k{i}.png")
    skin(3).save(imgs / "skin.png")
    _write(tmp_path / "known.pdq", [pdq_hash(_jpeg(photo(0), 70)).hex, "not-a-hash"])
    policy = {
        "name": "full", "version": "2",
        "categories": [{"name": "red", "prompts": ["a red square"], "itc_threshold": 1.0, "itm_threshold": 0.5,
                        "action": "flag"}],
        "hash_lists": [{"name": "known", "path": "known.pdq", "action": "block"}],
        "detectors": [{"name": "nude", "detector": "nudenet", "classes": {"BUTTOCKS_EXPOSED": "nudity"},
                       "threshold": 0.3, "action": "review"}],
        "text_rules": [{"name": "contact", "builtin": "email", "action": "flag"}],
    }  # fmt: skip
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(policy))
    runner = CliRunner()
    files = [str(imgs / n) for n in ("k0.png", "k1.png", "skin.png")]
    args = ["--policy", str(tmp_path / "p.yaml"), "--text", "mail me: a@b.example", "--json"]
    out = runner.invoke(cli, ["moderate", "check", *files, *args])
    assert out.exit_code == 0, out.stderr
    res = {r["path"].rsplit("/", 1)[1]: r for r in json.loads(out.stdout)["results"]}
    assert res["k0.png"]["decision"] == "block"
    assert next(t for t in res["k0.png"]["triggers"] if t["check"] == "hash_list")["list"] == "known"
    assert res["k1.png"]["decision"] == "flag"  # the e-mail in the text
    assert res["skin.png"]["decision"] == "review"
    box = next(t for t in res["skin.png"]["triggers"] if t["check"] == "detector")
    assert box["class"] == "BUTTOCKS_EXPOSED" and len(box["box"]) == 4 and box["image_size"] == list(skin(3).size)
    human = runner.invoke(cli, ["moderate", "check", str(imgs / "k0.png"), "--policy", str(tmp_path / "p.yaml")])
    assert "hash_list: known" in human.stdout
    # A collection: stored results carry the evidence, the review queue the box.
    assert runner.invoke(cli, ["index", str(imgs), "-c", "c"]).exit_code == 0
    ran = runner.invoke(cli, ["moderate", "run", "-c", "c", "--policy", str(tmp_path / "p.yaml"), "--json"])
    assert ran.exit_code == 0, ran.stderr
    assert json.loads(ran.stdout)["decisions"] == {"block": 1, "allow": 2, "review": 1}
    rows = json.loads(runner.invoke(cli, ["moderate", "results", "-c", "c", "--json"]).stdout)["results"]
    assert all(any(s.get("check") == "hash_lists" for s in r["scores"]) for r in rows)
    from moderation.store import review_queue
    from storage.catalog import open_catalog

    _, items = review_queue(open_catalog(f"sqlite:///{tmp_path / 'data' / 'catalog.db'}"), "c")
    (item,) = items
    assert item["triggers"][0]["check"] == "detector" and item["triggers"][0]["policy_version"] == "2"
    # Calibration covers the detector category, the hash list and the text rule.
    labels = tmp_path / "labels.csv"
    labels.write_text("path,category,label\nimgs/skin.png,nudity,1\nimgs/k1.png,nudity,0\n"
                      "imgs/k0.png,known,1\nimgs/k2.png,known,0\nimgs/k1.png,contact,0\n")  # fmt: skip
    cal = runner.invoke(cli, ["moderate", "calibrate", "--labels", str(labels), "--policy", str(tmp_path / "p.yaml"),
                              "--json"])  # fmt: skip
    assert cal.exit_code == 0, cal.stderr
    cats = json.loads(cal.stdout)["categories"]
    assert cats["nudity"]["kind"] == "detector" and cats["nudity"]["at_suggested"]["recall"] == 1.0
    assert cats["known"]["suggested_threshold"] is not None and cats["known"]["at_suggested"]["precision"] == 1.0
    assert cats["contact"]["n"] == 1


def test_api_check_reports_the_new_kinds(tmp_path, tiny_models):
    from fastapi.testclient import TestClient

    from api.app import create_app
    from blipsearch.config import Settings

    policies = tmp_path / "policies"
    policies.mkdir()
    im = photo(5)
    _write(policies / "known.pdq", [pdq_hash(im).hex])
    pol = {"name": "api", "version": 1, "hash_lists": [{"name": "known", "path": "known.pdq", "action": "block"}],
           "text_rules": [{"name": "contact", "builtin": "url", "action": "review"}]}  # fmt: skip
    (policies / "api.yaml").write_text(yaml.safe_dump(pol))
    settings = Settings(data_dir=tmp_path / "data", model=str(tiny_models["blip-itm"]), policy_dir=policies)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        r = client.post("/v1/moderation/check", files={"file": ("a.png", buf.getvalue(), "image/png")},
                        data={"policy": "api", "text": "see www.example.com"})  # fmt: skip
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["decision"] == "block" and body["checks"]["hash_lists"]["lists"][0]["distance"] == 0
        assert body["checks"]["text_rules"]["matches"][0]["match"] == "www.example.com"
        assert {t["check"] for t in body["triggers"]} == {"hash_list", "text_rule"}


def test_moderate_check_reads_the_image_text_by_ocr_for_text_rules(tmp_path, monkeypatch):
    """An image with an e-mail address written in it and no accompanying text: ``moderate check``
    runs the OCR engine (RapidOCR, real weights) and the text rule fires on what it read."""
    pytest.importorskip("rapidocr_onnxruntime")
    from PIL import ImageFont
    from typer.testing import CliRunner

    from cli.main import app as cli

    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", 48)
    im = Image.new("RGB", (640, 240), "white")
    draw = ImageDraw.Draw(im)
    draw.text((40, 40), "Hello", fill="black", font=font)
    draw.text((40, 130), "bob@mail.com", fill="black", font=font)
    im.save(tmp_path / "sign.png")
    Image.new("RGB", (640, 240), "white").save(tmp_path / "blank.png")
    pol = {"name": "ocr", "version": 1, "text_rules": [{"name": "email", "builtin": "email", "action": "review"}]}
    (tmp_path / "ocr.yaml").write_text(yaml.safe_dump(pol))
    monkeypatch.setenv("BLIPSEARCH_DATA_DIR", str(tmp_path / "data"))
    out = CliRunner().invoke(
        cli, ["moderate", "check", str(tmp_path / "sign.png"), str(tmp_path / "blank.png"),
              "--policy", str(tmp_path / "ocr.yaml"), "--json"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    sign, blank = json.loads(out.stdout)["results"]
    assert sign["decision"] == "review"
    (hit,) = sign["checks"]["text_rules"]["matches"]
    assert hit["source"] == "ocr" and hit["match"] == "bob@mail.com" and sign["checks"]["text_rules"]["ocr_read"]
    assert blank["decision"] == "allow" and blank["checks"]["text_rules"]["matches"] == []
