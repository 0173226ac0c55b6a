// Scores in plain words on result cards ("match 53%"), and the raw numbers on demand, the one
// that orders the results first. ITC is a cosine in [-1, 1], shown as (1 + cos) / 2 (the scale
// moderation thresholds use); ITM is a probability; BM25 and RRF have no fixed scale, so keyword
// and hybrid results say how they were ranked instead.
import { fmtScore } from "./dom.js";

const pct = (x) => `${Math.round(Math.max(0, Math.min(1, x)) * 100)}%`;
export const itcPercent = (cos) => pct((1 + Number(cos)) / 2);

// {plain, raw, orderedBy}: the words and numbers for one result of a query of this kind.
export function describe(r, how, mode) {
  if (r.itm_score !== null && r.itm_score !== undefined) {
    const fused = Math.abs(r.score - r.itm_score) > 1e-9;
    const orderedBy = fused ? "fused" : "ITM";
    const rest = fused ? `ITM ${fmtScore(r.itm_score)} · ITC ${fmtScore(r.itc_score)}` : `ITC ${fmtScore(r.itc_score)}`;
    return { plain: `match ${pct(r.itm_score)} · re-ranked`, raw: `${orderedBy} ${fmtScore(r.score)} ↓ · ${rest}`, orderedBy };
  }
  if (how === "text" && mode === "keyword") {
    return { plain: "keyword match", raw: `BM25 ${fmtScore(r.score)} ↓`, orderedBy: "BM25" };
  }
  if (how === "text" && mode === "hybrid") {
    return { plain: `match ${itcPercent(r.itc_score)} · words + meaning`, raw: `RRF ${fmtScore(r.score)} ↓ · ITC ${fmtScore(r.itc_score)}`, orderedBy: "RRF" };
  }
  const word = how === "similar" ? "similar" : "match";
  return { plain: `${word} ${itcPercent(r.itc_score)}`, raw: `ITC ${fmtScore(r.itc_score)} ↓`, orderedBy: "ITC" };
}
