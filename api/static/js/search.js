// The search screen: text (vector / keyword / hybrid), image (drop, paste, choose) and "more like
// this" queries, re-ranking, the relevance cut-off, filters, and the result grid with load more.
import * as api from "./api.js";
import { $, fmtScore, h, showError } from "./dom.js";
import * as filters from "./filters.js";
import { filtersOf, hasFilters } from "./state.js";

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
    navigate({ ...formState(), sim: null, k: Number($("k").value) });
  });
  for (const id of ["rerank", "rerank-k", "k", "collection"]) $(id).addEventListener("change", syncControls);
  document.querySelectorAll("input[name=mode]").forEach((r) => r.addEventListener("change", syncControls));
  $("min-score").addEventListener("input", showMin);
  $("image-file").addEventListener("change", (e) => { if (e.target.files[0]) searchImage(e.target.files[0]); });
  const drop = $("drop");
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
    navigate({ ...filters.collect(formState()), k: PAGE });
  });
  $("f-add").addEventListener("click", addField);
  $("f-value").addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); addField(); } });
  $("f-clear").addEventListener("click", () => navigate({ ...formState(), from: "", to: "", minw: null, maxw: null,
    minh: null, maxh: null, prefix: "", fields: [], hide: false, min: 0, k: PAGE }));
  $("load-more").addEventListener("click", loadMore);
  new IntersectionObserver((entries) => {
    if (entries.some((x) => x.isIntersecting) && !$("load-more").hidden && !$("load-more").disabled) loadMore();
  }, { rootMargin: "200px" }).observe($("load-more"));
}

// The state the controls show, on top of the current one (filters come from the URL state).
let shown = null;
function formState() {
  return {
    ...shown,
    c: $("collection").value,
    q: $("query").value.trim(),
    mode: document.querySelector("input[name=mode]:checked").value,
    rerank: $("rerank").checked,
    rk: Number($("rerank-k").value) || 64,
    min: Number($("min-score").value) || 0,
    k: Number($("k").value),
    target: $("target").value,
  };
}

function syncControls() {
  const rr = $("rerank").checked;
  $("rerank-k").disabled = !rr;
  $("min-label").textContent = rr ? "Min ITM probability" : "Min ITC similarity";
  const kind = selectedKind();
  $("query").disabled = kind === "texts";
  for (const id of ["target", "mode-keyword", "mode-hybrid"]) $(id).disabled = kind === "texts";
  $("query").placeholder = kind === "texts" ? "a text collection: search it with an image" : "a dog running on the beach";
  showMin();
}
function showMin() {
  const v = Number($("min-score").value);
  $("min-score-out").textContent = v > 0 ? v.toFixed(2) : "off";
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
  if (wanted && list.some((c) => c.name === wanted)) sel.value = wanted;
  return sel.value;
}

// Show a state in the controls and run its query (called by main.js on every navigation).
export async function show(state) {
  shown = state;
  const list = await api.collections();
  const c = await setCollections(list, state.c);
  if (!list.length) {
    setStatus("No collections yet: create one on the Upload screen, or index with `blipsearch index`.");
    $("results").replaceChildren();
    return;
  }
  $("query").value = state.q;
  document.querySelector(`input[name=mode][value=${state.mode}]`).checked = true;
  $("rerank").checked = state.rerank;
  $("rerank-k").value = state.rk;
  $("min-score").value = state.min;
  $("k").value = [12, 24, 48, 96].includes(state.k) ? state.k : $("k").value;
  $("target").value = state.target;
  filters.fill(state);
  syncControls();
  filters.chips(state, (next) => navigate({ ...next, k: PAGE }));
  loadKeys(c);
  if (state.sim !== null) await run({ ...state, c }, "similar");
  else if (state.q) await run({ ...state, c }, "text");
  else if (imageQuery && ctx && ctx.state.c === c) await run({ ...state, c }, "image");
}

async function loadKeys(c) {
  try { filters.setKeys((await api.get(`/v1/collections/${api.enc(c)}`)).metadata_keys); }
  catch (e) { showError(e); }
}

function setStatus(text) { $("status").textContent = text; }

function searchImage(file) {
  imageQuery = file;
  const url = URL.createObjectURL(file);
  $("query-preview").replaceChildren(h("img", { src: url, alt: "query image" }),
    h("span", { text: file.name || "pasted image" }));
  $("query-preview").hidden = false;
  const s = { ...formState(), q: "", sim: null };
  $("query").value = "";
  history.pushState(null, "", `${location.pathname}${toQueryLocal(s)}`);
  shown = s;
  run(s, "image");
}
let toQueryLocal = (s) => `?c=${api.enc(s.c)}`;
export function setSerializer(fn) { toQueryLocal = fn; }

