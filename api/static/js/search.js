// The search screen: text (vector / keyword / hybrid), image (drop, paste, choose) and "more like
// this" queries, re-ranking, the relevance cut-off, filters, and the result grid with load more.
import * as api from "./api.js";
import { $, fmtDate, h, notify, showError } from "./dom.js";
import * as filters from "./filters.js";
import * as prefs from "./prefs.js";
import { describe, itcPercent } from "./scores.js";
import { filtersOf, hasFilters } from "./state.js";
import * as understood from "./understood.js";

// A touch screen without a mouse: no drag and drop, no Ctrl+V.
const touchOnly = () => matchMedia("(pointer: coarse)").matches && !matchMedia("(pointer: fine)").matches;

const PAGE = 24;
const MAX_K = 1000;
let ctx = null; // {state, results, collection, kind, more}
let imageQuery = null; // the last query image (a File): not in the URL
let navigate = () => {}; // set by main.js: (state, {replace}) => void
let openDetail = () => {};

export function init({ onNavigate, onOpen }) {
  navigate = onNavigate;
  openDetail = onOpen;
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    imageQuery = null;
    const f = formState();
    const same = shown && f.c === shown.c; // 👍/👎 ids belong to one collection
    navigate({ ...f, sim: null, like: same ? f.like : [], unlike: same ? f.unlike : [], k: Number($("k").value) });
  });
  for (const id of ["rerank", "rerank-k", "k", "collection"]) $(id).addEventListener("change", syncControls);
  document.querySelectorAll("input[name=mode]").forEach((r) => r.addEventListener("change", syncControls));
  $("min-score").addEventListener("input", showMin);
  $("min-slider").addEventListener("input", slide);
  $("raw-scores").checked = prefs.rawScores();
  $("raw-scores").addEventListener("change", () => { prefs.setRawScores($("raw-scores").checked); if (ctx) render(ctx.body); });
  $("options-toggle").addEventListener("click", () => {
    const open = $("view-search").classList.toggle("controls-open");
    $("options-toggle").setAttribute("aria-expanded", String(open));
  });
  $("drop-help").textContent = touchOnly()
    ? "Search by image: tap here to choose a photo or take one"
    : "Search by image: drop an image here, paste one (Ctrl+V), or press Enter to choose a file";
  $("image-file").addEventListener("change", (e) => { if (e.target.files[0]) searchImage(e.target.files[0]); });
  const drop = $("drop");
  drop.addEventListener("click", (e) => { if (touchOnly() && !e.target.closest("button")) $("image-file").click(); });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = [...e.dataTransfer.files].find((f) => f.type.startsWith("image/")) || e.dataTransfer.files[0];
    if (file) searchImage(file);
  });
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("image-file").click(); }
  });
  document.addEventListener("paste", (e) => {
    if ($("view-search").hidden) return;
    const item = [...(e.clipboardData?.items || [])].find((i) => i.type.startsWith("image/"));
    if (item) { e.preventDefault(); searchImage(item.getAsFile()); }
  });
  $("filters-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const next = filters.collect(formState());
    const bad = filters.problem(next);
    if (bad) { notify(bad, "error"); return; }
    navigate({ ...next, k: PAGE });
  });
  $("f-add").addEventListener("click", addField);
  $("f-value").addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); addField(); } });
  $("f-clear").addEventListener("click", () => navigate({ ...formState(), ...filters.CLEARED, sort: "", k: PAGE }));
  $("load-more").addEventListener("click", loadMore);
  new IntersectionObserver((entries) => {
    if (entries.some((x) => x.isIntersecting) && !$("load-more").hidden && !$("load-more").disabled) loadMore();
  }, { rootMargin: "200px" }).observe($("load-more"));
}

// The state the controls show, on top of the current one (filters come from the URL state).
let shown = null;
function formState() {
  const min = $("min-score").value.trim();
  return {
    ...shown,
    c: $("collection").value,
    q: $("query").value.trim(),
    mode: document.querySelector("input[name=mode]:checked").value,
    rerank: $("rerank").checked,
    rk: Number($("rerank-k").value) || 64,
    min: min === "" || !isFinite(Number(min)) ? null : Number(min),
    k: Number($("k").value),
    target: $("target").value,
  };
}

// The cut-off's scale: ITC cosines lie in [-1, 1] (typical matches 0.2-0.5 on real models,
// below 0 on random ones); the ITM probability of a re-ranked query in [0, 1].
function cutoffRange() { return $("rerank").checked ? [0, 1] : [-1, 1]; }

