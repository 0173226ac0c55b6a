#!/usr/bin/env python
"""ITM re-rank latency: blipsearch vs the naive transformers forward, both directions.

Per query with k candidates, on a randomly initialised base-size BLIP (ViT-B/16 at 384 px +
BERT-base, the FLOPs of blip-itm-base-coco):

* image→text (one image, k texts)
  - naive_per_pair: ``BlipForImageTextRetrieval(pixel_values, input_ids, use_itm_head=True)``
    once per pair (the ViT runs for every pair);
  - naive_batched: one ViT forward, then the text encoder over k pairs with the image tokens
    expanded k times (the image's cross-attention K/V are projected k times);
  - blipsearch: one ViT forward, image passed once and broadcast (K/V projected once).
* text→image (one text, k images)
  - naive_per_pair: as above;
  - blipsearch_recompute: ViT over the k candidates in batches, then batched ITM;
  - blipsearch_cached: tokens from the fp16 feature cache, then batched ITM.

    python scripts/bench/rerank.py [--quick] [--ks 16 64] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import base_model, machine_line, timeit, update_markdown, write_result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ks", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--quick", action="store_true", help="k = 16 only, one timed run")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    if args.quick:
        args.ks, args.repeat = [16], 1

    import torch
    from transformers import BlipForImageTextRetrieval

    from blipsearch.synthetic import make_image
    from models import load_embedder, load_itm

    path = base_model()
    emb = load_embedder(str(path), device=args.device)
    scorer = load_itm(emb)
    ref = BlipForImageTextRetrieval.from_pretrained(str(path)).to(emb.model.device, emb.torch_dtype).eval()
    kmax = max(args.ks)
    images = [make_image(i, (640, 480)) for i in range(kmax)]
    pixels = emb.preprocess(images)
    colors, shapes = ["red", "green", "blue", "black"], ["dog", "cat", "square", "circle"]
    texts = [f"a photo of a {colors[i % 4]} {shapes[(i // 4) % 4]} on the table number {i}" for i in range(kmax)]
    cached_tokens = scorer.vision_tokens(pixels)
    dev = emb.model.device

    def pixel_tensor(i: int) -> torch.Tensor:
        return torch.as_tensor(pixels[i : i + 1]).to(dev, emb.torch_dtype)

    rows = []
    for k in args.ks:
        ids, mask = scorer.tokenize(texts[:k])

        def i2t_naive_per_pair() -> None:
            with torch.inference_mode():
                for j in range(k):
                    ref(
                        input_ids=ids[j : j + 1],
                        attention_mask=mask[j : j + 1],
                        pixel_values=pixel_tensor(0),
                        use_itm_head=True,
                    )

        def i2t_naive_batched() -> None:
            with torch.inference_mode():
                tok = ref.vision_model(pixel_values=pixel_tensor(0)).last_hidden_state
                for s in range(0, k, scorer.batch_size):
                    n = min(scorer.batch_size, k - s)
                    out = ref.text_encoder(
                        input_ids=ids[s : s + n],
                        attention_mask=mask[s : s + n],
                        encoder_hidden_states=tok.expand(n, -1, -1).contiguous(),
                    ).last_hidden_state
                    ref.itm_head(out[:, 0, :])

        def i2t_ours() -> None:
            scorer.score_image_vs_texts(scorer.vision_tokens(pixels[:1]), texts[:k])

        t_ids, t_mask = ids[:1], mask[:1]

        def t2i_naive_per_pair() -> None:
            with torch.inference_mode():
                for j in range(k):
                    ref(input_ids=t_ids, attention_mask=t_mask, pixel_values=pixel_tensor(j), use_itm_head=True)

        def t2i_recompute() -> None:
            toks = torch.cat(
                [
                    scorer.vision_tokens(pixels[s : min(s + scorer.batch_size, k)])
                    for s in range(0, k, scorer.batch_size)
                ]
            )
            scorer.score_text_vs_images(texts[0], toks)

        feats16 = cached_tokens[:k].to(torch.float16).cpu().numpy()

        def t2i_cached() -> None:
            scorer.score_text_vs_images(texts[0], torch.from_numpy(feats16).to(dev, emb.torch_dtype))

        for direction, name, fn in [
            ("image→text", "naive_per_pair", i2t_naive_per_pair),
            ("image→text", "naive_batched", i2t_naive_batched),
            ("image→text", "blipsearch", i2t_ours),
            ("text→image", "naive_per_pair", t2i_naive_per_pair),
            ("text→image", "blipsearch_recompute", t2i_recompute),
            ("text→image", "blipsearch_cached", t2i_cached),
        ]:
            # The per-pair loop is already k sequential forwards; one timed run of it suffices.
            slow = name == "naive_per_pair"
            r = timeit(fn, repeat=1 if slow else args.repeat, warmup=0 if slow else 1)
            rows.append(
                {"direction": direction, "k": k, "method": name, "ms_per_query": r["median_s"] * 1e3, "runs": r["runs"]}
            )
            print(f"{direction} k={k:<3} {name:<22} {r['median_s'] * 1e3:10.1f} ms", flush=True)

    def ms(direction: str, k: int, method: str) -> float:
        return next(r["ms_per_query"] for r in rows if (r["direction"], r["k"], r["method"]) == (direction, k, method))

    ratios = {}
    for k in args.ks:
        ratios[f"i2t_k{k}_vs_naive_per_pair"] = ms("image→text", k, "naive_per_pair") / ms(
            "image→text", k, "blipsearch"
        )
        ratios[f"i2t_k{k}_vs_naive_batched"] = ms("image→text", k, "naive_batched") / ms("image→text", k, "blipsearch")
        ratios[f"t2i_k{k}_cached_vs_naive"] = ms("text→image", k, "naive_per_pair") / ms(
            "text→image", k, "blipsearch_cached"
        )
    result = {
        "settings": {
            "model": "random base-size BLIP (ViT-B/16 384px, BERT-base)",
            "device": str(dev),
            "dtype": str(emb.torch_dtype),
            "itm_batch_size": scorer.batch_size,
            "ks": args.ks,
            "repeat": args.repeat,
            "first_token": scorer.first_token,
        },
        "rows": rows,
        "speedups": ratios,
    }
    out = write_result("rerank", result)
    from common import machine

    lines = [
        "## ITM re-rank latency (`scripts/bench/rerank.py`)",
        "",
        f"Machine: {machine_line(machine())}. Device {dev}, {emb.torch_dtype}, ITM batch {scorer.batch_size}, "
        f"median of {args.repeat} run(s) (naive per-pair: 1 run of k forwards). Random base-size BLIP. "
        f"Reproduce: `python scripts/bench/rerank.py{' --quick' if args.quick else ''}`.",
        "",
        "| direction | k | method | ms / query |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['direction']} | {r['k']} | {r['method']} | {r['ms_per_query']:.0f} |" for r in rows]
    lines += [
        "",
        "Speed-ups (naive time / blipsearch time): " + ", ".join(f"{k} **{v:.1f}×**" for k, v in ratios.items()),
    ]
    update_markdown("rerank", "\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