async function request(state, how, k) {
  const f = filtersOf(state);
  const min = state.min > 0 ? state.min : null;
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
  return api.post("/v1/search/text", { query: state.q, collection: state.c, k, mode: state.mode,
    rerank: state.rerank, rerank_k: Math.max(state.rk, k), filters: f, min_score: min });
}

async function run(state, how) {
  const k = Math.min(state.k || PAGE, MAX_K);
  setStatus(how === "similar" ? "Finding similar images…" : "Searching…");
  $("load-more").disabled = true;
  if (how !== "image") $("query-preview").hidden = true;
  try {
    const body = await request(state, how, k);
    const list = await api.collections();
    const coll = list.find((x) => x.name === state.c);
    ctx = { state, how, k, results: body.results, collection: state.c, kind: coll ? coll.kind : "images" };
    render(body);
    if (!body.results.length) setStatus(await emptyReason(state, how, coll));
  } catch (e) {
    setStatus(`Error: ${e.message}`);
    $("results").replaceChildren();
    showError(e);
  }
}

// Why nothing came back: an empty collection, filters or the cut-off, or no match at all.
async function emptyReason(state, how, coll) {
  if (coll && coll.count === 0) return `No results: the collection “${state.c}” is empty. Upload images to it first.`;
  if (hasFilters(state) || state.min > 0) {
    try {
      const loose = await request({ ...state, fields: [], from: "", to: "", minw: null, maxw: null, minh: null,
        maxh: null, prefix: "", hide: false, min: 0 }, how, 1);
      if (loose.results.length) {
        return "No results: every match is filtered out by the active filters or the score cut-off. Remove a filter to see more.";
      }
    } catch { /* fall through */ }
  }
  if (how === "text" && state.mode === "keyword") return `No results: no caption, metadata or text in an image contains “${state.q}”.`;
  return "No results: nothing in this collection matches the query.";
}

function scoreLine(r, how) {
  if (r.itm_score !== null && r.itm_score !== undefined) {
    return `ITC ${fmtScore(r.itc_score)} · ITM ${fmtScore(r.itm_score)} · fused ${fmtScore(r.score)}`;
  }
  if (how === "text" && ctx.state.mode !== "vector") {
    return `${ctx.state.mode === "keyword" ? "BM25" : "RRF"} ${fmtScore(r.score)}`;
  }
  return `ITC ${fmtScore(r.itc_score)}`;
}

function render(body) {
  const { collection, how } = ctx;
  const list = $("results");
  list.replaceChildren(...body.results.map((r, i) => {
    const label = r.caption || r.text || (r.uri || "").split("/").pop() || `record ${r.id}`;
    const meta = h("div.meta", {}, h("div.caption", { text: label }), h("div.score", { text: scoreLine(r, how) }));
    if (r.ocr_match) meta.append(h("div.ocr-match", { text: `“${r.ocr_match.line}”`, title: "text in the image" }));
    if (r.uri === null || r.uri === undefined) { // a text record (image → text)
      const tmeta = h("div.meta", {}, r.external_id ? h("div.muted", { text: `id ${r.external_id}` }) : null,
        h("div.score", { text: scoreLine(r, how) }));
      return h("li.text-result", {}, h("button.card", { type: "button", onclick: () => openDetail(i) },
        h("p.text", { text: r.text || r.caption || "" }), tmeta));
    }
    return h("li", {}, h("button.card", { type: "button", "aria-label": `${label}, ${scoreLine(r, how)}`,
      onclick: () => openDetail(i) },
    h("img", { src: api.thumbUrl(collection, r.id), alt: label, loading: "lazy" }), meta));
  }));
  const dropped = body.dropped && body.dropped.length ? ` (${body.dropped.length} unreadable skipped)` : "";
  const ms = Math.round(Object.values(body.timing_ms || {}).reduce((a, b) => a + b, 0));
  if (body.results.length) setStatus(`${body.results.length} results in ${ms} ms${dropped}`);
  const more = body.results.length >= ctx.k && ctx.k < MAX_K;
  $("load-more").hidden = !more;
  $("load-more").disabled = false;
}

async function loadMore() {
  if (!ctx || $("load-more").disabled) return;
  $("load-more").disabled = true;
  const next = { ...ctx.state, k: Math.min(ctx.k + PAGE, MAX_K) };
  navigate(next, { replace: true, scroll: false });
}

export const results = () => (ctx ? ctx.results : []);
export const collection = () => (ctx ? ctx.collection : "");
export function moreLikeThis(id) {
  imageQuery = null;
  navigate({ ...formState(), q: "", sim: id, k: PAGE });
}
export function refresh() { if (shown) show(shown); }