function syncControls() {
  const rr = $("rerank").checked;
  $("rerank-k").disabled = !rr;
  $("min-label").textContent = rr ? "Min ITM probability" : "Min ITC similarity";
  const [lo, hi] = cutoffRange();
  for (const id of ["min-slider", "min-score"]) { $(id).min = String(lo); $(id).max = String(hi); }
  const kind = selectedKind();
  $("query").disabled = kind === "texts";
  for (const id of ["target", "mode-keyword", "mode-hybrid"]) $(id).disabled = kind === "texts";
  $("query").placeholder = kind === "texts" ? "a text collection: search it with an image"
    : "a dog running on the beach (empty: browse everything, newest first)";
  // BM25 scores have no fixed scale: keyword mode has no cut-off.
  $("cutoff").hidden = document.querySelector("input[name=mode]:checked").value === "keyword" && kind !== "texts";
  showMin();
}
function showMin() {
  const raw = $("min-score").value.trim();
  const v = Number(raw);
  $("min-slider").value = raw === "" ? $("min-slider").min : String(v);
  if (raw === "" || !isFinite(v)) $("min-score-out").textContent = "off";
  else $("min-score-out").textContent = $("rerank").checked ? `match ≥ ${Math.round(v * 100)}%` : `match ≥ ${itcPercent(v)}`;
}
function slide() {
  const v = Number($("min-slider").value);
  $("min-score").value = v <= Number($("min-slider").min) ? "" : v.toFixed(2);
  showMin();
}
function selectedKind() {
  const o = $("collection").selectedOptions[0];
  return o ? o.dataset.kind : "images";
}

function addField() {
  const key = $("f-key").value;
  const value = $("f-value").value.trim();
  if (!key || !value) { $("f-value").focus(); return; }
  $("f-value").value = "";
  navigate({ ...filters.collect(formState()), fields: [...shown.fields, { key, value }], k: PAGE });
}

export async function setCollections(list, wanted) {
  const sel = $("collection");
  sel.replaceChildren(...list.map((c) => h("option", { value: c.name, "data-kind": c.kind === "images" ? "images" : "texts",
    text: `${c.name} (${c.count}${c.kind === "images" ? "" : " texts"})` })));
  const name = wanted && list.some((c) => c.name === wanted) ? wanted : prefs.pickCollection(list);
  if (name) sel.value = name;
  return sel.value;
}

// The warning shown over the results when the collection's model is a random test checkpoint.
function modelBanner(coll) {
  const box = $("model-banner");
  box.hidden = !(coll && coll.random_model);
  if (!box.hidden) {
    box.textContent = `“${coll.name}” was indexed with a randomly initialised test model (the demo's): `
      + "its scores and captions mean nothing, so low or negative scores and odd captions are expected. "
      + "Index with a real checkpoint (BLIPSEARCH_MODEL=Salesforce/blip-itm-base-coco) for real search.";
  }
}

// Show a state in the controls and run its query (called by main.js on every navigation).
export async function show(state) {
  shown = state;
  const list = await api.collections();
  const c = await setCollections(list, state.c);
  if (!list.length) {
    setStatus("No collections yet: create one on the Upload screen, or index with `blipsearch index`.");
    $("results").replaceChildren();
    modelBanner(null);
    return;
  }
  prefs.rememberCollection(c);
  modelBanner(list.find((x) => x.name === c));
  $("query").value = state.q;
  document.querySelector(`input[name=mode][value=${state.mode}]`).checked = true;
  $("rerank").checked = state.rerank;
  $("rerank-k").value = state.rk;
  $("min-score").value = state.min === null || state.min === undefined ? "" : String(state.min);
  $("k").value = [12, 24, 48, 96].includes(state.k) ? state.k : $("k").value;
  // A text collection is always searched for texts (the control is off there); an image
  // collection has images and captions to find, never "texts".
  $("target").value = ["images", "captions"].includes(state.target) ? state.target : "images";
  filters.fill(state);
  filters.setSortable(!!(state.q || state.like.length || state.unlike.length) && state.sim === null);
  syncControls();
  const useImage = !state.q && state.sim === null && imageQuery && ctx && ctx.state.c === c;
  if (!useImage) imageQuery = null;
  showQueryChips(state, useImage);
  loadKeys(c);
  if (state.sim !== null) await run({ ...state, c }, "similar");
  else if (state.q || state.like.length || state.unlike.length) await run({ ...state, c }, "text");
  else if (useImage) await run({ ...state, c }, "image");
  else await run({ ...state, c }, "browse"); // an empty query: everything, newest first
}

