"""The BLIP / LAVIS retrieval protocol: ITC ranking, then ITM re-rank of the top ``k_test``.

Both directions are ranked through FAISS indexes of the chosen spec (exact ``Flat`` by
default), so quality can be compared across index types; an ANN index that misses a ground
truth within its search depth counts it as a miss. ITM re-ranking uses the LAVIS score:
ITM match logit + ITC similarity, for the top ``k_test`` candidates of each query.

Captions go through BLIP's ``pre_caption`` (``text_preprocess="blip"``, at most ``max_words``
words, 30 as in BLIP's retrieval evaluation) before both ITC and ITM, as the papers' protocol
does. Images are decoded in full unless ``draft`` (the model's input side) asks for JPEG draft
decoding. The result's ``mode`` says which ran: ``exact`` (fp32 weights, full decode: the
reference computation) or ``fast`` (anything else).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from evaluation.data import RetrievalSet
from evaluation.metrics import retrieval_metrics
from media.decode import decode_image, read_file
from models.base import Embedder
from models.itm import ItmScorer, softmax_match
from models.text_preprocess import DEFAULT_MAX_WORDS, TextPreprocessor
from rerank.fusion import SCORE_FUSIONS
from search.vector_index import VectorIndex

LAVIS = SCORE_FUSIONS["itm+itc"]  # the papers' re-rank score


class _Timer:
    def __init__(self) -> None:
        self.stages: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        out = fn()
        self.stages[name] = round(time.perf_counter() - t0, 4)
        return out


def _embed_images(
    embedder: Embedder, data: RetrievalSet, keep_tokens: bool, draft: int | None = None
) -> tuple[np.ndarray, list[np.ndarray]]:
    embs: list[np.ndarray] = []
    tokens: list[np.ndarray] = []
    for s in range(0, len(data.images), embedder.batch_size):
        paths = data.images[s : s + embedder.batch_size]
        imgs = [decode_image(read_file(p, 1 << 30).data, 10**9, draft=draft).image for p in paths]
        px = embedder.preprocess(imgs)
        if keep_tokens:
            e, t = embedder.embed_pixels_with_tokens(px)
            tokens.extend(t)
        else:
            e = embedder.embed_pixels(px)
        embs.append(e)
    return np.concatenate(embs), tokens


def _rank(index: VectorIndex, queries: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """[nq, depth] candidate ids and ITC scores (padded with -1 / -inf if fewer)."""
    ids = np.full((len(queries), depth), -1, np.int64)
    scores = np.full((len(queries), depth), -np.inf, np.float32)
    for q in range(len(queries)):
        i, s = index.search(queries[q], depth)
        ids[q, : len(i)], scores[q, : len(s)] = i, s
    return ids, scores


def _rerank(order: np.ndarray, itc: np.ndarray, itm_logits: np.ndarray) -> np.ndarray:
    """Re-order the first len(itm_logits) candidates by the LAVIS fusion (ITM match logit + ITC,
    rerank/fusion/itm_itc.py; ties: ITC order), keep the rest."""
    n = len(itm_logits)
    fused = LAVIS.score(itc[:n], itm_logits, softmax_match(itm_logits))
    top = order[:n][np.lexsort((np.arange(n), -fused))]
    return np.concatenate([top, order[n:]])


def evaluate(
    embedder: Embedder,
    data: RetrievalSet,
    *,
    scorer: ItmScorer | None = None,
    k_test: int = 128,
    index_spec: str = "Flat",
    text_preprocess: str = "blip",
    max_words: int | None = DEFAULT_MAX_WORDS,
    draft: int | None = None,
) -> dict[str, Any]:
    timer = _Timer()
    n_img, n_txt = len(data.images), len(data.texts)
    dtype = str(getattr(embedder, "torch_dtype", "float32")).removeprefix("torch.")
    prepare = TextPreprocessor(text_preprocess, max_words)
    texts = [prepare(t) for t in data.texts]
    img_emb, tokens = timer.run("embed_images", lambda: _embed_images(embedder, data, scorer is not None, draft))
    txt_emb = timer.run("embed_texts", lambda: embedder.embed_texts(texts))
    vpi = embedder.vectors_per_image

    def build() -> tuple[VectorIndex, VectorIndex]:
        ti = VectorIndex.empty(index_spec, embedder.dim, 1)
        ii = VectorIndex.empty(index_spec, embedder.dim, vpi)
        if not ti.cpu.is_trained:
            ti.train(txt_emb)
            ii.train(img_emb.reshape(-1, embedder.dim))
        ti.add(np.arange(n_txt), txt_emb)
        ii.add(np.arange(n_img), img_emb)
        return ti, ii

    text_index, image_index = timer.run("build_index", build)
    depth_tr, depth_ir = min(n_txt, max(k_test, 10)), min(n_img, max(k_test, 10))
    tr_ids, tr_sc = timer.run("itc_search_tr", lambda: _rank(text_index, img_emb, depth_tr))
    ir_ids, ir_sc = timer.run("itc_search_ir", lambda: _rank(image_index, txt_emb, depth_ir))
    result: dict[str, Any] = {
        "n_images": n_img,
        "n_texts": n_txt,
        "model_id": embedder.model_id,
        "index_spec": index_spec,
        "k_test": k_test,
        "mode": "exact" if dtype == "float32" and draft is None else "fast",
        "dtype": dtype,
        "jpeg_draft": draft is not None,
        "text_preprocess": text_preprocess,
        "max_words": max_words,
        "itc": retrieval_metrics(tr_ids, ir_ids, data.img_to_txts, data.txt_to_img),
    }
    if scorer is not None:
        kt_tr, kt_ir = min(k_test, depth_tr), min(k_test, depth_ir)

        def rerank_tr() -> np.ndarray:
            out = np.empty_like(tr_ids)
            for i in range(n_img):
                cand = tr_ids[i, :kt_tr]
                tok = torch.from_numpy(np.asarray(tokens[i]))[None]
                logits = scorer.score_image_vs_texts(tok, [texts[c] for c in cand])
                out[i] = _rerank(tr_ids[i], tr_sc[i], logits)
            return out

        def rerank_ir() -> np.ndarray:
            out = np.empty_like(ir_ids)
            for t in range(n_txt):
                cand = ir_ids[t, :kt_ir]
                tok = torch.from_numpy(np.stack([np.asarray(tokens[c]) for c in cand]))
                logits = scorer.score_text_vs_images(texts[t], tok)
                out[t] = _rerank(ir_ids[t], ir_sc[t], logits)
            return out

        tr_itm = timer.run("itm_rerank_tr", rerank_tr)
        ir_itm = timer.run("itm_rerank_ir", rerank_ir)
        result["itm"] = retrieval_metrics(tr_itm, ir_itm, data.img_to_txts, data.txt_to_img)
    result["timing_s"] = timer.stages
    return result


def format_table(result: dict[str, Any]) -> str:
    cols = ["tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10", "r_mean", "tr_mrr", "ir_mrr"]
    lines = [
        f"{result['n_images']} images, {result['n_texts']} texts, "
        f"index {result['index_spec']}, k_test {result['k_test']}",
        f"mode {result['mode']} ({result['dtype']}, {'JPEG draft' if result['jpeg_draft'] else 'full'} decode), "
        f"captions: {result['text_preprocess']} pre-processing, max {result['max_words']} words",
        f"{'':<10}" + "".join(f"{c:>9}" for c in cols),
    ]
    for stage in ("itc", "itm"):
        if stage in result:
            m = result[stage]
            cells = "".join(f"{m[c]:>9.4f}" if c.endswith("mrr") else f"{m[c]:>9.2f}" for c in cols)
            lines.append(f"{stage.upper() if stage == 'itc' else 'ITC+ITM':<10}" + cells)
    lines.append("time (s): " + ", ".join(f"{k} {v:.2f}" for k, v in result["timing_s"].items()))
    return "\n".join(lines)
