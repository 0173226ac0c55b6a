"""OpenAI's /v1/embeddings and /v1/moderations driven by the official ``openai`` SDK against a live
server on loopback, compared with /v1/embed and /v1/moderation/check on the same models."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import requests
import yaml

from blipsearch.config import Settings
from media.pdq import pdq_hash
from service.indexing import index_paths
from tests.helpers import write_images
from tests.live_server import data_uri, png_bytes, serve
from tests.test_moderation import photo, policy_dict

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def live(tmp_path_factory, blip_embedder, tiny_models):
    root = tmp_path_factory.mktemp("openai")
    policies = root / "policies"
    policies.mkdir()
    (policies / "shop.yaml").write_text(yaml.safe_dump(policy_dict(itm=0.0)))  # every category hits: block
    (policies / "calm.yaml").write_text(yaml.safe_dump(policy_dict(itc=1.0, itm=1.0)))  # nothing passes the screen
    (policies / "known.pdq").write_text(pdq_hash(photo(5)).hex + "\n")
    rules = {"name": "rules", "version": 3,
             "hash_lists": [{"name": "known", "path": "known.pdq", "action": "block"}],
             "text_rules": [{"name": "spam", "keywords": ["free money"], "action": "review"},
                            {"name": "email", "builtin": "email", "action": "flag"},
                            {"name": "card", "builtin": "payment_card", "action": "block"}]}  # fmt: skip
    (policies / "rules.yaml").write_text(yaml.safe_dump(rules))
    settings = Settings(
        data_dir=root / "data",
        model=str(tiny_models["blip-itm"]),
        policy_dir=policies,
        max_upload_bytes=200_000,
        embed_max_items=8,
    )
    write_images(root / "imgs", 4)
    index_paths(settings, [root / "imgs"], "photos", embedder=blip_embedder, progress=False)
    with serve(settings) as base:
        yield {"base": base, "settings": settings, "model": str(tiny_models["blip-itm"])}


@pytest.fixture(scope="module")
def client(live):
    return openai.OpenAI(base_url=f"{live['base']}/v1", api_key="unused", max_retries=0, timeout=60)


def _embed(base: str, **kw) -> np.ndarray:
    r = requests.post(f"{base}/v1/embed", timeout=60, **kw)
    assert r.status_code == 200, r.text
    return np.asarray(r.json()["embeddings"], np.float32)


def test_text_embeddings_equal_v1_embed_in_both_encodings(live, client):
    texts = ["a red square", "blue stripes on white"]
    want = _embed(live["base"], json={"texts": texts, "model": live["model"]})
    got_b64 = client.embeddings.create(model=live["model"], input=texts)  # the SDK asks for base64 by default
    got_float = client.embeddings.create(model=live["model"], input=texts, encoding_format="float")
    for resp in (got_b64, got_float):
        assert resp.object == "list" and resp.model == live["model"]
        assert [d.index for d in resp.data] == [0, 1] and all(d.object == "embedding" for d in resp.data)
        np.testing.assert_allclose(np.asarray([d.embedding for d in resp.data]), want, atol=1e-6)
    assert got_float.usage.prompt_tokens > 0 and got_float.usage.total_tokens == got_float.usage.prompt_tokens
    single = client.embeddings.create(model="photos", input="a red square", encoding_format="float")
    np.testing.assert_allclose(single.data[0].embedding, want[0], atol=1e-6)  # a collection names its model


def test_image_embeddings_in_every_form_equal_v1_embed(live, client):
    pngs = [png_bytes(3), png_bytes(5, (90, 70))]
    files = [("files", (f"{i}.png", p, "image/png")) for i, p in enumerate(pngs)]
    want = _embed(live["base"], files=files, data={"model": live["model"]})
    uris = [data_uri(p) for p in pngs]
    forms = [
        client.embeddings.create(model=live["model"], input=uris),
        client.embeddings.create(
            model=live["model"], input=[{"type": "image_url", "image_url": {"url": u}} for u in uris]
        ),
        client.embeddings.create(  # infinity's form: bare base64 items under modality image
            model=live["model"], input=[base64.b64encode(p).decode() for p in pngs], extra_body={"modality": "image"}
        ),
    ]
    for resp in forms:
        np.testing.assert_allclose(np.asarray([d.embedding for d in resp.data]), want, atol=1e-5)
    mixed = client.embeddings.create(model=live["model"], input=["a red square", uris[1]], encoding_format="float")
    text = _embed(live["base"], json={"texts": ["a red square"], "model": live["model"]})
    np.testing.assert_allclose(mixed.data[0].embedding, text[0], atol=1e-6)
    np.testing.assert_allclose(mixed.data[1].embedding, want[1], atol=1e-5)


def test_dimensions_truncate_and_renormalise(live, client):
    full = np.asarray(client.embeddings.create(model=live["model"], input="a dark photo").data[0].embedding)
    short = np.asarray(
        client.embeddings.create(model=live["model"], input="a dark photo", dimensions=64).data[0].embedding
    )
    assert short.shape == (64,)
    np.testing.assert_allclose(short, full[:64] / np.linalg.norm(full[:64]), atol=1e-6)
    same = client.embeddings.create(model=live["model"], input="a dark photo", dimensions=full.shape[0])
    np.testing.assert_allclose(same.data[0].embedding, full, atol=1e-7)
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model=live["model"], input="x", dimensions=full.shape[0] + 1)
    assert err.value.status_code == 400 and err.value.body["param"] == "dimensions"
    assert err.value.body["type"] == "invalid_request_error"


def _error(r: requests.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def test_hostile_embedding_requests_answer_openai_errors(live, client):
    base, model = live["base"], live["model"]
    with pytest.raises(openai.NotFoundError) as nf:
        client.embeddings.create(model="no-such-model", input="x")
    assert nf.value.body["code"] == "model_not_found"

    def post(body: object) -> requests.Response:
        return requests.post(f"{base}/v1/embeddings", json=body, timeout=60)

    remote = _error(
        post({"model": model, "input": [{"type": "image_url", "image_url": {"url": "http://x/a.png"}}]}), 400
    )
    assert remote["code"] == "remote_url_refused" and remote["param"] == "input[0]"
    assert _error(post({"model": model, "input": ["data:image/png;base64,@@not-b64@@"]}), 400)["code"] == (
        "invalid_base64"
    )
    assert "over the limit" in _error(post({"model": model, "input": ["x"] * 9}), 400)["message"]
    assert _error(post({"model": model, "input": [["tokens"]]}), 400)["param"] == "input[0]"
    assert _error(post({"model": model, "input": [17, 18]}), 400)["param"] == "input[0]"
    assert _error(post({"model": model, "input": 12}), 400)["param"] == "input"
    assert _error(post({"model": model, "input": ""}), 400)["param"] == "input[0]"
    assert _error(post({"model": model, "input": "x", "encoding_format": "fp16"}), 400)["param"] == "encoding_format"
    assert _error(post({"model": model, "input": "x", "dimensions": "64"}), 400)["param"] == "dimensions"
    assert _error(post({"model": model, "input": "x", "dimensions": 0}), 400)["param"] == "dimensions"
    assert _error(post({"model": model, "input": "x", "surprise": 1}), 400)["param"] == "surprise"
    assert _error(post({"input": "x"}), 400)["param"] == "model"
    assert _error(post([1, 2]), 400)["type"] == "invalid_request_error"
    assert _error(requests.post(f"{base}/v1/embeddings", data=b"{nope", timeout=30), 400)
    # an image over the upload limit inside the body (200 kB here): 413 from its base64 length, never decoded
    big = _error(post({"model": model, "input": [data_uri(b"\x89PNG" + bytes(250_000))]}), 413)
    assert big["type"] == "invalid_request_error"
    # a 100 MB data URI: refused from Content-Length before the body is read
    huge = json.dumps({"model": model, "input": [data_uri(b"\0" * (75 << 20))]}).encode()
    assert len(huge) > 100_000_000
    r = requests.post(f"{base}/v1/embeddings", data=huge, headers={"Content-Type": "application/json"}, timeout=60)
    assert _error(r, 413)["message"]
    not_image = data_uri(b"plain text, not an image")
    assert _error(post({"model": model, "input": [not_image]}), 415)["type"] == "invalid_request_error"


def test_moderations_follow_the_policy_and_report_its_decision(live, client):
    png = png_bytes(1)
    parts = [{"type": "image_url", "image_url": {"url": data_uri(png)}}, {"type": "text", "text": "a cat"}]
    resp = client.moderations.create(model="shop", input=parts)
    assert resp.id.startswith("modr-") and resp.model == "shop" and len(resp.results) == 1
    res = resp.results[0].model_dump()
    check = requests.post(
        f"{live['base']}/v1/moderation/check",
        files={"file": ("a.png", png, "image/png")},
        data={"policy": "shop", "text": "a cat"},
        timeout=60,
    )
    assert check.status_code == 200, check.text
    want = check.json()
    assert res["flagged"] is True and res["blipsearch"]["decision"] == want["decision"] == "block"
    for cat in want["categories"]:  # the ITM probability confirmed each hit: that is its score
        assert res["categories"][cat["name"]] is cat["hit"] is True
        assert res["category_scores"][cat["name"]] == pytest.approx(cat["itm"], abs=1e-6)
        assert res["category_applied_input_types"][cat["name"]] == ["image"]
    assert res["categories"]["consistency"] is (not want["consistency"]["consistent"])
    assert res["category_applied_input_types"]["consistency"] == ["image", "text"]
    assert [t["category"] for t in res["blipsearch"]["triggers"] if t["check"] == "policy"] == [
        t["category"] for t in want["triggers"] if t["check"] == "policy"
    ]
    calm = client.moderations.create(model="calm", input=[data_uri(png), data_uri(png_bytes(2))]).results
    assert len(calm) == 2 and not any(r.flagged for r in calm)
    for r in calm:
        d = r.model_dump()
        assert d["blipsearch"]["decision"] == "allow" and not any(d["categories"].values())
        # no category passed the screen: its score is the screen score (1 + cosine) / 2
        for cat in d["blipsearch"]["categories"]:
            assert d["category_scores"][cat["name"]] == pytest.approx(cat["itc"], abs=1e-6)
            assert cat["itc"] == pytest.approx((1 + cat["itc_cosine"]) / 2, abs=1e-9)


def _png(im) -> bytes:
    import io

    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def test_text_only_moderations_run_the_text_rules_and_images_every_kind(live, client):
    texts = ["get FREE  Money now", "write to bob@example.com", "card 4111 1111 1111 1111", "a quiet day"]
    res = [r.model_dump() for r in client.moderations.create(model="rules", input=texts).results]
    spam, mail, card, _ = res
    assert [r["blipsearch"]["decision"] for r in res] == ["review", "flag", "block", "allow"]
    assert [r["flagged"] for r in res] == [True, True, True, False]
    assert spam["categories"]["text_rule:spam"] is True and spam["category_scores"]["text_rule:spam"] == 1.0
    assert spam["categories"]["text_rule:email"] is False and spam["category_scores"]["text_rule:email"] == 0.0
    assert mail["categories"]["text_rule:email"] is True
    assert mail["blipsearch"]["checks"]["text_rules"]["matches"][0]["match"] == "bob@example.com"
    assert card["categories"]["text_rule:card"] is True
    assert "4111 1111 1111 1111" not in json.dumps(card)  # card numbers are redacted in the evidence
    for r in res:  # no image: the hash list does not apply, the text rules read the text
        assert "hash_list:known" not in r["categories"]
        assert r["category_applied_input_types"]["text_rule:spam"] == ["text"]
    part = client.moderations.create(model="rules", input=[{"type": "text", "text": "free money"}]).results[0]
    assert part.model_dump()["categories"]["text_rule:spam"] is True
    # an image matched by the PDQ list: block, score 1 - distance / 256 (an exact copy: 1.0)
    img = client.moderations.create(model="rules", input=[data_uri(_png(photo(5))), data_uri(_png(photo(1)))])
    hit, miss = (r.model_dump() for r in img.results)
    assert hit["blipsearch"]["decision"] == "block" and hit["categories"]["hash_list:known"] is True
    assert hit["category_scores"]["hash_list:known"] == 1.0
    assert hit["category_applied_input_types"]["hash_list:known"] == ["image"]
    d = miss["blipsearch"]["checks"]["hash_lists"]["lists"][0]["distance"]
    assert miss["categories"]["hash_list:known"] is False
    assert miss["category_scores"]["hash_list:known"] == pytest.approx(1 - d / 256)
    assert hit["blipsearch"]["policy"] == "rules" and hit["blipsearch"]["version"] == "3"


def test_image_moderations_map_detector_scores(live, client, tmp_path):
    """A detector rule's category: the best score of a detection mapped to it, hit at the threshold."""
    pytest.importorskip("nudenet")
    from models.detectors.nudenet import LABELS

    pol = {"name": "det", "version": 1,
           "detectors": [{"name": "n", "detector": "nudenet", "classes": {c: "nudity" for c in LABELS},
                          "threshold": 0.0, "action": "review"}]}  # fmt: skip
    (live["settings"].policy_dir / "det.yaml").write_text(yaml.safe_dump(pol))
    r = client.moderations.create(model="det", input=[data_uri(_png(photo(2)))]).results[0].model_dump()
    boxes = [b for ev in r["blipsearch"]["checks"]["detectors"].values() for b in ev["detections"]]
    assert r["category_scores"]["detector:nudity"] == pytest.approx(max((b["score"] for b in boxes), default=0.0))
    assert r["categories"]["detector:nudity"] is bool(boxes)
    assert r["category_applied_input_types"]["detector:nudity"] == ["image"]
    with pytest.raises(openai.BadRequestError):  # detectors need an image
        client.moderations.create(model="det", input="words")


