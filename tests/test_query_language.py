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
        s = (x[:, 0, :] @ (q / np.linalg.norm(q)))
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