// Chips for the active filters and for the query itself: "similar to #182" and the query image,
// each removable (back to browsing, with the filters kept).
function showQueryChips(state, useImage) {
  const extra = [];
  if (state.sim !== null) extra.push({ label: `similar to #${state.sim}`, remove: () => navigate({ ...formState(), sim: null, k: PAGE }) });
  if (useImage) extra.push({ label: `image: ${imageQuery.name || "pasted image"}`, remove: clearImage });
  for (const id of state.like) extra.push({ label: `more like #${id}`, remove: () => navigate({ ...formState(), like: state.like.filter((x) => x !== id), k: PAGE }) });
  for (const id of state.unlike) extra.push({ label: `less like #${id}`, remove: () => navigate({ ...formState(), unlike: state.unlike.filter((x) => x !== id), k: PAGE }) });
  filters.chips(state, (next) => navigate({ ...next, k: PAGE }), extra);
}

function clearImage() {
  imageQuery = null;
  $("query-preview").hidden = true;
  $("query-preview").replaceChildren();
  navigate({ ...formState(), q: "", sim: null, k: PAGE }, { replace: true });
}

async function loadKeys(c) {
  try {
    const info = await api.get(`/v1/collections/${api.enc(c)}`);
    filters.setKeys(info.metadata_keys, info.photo_fields);
  }
  catch (e) { showError(e); }
}

function setStatus(text) { $("status").textContent = text; }

function searchImage(file) {
  imageQuery = file;
  const url = URL.createObjectURL(file);
  $("query-preview").replaceChildren(h("img", { src: url, alt: "query image" }),
    h("span", { text: file.name || "pasted image" }),
    h("button.icon", { type: "button", "aria-label": "Clear the image query", text: "×", onclick: clearImage }));
  $("query-preview").hidden = false;
  const s = { ...formState(), q: "", sim: null };
  $("query").value = "";
  history.pushState(null, "", `${location.pathname}${toQueryLocal(s)}`);
  shown = s;
  ctx = { ...(ctx || {}), state: s };
  showQueryChips(s, true);
  run(s, "image");
}
let toQueryLocal = (s) => `?c=${api.enc(s.c)}`;
export function setSerializer(fn) { toQueryLocal = fn; }

async function request(state, how, k) {
  const f = filtersOf(state);
  const min = state.min === null || state.min === undefined ? null : state.min;
  if (how === "browse") {
    return api.get(`/v1/collections/${api.enc(state.c)}/images`,
      { sort: "newest", limit: k, filters: f ? JSON.stringify(f) : null });
  }
  if (how === "similar") {
    return api.post("/v1/search/similar", { collection: state.c, id: state.sim, k, filters: f });
  }
  if (how === "image") {
    const form = new FormData();
    form.append("file", imageQuery);
    form.append("collection", state.c);
    form.append("k", String(k));
    form.append("target", selectedKind() === "texts" ? "texts" : state.target);
    form.append("rerank", state.rerank ? "true" : "false");
    form.append("rerank_k", String(Math.max(state.rk, k)));
    if (f) form.append("filters", JSON.stringify(f));
    if (min !== null) form.append("min_score", String(min));
    return api.postForm("/v1/search/image", form);
  }
  const keyword = state.mode === "keyword";
  return api.post("/v1/search/text", { query: state.q, collection: state.c, k, mode: state.mode,
    rerank: state.rerank, rerank_k: Math.max(state.rk, k), filters: f, min_score: keyword ? null : min,
    positive_ids: state.like, negative_ids: state.unlike, raw: state.raw,
    sort: state.sort === "taken_at" ? "taken_at" : "relevance" });
}

let runs = 0; // the latest query wins: an answer to an older one (a slow browse) is dropped
async function run(state, how) {
  const mine = ++runs;
  const k = Math.min(state.k || PAGE, MAX_K);
  setStatus({ similar: "Finding similar images…", browse: "Loading the newest…" }[how] || "Searching…");
  $("load-more").disabled = true;
  if (how !== "image") $("query-preview").hidden = true;
  try {
    const body = await request(state, how, k);
    const list = await api.collections();
    if (mine !== runs) return;
    const coll = list.find((x) => x.name === state.c);
    ctx = { state, how, k, body, results: body.results, collection: state.c, kind: coll ? coll.kind : "images" };
    render(body);
    if (how === "text") understood.show(body.understood, state, (patch) => navigate({ ...state, ...patch, k: PAGE }));
    else understood.hide();
    $("nomatch-banner").hidden = !body.no_confident_match;
    if (!body.results.length) setStatus(body.empty_reason ? `No results: ${body.empty_reason}` : await emptyReason(state, how, coll));
  } catch (e) {
    if (mine !== runs) return;
    setStatus(`Error: ${e.message}`);
    $("results").replaceChildren();
    showError(e);
  }
}