def test_hostile_moderation_requests(live, client):
    with pytest.raises(openai.NotFoundError):
        client.moderations.create(model="nope", input=[data_uri(png_bytes(1))])
    with pytest.raises(openai.BadRequestError) as text_only:
        client.moderations.create(model="shop", input="just words")
    assert text_only.value.body["param"] == "input[0]"
    assert "no check that applies to text" in text_only.value.body["message"]
    with pytest.raises(openai.BadRequestError) as mixed:  # one text among images: still refused, by position
        client.moderations.create(model="shop", input=[data_uri(png_bytes(1)), "words"])
    assert mixed.value.body["param"] == "input[1]"
    with pytest.raises(openai.BadRequestError):
        client.moderations.create(model="../shop", input=[data_uri(png_bytes(1))])
    two = [{"type": "image_url", "image_url": {"url": data_uri(png_bytes(i))}} for i in range(2)]
    with pytest.raises(openai.BadRequestError):
        client.moderations.create(model="shop", input=two)


def test_switched_off_and_key_rules(tmp_path, tiny_models):
    from fastapi.testclient import TestClient

    from api.app import create_app
    from storage.api_keys import create_key
    from storage.catalog import open_catalog

    off = Settings(data_dir=tmp_path / "a", model=str(tiny_models["blip-itm"]), openai_api=False)
    with TestClient(create_app(off)) as c:
        assert c.post("/v1/embeddings", json={"model": "m", "input": "x"}).status_code == 404
        assert c.post("/v1/embed", json={"texts": ["x"]}).status_code == 200  # the rest of the API stays
    keyed = Settings(data_dir=tmp_path / "b", model=str(tiny_models["blip-itm"]), read_access="key")
    key, _ = create_key(open_catalog(keyed.catalog_url()), "reader", "read")
    with serve(keyed) as base:
        sdk = openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as err:
            sdk.embeddings.create(model=keyed.model, input="x")
        assert err.value.status_code == 401 and err.value.body["type"] == "authentication_error"
        ok = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
        assert len(ok.embeddings.create(model=keyed.model, input="x").data[0].embedding) == 256


def test_chunked_oversized_body_and_overload_keep_openai_shape(live, tmp_path, tiny_models):
    from fastapi.testclient import TestClient

    from api.app import create_app

    def chunks():  # a data URI over the body cap (~1.3 MB here), chunked (no Content-Length): refused while read
        yield b'{"model": "photos", "input": ["data:image/png;base64,'
        for _ in range(3):
            yield b"A" * (1 << 20)
        yield b'"]}'

    r = requests.post(f"{live['base']}/v1/embeddings", data=chunks(), timeout=120)
    assert _error(r, 413)["type"] == "invalid_request_error"
    busy = Settings(data_dir=tmp_path / "busy", model=str(tiny_models["blip-itm"]), max_inflight_body_bytes=1000)
    with TestClient(create_app(busy)) as c:
        r = c.post("/v1/embeddings", json={"model": busy.model, "input": ["x" * 5000]})
        assert r.status_code == 503 and r.headers["retry-after"]
        assert r.json()["error"]["type"] == "server_error"
