"""The query language: weighted parts ranked by the documented score (brute force over the
stored vectors on Flat, re-scored exactly on IVF; BLIP and BLIP-2), composed and example-based
queries, the one-box parser (a table of cases), ``no_confident_match``, and bad input."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pytest
from typer.testing import CliRunner

from blipsearch.errors import InvalidInputError
from search.query.parser import parse
from search.query.parts import Part
from tests.helpers import FLOAT_TIE, make_image, write_images

TODAY = date(2026, 12, 2)  # a Wednesday


def _day(y: int, m: int, d: int) -> str:
    return f"{y:04d}-{m:02d}-{d:02d}T00:00:00+00:00"


PARSE_CASES = [
    ("red car -truck", [("red car", 1.0), ("truck", -1.0)], {}),
    ('"a dog" +2 "on a beach"', [("a dog", 1.0), ("on a beach", 2.0)], {}),
    ("beach -people", [("beach", 1.0), ("people", -1.0)], {}),
    ('2*"x y" z', [("x y", 2.0), ("z", 1.0)], {}),
    ("-0.5*cat dog", [("cat", -0.5), ("dog", 1.0)], {}),
    ("beach July 2023", [("beach", 1.0)], {"taken_after": _day(2023, 7, 1), "taken_before": _day(2023, 8, 1)}),
    ("dog 2019", [("dog", 1.0)], {"taken_after": _day(2019, 1, 1), "taken_before": _day(2020, 1, 1)}),
    ("kids last summer", [("kids", 1.0)], {"taken_after": _day(2026, 6, 1), "taken_before": _day(2026, 9, 1)}),
    ("snow last winter", [("snow", 1.0)], {"taken_after": _day(2025, 12, 1), "taken_before": _day(2026, 3, 1)}),
    ("cat since March", [("cat", 1.0)], {"taken_after": _day(2026, 3, 1)}),
    ("party 2023-07-14", [("party", 1.0)], {"taken_after": _day(2023, 7, 14), "taken_before": _day(2023, 7, 15)}),
    ("x 2019-2021", [("x", 1.0)], {"taken_after": _day(2019, 1, 1), "taken_before": _day(2022, 1, 1)}),
    ("x from May 2020 to June 2021", [("x", 1.0)], {"taken_after": _day(2020, 5, 1), "taken_before": _day(2021, 7, 1)}),
    ("x before 2020", [("x", 1.0)], {"taken_before": _day(2020, 1, 1)}),
    ("x after 2019", [("x", 1.0)], {"taken_after": _day(2020, 1, 1)}),
    ("x yesterday", [("x", 1.0)], {"taken_after": _day(2026, 12, 1), "taken_before": _day(2026, 12, 2)}),
    ("x last week", [("x", 1.0)], {"taken_after": _day(2026, 11, 23), "taken_before": _day(2026, 11, 30)}),
    ("x July 4", [("x", 1.0)], {"taken_after": _day(2026, 7, 4), "taken_before": _day(2026, 7, 5)}),
    ("beach in July 2023", [("beach", 1.0)], {"taken_after": _day(2023, 7, 1), "taken_before": _day(2023, 8, 1)}),
    ("taken:2023-07 dog", [("dog", 1.0)], {"taken_after": _day(2023, 7, 1), "taken_before": _day(2023, 8, 1)}),
    ("dog in:Spain", [("dog", 1.0)], {"place": "Spain"}),
    ('dog place:"New York"', [("dog", 1.0)], {"place": "New York"}),
    ('dog camera:"Canon EOS 5D"', [("dog", 1.0)], {"camera": "Canon EOS 5D"}),
    ("dog format:png", [("dog", 1.0)], {"fields": {"format": "png"}}),
    # ambiguous words stay visual unless marked
    ("Spain flag", [("Spain flag", 1.0)], {}),
    ("march of soldiers", [("march of soldiers", 1.0)], {}),
    ("summer dress", [("summer dress", 1.0)], {}),
    ('"2019" sign', [("2019", 1.0), ("sign", 1.0)], {}),
    ("t-shirt 12:30", [("t-shirt 12:30", 1.0)], {}),
]


@pytest.mark.parametrize(("text", "parts", "filters"), PARSE_CASES)
def test_parser_table(text, parts, filters):
    u = parse(text, TODAY)
    assert [(p.value, p.weight) for p in u.parts] == parts
    assert u.filters == filters
    assert u.to_dict()["filters"] == filters  # what the answer's `understood` shows


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("dog February 30", "February has at most 29 days"),
        ("dog 2023-02-30", "February 2023 has 28 days"),
        ("0*dog", "is 0"),
        ("nan*dog", "not a finite number"),
        ("1e308*dog", "over the limit"),
        ("-in:Spain dog", "cannot be negated"),
        ("dog +2", "has no term after it"),
        ("x from 2021 to 2019", "ends before it starts"),
        ("x 2019 2021", "exclude each other"),
        ("dog in:Spain in:France", "twice"),
        (" ".join(f"+1 w{i}" for i in range(40)), "more than"),
    ],
)
def test_parser_refuses(text, says):
    with pytest.raises(InvalidInputError, match=says):
        parse(text, TODAY)


# -- the score against brute force over the stored vectors --------------------------------


def _cli(*args: str) -> str:
    from cli.main import app

    out = CliRunner().invoke(app, list(args))
    assert out.exit_code == 0, out.stdout
    return out.stdout


@pytest.fixture(scope="module", params=["blip", "blip2"])
def built(request, tmp_path_factory, tiny_models):
    """A collection of 24 images (BLIP and BLIP-2) and an engine over it."""
    from blipsearch.config import Settings
    from service.indexing import index_paths

    embedder = request.getfixturevalue(f"{request.param}_embedder")
    root = tmp_path_factory.mktemp("ql")
    settings = Settings(data_dir=root / "data", batch_size=8, model=embedder.model_id)
    write_images(root / "imgs", 24)
    index_paths(settings, [root / "imgs"], "p", embedder=embedder, progress=False)
    return settings, embedder


def _engine(built, spec="Flat"):
    from service.collections import reindex
    from service.engines import open_engine

    settings, embedder = built
    reindex(settings, "p", spec)
    return open_engine(settings, "p", embedder=embedder)


def _reference(engine, parts: list[Part]) -> tuple[np.ndarray, np.ndarray]:
    """(ids, scores) of every live record by the documented score, from the stored vectors."""
    ids = np.arange(engine.coll.manifest.next_id, dtype=np.int64)
    ids = np.array([i for i in ids if engine.coll.locate(int(i)) is not None], np.int64)
    x = engine.index.vectors(ids).astype(np.float64)  # [n, v, dim]
    vecs = []
    for p in parts:
        v = np.asarray(engine.part_vectors(p), np.float64).reshape(-1, x.shape[-1])
        vecs.append(v / np.linalg.norm(v, axis=1, keepdims=True))
    if engine.embedder.vectors_per_image == 1:  # ITC of the normalised weighted sum
        q = sum(p.weight * v[0] for p, v in zip(parts, vecs, strict=True))
        s = x[:, 0, :] @ (q / np.linalg.norm(q))
    else:  # weighted sum of per-part max-sim
        s = sum(p.weight * (x @ v.T).reshape(len(ids), -1).max(axis=1) for p, v in zip(parts, vecs, strict=True))
    return ids, np.asarray(s)


def _check_top(hits, ids, ref, k, exclude=()):
    keep = ~np.isin(ids, list(exclude))
    ids, ref = ids[keep], ref[keep]
    order = np.argsort(-ref, kind="stable")
    got = [h.id for h in hits]
    assert len(got) == min(k, len(ids))
    by_id = dict(zip(ids.tolist(), ref.tolist(), strict=True))
    np.testing.assert_allclose([h.score for h in hits], [by_id[i] for i in got], atol=1e-4)
    kth = ref[order[len(got) - 1]]
    assert all(by_id[i] >= kth - FLOAT_TIE for i in got)  # the top k, up to float ties


QUERIES = {
    "negation": lambda: [Part("text", "a red square", 1.0), Part("text", "a blue circle", -1.0)],
    "weights": lambda: [Part("text", "a dog", 1.0), Part("text", "on a beach", 2.0), Part("text", "night", -0.5)],
    "composed": lambda: [Part("image", make_image(3), 1.0), Part("text", "at night", 0.7)],
    "feedback": lambda: [Part("record", 1, 1.0), Part("record", 5, 1.0), Part("record", 7, -1.0)],
    "feedback+text": lambda: [Part("text", "green", 1.0), Part("record", 2, 1.0), Part("record", 9, -1.0)],
}


@pytest.mark.parametrize("spec", [None, pytest.param("IVF2,Flat", marks=pytest.mark.slow)])
def test_every_query_kind_is_the_documented_score(built, spec):
    engine = _engine(built, spec or "Flat")
    for name, make in QUERIES.items():
        parts = make()
        res = engine.execute(engine.plan_query(parts, 6))
        ids, ref = _reference(engine, parts)
        examples = [p.value for p in parts if p.kind == "record"]
        if spec is None:
            _check_top(res.hits, ids, ref, 6, examples)
            assert res.explain["ran"]["score_exact"] is True, name
        else:  # IVF: re-scored exactly over the positive parts' shortlists
            by_id = dict(zip(ids.tolist(), ref.tolist(), strict=True))
            np.testing.assert_allclose([h.score for h in res.hits], [by_id[h.id] for h in res.hits], atol=1e-4)
            assert not set(examples) & {h.id for h in res.hits}
        assert res.explain["plan"]["parts"] == [p.describe() for p in parts], name


# -- the API and the CLI -----------------------------------------------------------------


@pytest.fixture(scope="module")
def client(tmp_path_factory, blip_embedder, tiny_models):
    from fastapi.testclient import TestClient

    from api.app import create_app
    from blipsearch.config import Settings
    from service.indexing import index_paths

    root = tmp_path_factory.mktemp("qlapi")
    settings = Settings(data_dir=root / "data", batch_size=8, model=str(tiny_models["blip-itm"]))
    write_images(root / "imgs", 10)
    write_images(root / "imgs", 4, start=10, fmt="PNG")
    index_paths(settings, [root / "imgs"], "photos", embedder=blip_embedder, progress=False)
    app = create_app(settings)
    app.state.blip._embedders[blip_embedder.model_id] = blip_embedder
    with TestClient(app, raise_server_exceptions=False) as c:
        c.settings = settings
        yield c


def _post(client, path, status=200, **body):
    r = client.post(f"/v1/search/{path}", json={"collection": "photos", **body})
    assert r.status_code == status, r.text
    return r.json()


def test_api_text_understood_and_filters(client):
    out = _post(client, "text", query="a red square -blue format:PNG", k=5, explain=True, today="2026-12-02")
    assert out["understood"]["parts"] == [
        {"kind": "text", "weight": 1.0, "text": "a red square", "source": "a red square"},
        {"kind": "text", "weight": -1.0, "text": "blue", "source": "-blue"},
    ]
    assert out["understood"]["filters"] == {"fields": {"format": "PNG"}}
    assert len(out["results"]) == 4 and all(r["uri"].endswith(".png") for r in out["results"])
    plan = out["explain"]["plan"]
    assert plan["query"] == "parts" and [p["weight"] for p in plan["parts"]] == [1.0, -1.0]
    assert out["no_confident_match"] is False  # not re-ranked: nothing to judge by
    # raw: the same words are one visual text, nothing parsed
    raw = _post(client, "text", query="a red square -blue format:PNG", raw=True)
    assert raw["understood"] == {
        "parts": [
            {
                "kind": "text",
                "weight": 1.0,
                "text": "a red square -blue format:PNG",
                "source": "a red square -blue format:PNG",
            }
        ],
        "filters": {},
        "filter_sources": {},
    }
    assert len(raw["results"]) == 10  # default k, no filter


def test_api_feedback_text_and_similar(client, blip_embedder):
    both = _post(client, "text", query="a red square", positive_ids=[1, 2], negative_ids=[3], k=20)
    ids = [r["id"] for r in both["results"]]
    assert not {1, 2, 3} & set(ids) and len(ids) == 11  # the examples are never returned
    alone = _post(client, "similar", positive_ids=[1, 2], negative_ids=[3], k=20)
    assert [p["id"] for p in alone["understood"]["parts"]] == [1, 2, 3]
    assert not {1, 2, 3} & {r["id"] for r in alone["results"]}
    one = _post(client, "similar", id=4, k=3)  # the classic "more like this" is unchanged
    assert 4 not in {r["id"] for r in one["results"]} and len(one["results"]) == 3


@pytest.mark.parametrize(
    ("path", "body", "says"),
    [
        ("text", {"query": ""}, "empty"),
        ("text", {"query": "2019"}, "empty"),
        ("text", {"query": "-cat -dog"}, "only negative"),
        ("text", {"query": "0*cat"}, "is 0"),
        ("text", {"query": "NaN*cat"}, "not a finite"),
        ("text", {"query": "1e308*cat"}, "over the limit"),
        ("text", {"query": "dog February 30"}, "not a date"),
        ("text", {"query": "dog colour:red"}, "no field 'colour'"),
        ("text", {"query": "dog", "positive_ids": [999]}, "record 999"),
        ("text", {"query": "dog", "positive_ids": [1], "negative_ids": [1]}, "both"),
        ("text", {"query": "dog", "positive_ids": list(range(10_000))}, ""),
        ("text", {"query": " ".join(["a -b"] * 20)}, "more than"),
        ("text", {"query": "cat -dog", "mode": "keyword"}, "mode keyword"),
        ("text", {"query": "cat", "filters": {"added_after": "2020-01-01"}, "today": "2026-01-01"}, None),
        ("text", {"query": "cat added:2020", "filters": {"added_after": "2020-01-01"}}, "give it once"),
        ("similar", {"negative_ids": [1]}, "only negative"),
        ("similar", {}, "empty"),
    ],
)
def test_api_bad_queries_are_422_naming_the_problem(client, path, body, says):
    if says is None:  # a well-formed neighbour of the bad cases answers
        _post(client, path, **body)
        return
    out = _post(client, path, 422, **body)
    assert says.lower() in json.dumps(out).lower()


def test_api_composed_image_and_text(client, blip_embedder):
    import io

    buf = io.BytesIO()
    make_image(3).save(buf, format="PNG")
    files = {"file": ("q.png", buf.getvalue(), "image/png")}
    form = {"collection": "photos", "query": "at night", "image_weight": "2", "k": "4", "explain": "true"}
    r = client.post("/v1/search/image", files=files, data=form)
    assert r.status_code == 200, r.text
    out = r.json()
    assert [(p["kind"], p["weight"]) for p in out["understood"]["parts"]] == [("text", 1.0), ("image", 2.0)]
    img = blip_embedder.embed_images([make_image(3)])[0]
    txt = blip_embedder.embed_texts(["at night"])[0]
    q = 2 * img + txt
    q /= np.linalg.norm(q)
    engine = client.app.state.blip.engine("photos")
    stored = engine.index.vectors(np.array([r["id"] for r in out["results"]], np.int64))[:, 0, :]
    np.testing.assert_allclose([r["score"] for r in out["results"]], stored @ q, atol=1e-4)  # the documented score
    assert out["explain"]["plan"]["score"].startswith("cosine of the normalised weighted sum")
    # every option works for the query kind or is refused
    for extra, says in [
        ({"rerank": "true"}, "image → image"),
        ({"target": "texts"}, "target texts"),
        ({"image_weight": "2", "query": ""}, "add query"),
        ({"target": "captions", "query": "x"}, "captions takes an image alone"),
        ({"target": "captions", "rerank": "true", "query": ""}, "captions"),
    ]:
        data = {"collection": "photos", **extra}
        r = client.post("/v1/search/image", files=files, data=data)
        assert r.status_code == 422 and says in r.json()["detail"], (extra, r.text)


def test_no_confident_match_follows_the_threshold(client):
    body = {"query": "a red square", "rerank": True, "rerank_k": 8, "k": 5}
    out = _post(client, "text", **body)
    best = max(r["itm_score"] for r in out["results"])
    old = client.settings.no_match_threshold
    try:
        client.settings.no_match_threshold = min(1.0, best + 1e-3)
        assert _post(client, "text", **body)["no_confident_match"] is True
        client.settings.no_match_threshold = max(0.0, best - 1e-3)
        assert _post(client, "text", **body)["no_confident_match"] is False
        # a weighted query re-ranks with its positive text parts, and is judged the same way
        client.settings.no_match_threshold = 1.0
        weighted = _post(client, "text", **{**body, "query": "a red square -blue"})
        assert weighted["no_confident_match"] is True and weighted["results"][0]["itm_score"] is not None
    finally:
        client.settings.no_match_threshold = old