// Why nothing came back, when the server does not say (no empty_reason): an empty collection,
// filters or the cut-off, or no match at all.
async function emptyReason(state, how, coll) {
  if (coll && coll.count === 0) return `No results: the collection “${state.c}” is empty. Upload images to it first.`;
  if (hasFilters(state) || (state.min !== null && how !== "browse")) {
    try {
      const loose = await request({ ...state, ...filters.CLEARED }, how, 1);
      if (loose.results.length) {
        return "No results: every match is filtered out by the active filters or the score cut-off. Remove a filter to see more.";
      }
    } catch { /* fall through */ }
  }
  if (how === "text" && state.mode === "keyword") return `No results: no caption, metadata or text in an image contains “${state.q}”.`;
  return "No results: nothing in this collection matches the query.";
}

function scoreView(r) {
  if (ctx.how === "browse") {
    const when = `added ${fmtDate(r.added_at)}`;
    return { plain: when, raw: `#${r.id} · ${when}`, orderedBy: "newest" };
  }
  return describe(r, ctx.how, ctx.state.mode);
}

function render(body) {
  const { collection } = ctx;
  const raw = $("raw-scores").checked;
  const list = $("results");
  list.replaceChildren(...body.results.map((r, i) => {
    const label = r.caption || r.text || (r.uri || "").split("/").pop() || `record ${r.id}`;
    const sv = scoreView(r);
    const score = h("div.score", { text: raw ? sv.raw : sv.plain, title: `${sv.raw} (ordered by ${sv.orderedBy})`,
      "data-ordered-by": sv.orderedBy });
    const meta = h("div.meta", {}, h("div.caption", { text: label }), score);
    if (r.ocr_match) meta.append(h("div.ocr-match", { text: `“${r.ocr_match.line}”`, title: "text in the image" }));
    if (r.uri === null || r.uri === undefined) { // a text record (image → text)
      const tmeta = h("div.meta", {}, r.external_id ? h("div.muted", { text: `id ${r.external_id}` }) : null, score);
      return h("li.text-result", { "data-id": r.id }, h("button.card", { type: "button", onclick: () => openDetail(i) },
        h("p.text", { text: r.text || r.caption || "" }), tmeta));
    }
    return h("li", { "data-id": r.id }, h("button.card", { type: "button", "aria-label": `${label}, ${sv.plain}`,
      onclick: () => openDetail(i) },
    h("img", { src: api.thumbUrl(collection, r.id), alt: label, loading: "lazy" }), meta), feedback(r.id));
  }));
  const dropped = body.dropped && body.dropped.length ? ` (${body.dropped.length} unreadable skipped)` : "";
  const ms = Math.round(Object.values(body.timing_ms || {}).reduce((a, b) => a + b, 0));
  const n = body.results.length;
  if (n && ctx.how === "browse") {
    setStatus(`Newest first: ${n} of ${body.total}. Type a description above to search, or drop an image.`);
  } else if (n) setStatus(`${n} results in ${ms} ms${dropped}`);
  const more = ctx.how === "browse" ? body.next_offset !== null && ctx.k < MAX_K : n >= ctx.k && ctx.k < MAX_K;
  $("load-more").hidden = !more;
  $("load-more").disabled = false;
}

// 👍 / 👎 under an image card: search again for more like the liked, less like the disliked.
function feedback(id) {
  if (ctx.kind !== "images") return null;
  const s = { like: [], unlike: [], ...ctx.state };
  const mark = (list, other) => navigate({ ...formState(), sim: null, [list]: [...new Set([...s[list], id])],
    [other]: s[other].filter((x) => x !== id), k: PAGE });
  return h("div.feedback", {},
    h("button.icon", { type: "button", text: "👍", title: "More like this one", "aria-label": `More like #${id}`,
      "aria-pressed": String(s.like.includes(id)), onclick: () => mark("like", "unlike") }),
    h("button.icon", { type: "button", text: "👎", title: "Less like this one", "aria-label": `Less like #${id}`,
      "aria-pressed": String(s.unlike.includes(id)), onclick: () => mark("unlike", "like") }));
}

async function loadMore() {
  if (!ctx || $("load-more").disabled) return;
  $("load-more").disabled = true;
  const next = { ...ctx.state, k: Math.min(ctx.k + PAGE, MAX_K) };
  navigate(next, { replace: true, scroll: false });
}

export const results = () => (ctx ? ctx.results : []);
export const collection = () => (ctx ? ctx.collection : "");
export const lastHow = () => (ctx ? ctx.how : "");
export const lastMode = () => (ctx && ctx.state ? ctx.state.mode : "vector");
export function moreLikeThis(id) {
  imageQuery = null;
  navigate({ ...formState(), q: "", sim: id, k: PAGE });
}
export function onlyFolder(prefix) {
  navigate({ ...formState(), prefix, k: PAGE });
}
export function refresh() { if (shown) show(shown); }
