// blipsearch page: no build step. Talks to the /v1 API of the server that serves it.
"use strict";
const $ = (id) => document.getElementById(id);
let current = null; // {collection, id}

function setStatus(text) { $("status").textContent = text; }

async function api(path, options) {
  const res = await fetch(path, options);
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.detail || `HTTP ${res.status}`);
  return body;
}

async function loadCollections() {
  const { collections } = await api("/v1/collections");
  const sel = $("collection");
  sel.replaceChildren(...collections.filter((c) => c.kind === "images").map((c) => {
    const o = document.createElement("option");
    o.value = c.name;
    o.textContent = `${c.name} (${c.count})`;
    return o;
  }));
  if (!sel.options.length) setStatus("No image collections yet: index some with `blipsearch index`.");
}

function render(collection, body) {
  const list = $("results");
  list.replaceChildren();
  for (const r of body.results) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    const img = document.createElement("img");
    img.src = `/v1/collections/${encodeURIComponent(collection)}/images/${r.id}/thumbnail`;
    img.alt = r.caption || `image ${r.id}`;
    img.loading = "lazy";
    const meta = document.createElement("div");
    meta.className = "meta";
    const itm = r.itm_score === null || r.itm_score === undefined ? "" : ` · ITM ${r.itm_score.toFixed(3)}`;
    const cap = document.createElement("div");
    cap.textContent = r.caption || r.uri.split("/").pop();
    const score = document.createElement("div");
    score.className = "score";
    score.textContent = `score ${r.score.toFixed(4)} · ITC ${r.itc_score.toFixed(4)}${itm}`;
    meta.append(cap, score);
    b.append(img, meta);
    b.addEventListener("click", () => openDetail(collection, r.id));
    li.append(b);
    list.append(li);
  }
  const dropped = body.dropped && body.dropped.length ? ` (${body.dropped.length} unreadable skipped)` : "";
  setStatus(`${body.results.length} results in ${Math.round(Object.values(body.timing_ms).reduce((a, b) => a + b, 0))} ms${dropped}`);
}

async function searchText(ev) {
  ev.preventDefault();
  const collection = $("collection").value;
  const query = $("query").value.trim();
  if (!collection || !query) return;
  setStatus("Searching…");
  try {
    const body = await api("/v1/search/text", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ query, collection, k: Number($("k").value), rerank: $("rerank").checked }),
    });
    render(collection, body);
  } catch (e) { setStatus(`Error: ${e.message}`); }
}

async function searchImage(file) {
  const collection = $("collection").value;
  if (!file || !collection) return;
  setStatus("Searching by image…");
  const form = new FormData();
  form.append("file", file);
  form.append("collection", collection);
  form.append("k", $("k").value);
  try { render(collection, await api("/v1/search/image", { method: "POST", body: form })); }
  catch (e) { setStatus(`Error: ${e.message}`); }
}

async function openDetail(collection, id) {
  current = { collection, id };
  const rec = await api(`/v1/collections/${encodeURIComponent(collection)}/images/${id}`);
  $("detail-title").textContent = rec.caption || `Image ${id}`;
  $("detail-img").src = `/v1/collections/${encodeURIComponent(collection)}/images/${id}/file`;
  $("detail-img").alt = rec.caption || `image ${id}`;
  const dl = $("detail-fields");
  dl.replaceChildren();
  for (const key of ["id", "uri", "width", "height", "format", "bytes", "caption", "added_at"]) {
    const dt = document.createElement("dt");
    dt.textContent = key;
    const dd = document.createElement("dd");
    dd.textContent = rec[key] === null || rec[key] === undefined ? "—" : String(rec[key]);
    dl.append(dt, dd);
  }
  $("detail").showModal();
}

async function moreLikeThis() {
  $("detail").close();
  setStatus("Finding similar images…");
  try {
    const body = await api("/v1/search/similar", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ collection: current.collection, id: current.id, k: Number($("k").value) }),
    });
    render(current.collection, body);
  } catch (e) { setStatus(`Error: ${e.message}`); }
}

$("search-form").addEventListener("submit", searchText);
$("image-file").addEventListener("change", (e) => searchImage(e.target.files[0]));
$("more").addEventListener("click", moreLikeThis);
$("close").addEventListener("click", () => $("detail").close());
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); searchImage(e.dataTransfer.files[0]); });
drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("image-file").click(); } });
loadCollections().catch((e) => setStatus(`Error: ${e.message}`));
