// The detail view: the original image, caption, metadata, moderation decision and its triggers,
// the stack it keeps (duplicates folded under it: each one findable, unstack), "more like
// this", delete (needs a write key), and ←/→ between results.
import * as api from "./api.js";
import { $, badge, fmtBytes, fmtDate, fmtScore, h, notify, showError } from "./dom.js";
import { describe } from "./scores.js";

let items = () => [];
let coll = () => "";
let onMore = () => {};
let onDeleted = () => {};
let onFolder = () => {};
let onUnstacked = () => {};
let how = () => "";
let mode = () => "vector";
let index = -1;

export function init({ results, collection, more, deleted, folder, kind, searchMode, unstacked }) {
  items = results;
  onUnstacked = unstacked || deleted;
  coll = collection;
  onMore = more;
  onDeleted = deleted;
  onFolder = folder;
  how = kind;
  mode = searchMode;
  $("detail-folder").addEventListener("click", () => {
    const p = $("detail-folder").dataset.prefix;
    $("detail").close();
    if (p) onFolder(p);
  });
  $("more").addEventListener("click", () => { const r = items()[index]; $("detail").close(); onMore(r.id); });
  $("close").addEventListener("click", () => $("detail").close());
  $("prev").addEventListener("click", () => step(-1));
  $("next").addEventListener("click", () => step(1));
  $("delete").addEventListener("click", remove);
  $("detail").addEventListener("keydown", (e) => {
    if (e.target.closest("input, textarea, select")) return;
    if (e.key === "ArrowLeft") { e.preventDefault(); step(-1); }
    if (e.key === "ArrowRight") { e.preventDefault(); step(1); }
  });
  $("detail").addEventListener("close", () => {
    const card = document.querySelectorAll("#results .card")[index];
    if (card) card.focus(); // keyboard users land back on the result they opened
  });
}

function step(d) {
  const n = items().length;
  if (n && index + d >= 0 && index + d < n) open(index + d);
}

function row(dl, key, value) {
  dl.append(h("dt", { text: key }), h("dd", { text: value === null || value === undefined || value === "" ? "—" : String(value) }));
}

// The boxes of the OCR lines that matched the query, drawn over the image: an SVG laid exactly
// over the <img>, its viewBox the image's own pixels, scaled like the image (object-fit: contain).
function drawBoxes(rec, matches) {
  const img = $("detail-img");
  let svg = $("detail-boxes");
  if (!svg) {
    svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.id = "detail-boxes";
    svg.setAttribute("preserveAspectRatio", "xMidYMid meet");
    svg.setAttribute("aria-hidden", "true");
    img.parentElement.append(svg);
  }
  svg.replaceChildren();
  svg.hidden = !matches.length || !rec.width || !rec.height;
  if (svg.hidden) return;
  svg.setAttribute("viewBox", `0 0 ${rec.width} ${rec.height}`);
  for (const m of matches) {
    const poly = document.createElementNS("http://www.w3.org/2000/svg", "polygon");
    poly.setAttribute("points", m.box.map((p) => `${p[0]},${p[1]}`).join(" "));
    poly.setAttribute("class", "ocr-box");
    const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
    title.textContent = m.line;
    poly.append(title);
    svg.append(poly);
  }
  placeBoxes();
}

// Keep the overlay on the image as the dialog lays out (load, resize, the info pane filling in).
function placeBoxes() {
  const img = $("detail-img");
  const svg = $("detail-boxes");
  if (!svg) return;
  svg.style.left = `${img.offsetLeft}px`; svg.style.top = `${img.offsetTop}px`;
  svg.style.width = `${img.offsetWidth}px`; svg.style.height = `${img.offsetHeight}px`;
  if (!boxObserver) {
    boxObserver = new ResizeObserver(placeBoxes);
    boxObserver.observe(img);
    boxObserver.observe(img.parentElement);
    img.addEventListener("load", placeBoxes);
  }
}
let boxObserver = null;

export async function open(i) {
  index = i;
  const r = items()[i];
  const c = coll();
  if (!r) return;
  $("prev").disabled = i === 0;
  $("next").disabled = i === items().length - 1;
  $("detail-pos").textContent = `${i + 1} of ${items().length}`;
  const dialog = $("detail");
  if (!dialog.open) dialog.showModal();
  const isText = r.uri === null || r.uri === undefined;
  $("detail-img").hidden = isText;
  if ($("detail-boxes")) $("detail-boxes").hidden = true;
  $("more").hidden = isText;
  if (!isText) {
    $("detail-img").src = api.fileUrl(c, r.id);
    $("detail-img").alt = r.caption || `image ${r.id}`;
  }
  $("detail-title").textContent = r.caption || r.text || `Record ${r.id}`;
  if (how() === "browse") $("detail-score").textContent = `Record ${r.id}, added ${fmtDate(r.added_at)}`;
  else {
    const sv = describe(r, how(), mode());
    $("detail-score").textContent = `${sv.plain} — ${sv.raw} (ordered by ${sv.orderedBy})`;
  }
  $("detail-download").hidden = isText;
  if (!isText) {
    $("detail-download").href = api.fileUrl(c, r.id);
    $("detail-download").setAttribute("download", "");
  }
  $("detail-folder").hidden = true;
  const dl = $("detail-fields");
  const meta = $("detail-meta");
  const mod = $("detail-moderation");
  const stackBox = stackSection();
  stackBox.hidden = true;
  stackBox.replaceChildren();
  dl.replaceChildren();
  meta.replaceChildren();
  mod.replaceChildren(h("p.muted", { text: "Loading…" }));
  try {
    const [rec, m, st] = await Promise.all([
      api.get(`/v1/collections/${api.enc(c)}/images/${r.id}`),
      api.get(`/v1/moderation/records/${api.enc(c)}/${r.id}`).catch(() => null),
      isText ? null : api.get(`/v1/collections/${api.enc(c)}/stacks/${r.id}`).catch((e) => {
        if (e.status !== 404) showError(e); // 404: in no stack
        return null;
      }),
    ]);
    if (index !== i) return;
    // The title already shows the caption (or the text): only a caption beside a text gets a row.
    if (rec.text && rec.caption) row(dl, "Caption", rec.caption);
    if (r.ocr_match) row(dl, "Matched text", r.ocr_match.line);
    if (rec.ocr_text) row(dl, "Text in the image", rec.ocr_text);
    drawBoxes(rec, r.ocr_matches || []);
    row(dl, "Record", `#${rec.id}`);
    if (rec.uri !== null && rec.uri !== undefined) {
      row(dl, "File", rec.uri);
      const absolute = rec.uri.startsWith("/") || rec.uri.includes("://");
      const folder = absolute ? rec.uri.slice(0, rec.uri.lastIndexOf("/") + 1) : "";
      $("detail-folder").hidden = !folder;
      $("detail-folder").dataset.prefix = folder;
      if (!absolute) {
        dl.append(h("dd.muted.note", { text: "Shown relative to the server's import root or data dir; the server hides full paths (BLIPSEARCH_EXPOSE_PATHS)." }));
      }
    }
    if (rec.width) row(dl, "Dimensions", `${rec.width} × ${rec.height} px`);
    row(dl, "Format", rec.format);
    if (rec.bytes !== null && rec.bytes !== undefined) row(dl, "File size", fmtBytes(rec.bytes));
    row(dl, "Added", fmtDate(rec.added_at));
    const keys = Object.keys(rec.metadata || {});
    for (const k of keys) row(meta, k, typeof rec.metadata[k] === "object" ? JSON.stringify(rec.metadata[k]) : rec.metadata[k]);
    if (!keys.length) meta.append(h("p.muted", { text: "No metadata." }));
    renderModeration(mod, m);
    if (st) renderStack(stackBox, st, r.id, c);
  } catch (e) {
    showError(e);
    mod.replaceChildren(h("p.error", { text: e.message }));
  }
}

// The stack section (made once, after the metadata): the page's index.html stays as it is.
function stackSection() {
  let box = $("detail-stack");
  if (!box) {
    box = h("section", { id: "detail-stack", "aria-label": "Stack" });
    $("detail-meta").after(box);
  }
  return box;
}

// A keeper lists the records folded under it (search shows only the keeper): each with its
// thumbnail, file and size, its original, and "more like this"; Unstack shows them in search
// again. A member says which record keeps it.
function renderStack(box, st, rid, c) {
  const byId = new Map((st.records || []).map((x) => [x.id, x]));
  const out = [];
  if (st.keeper !== rid) {
    out.push(h("h3", { text: "Stack" }),
      h("p.stack-of", { text: `Stacked under record #${st.keeper}${st.tier ? ` (${st.tier} duplicates)` : ""}.` }));
  } else {
    out.push(h("h3", { text: `Stack: ${st.members.length} more ${st.members.length === 1 ? "copy" : "copies"}` }),
      h("p.muted", { text: `Search shows this record only${st.tier ? ` (${st.tier} duplicates)` : ""}; the others stay stored.` }),
      h("ul.stack-members", {}, st.members.map((id) => {
        const x = byId.get(id) || { id };
        const size = x.width ? `${x.width} × ${x.height} px` : "";
        return h("li.stack-member", { "data-id": String(id) },
          h("img", { src: api.thumbUrl(c, id), alt: `stacked record ${id}`, loading: "lazy", width: 64, height: 64 }),
          h("span", { text: `#${id} ${x.uri || ""}` }),
          h("span.muted", { text: [x.format, size, x.bytes ? fmtBytes(x.bytes) : ""].filter(Boolean).join(" · ") }),
          h("a", { href: api.fileUrl(c, id), target: "_blank", rel: "noopener", text: "Original" }),
          h("button", { type: "button", text: `More like #${id}`, onclick: () => { $("detail").close(); onMore(id); } }));
      })),
      h("button", { id: "unstack", type: "button", text: "Unstack", onclick: () => unstack(c, st.keeper) }));
  }
  box.replaceChildren(...out);
  box.hidden = false;
}

async function unstack(c, keeper) {
  if (!api.getKey()) { notify("Unstacking needs an API key with scope write: use the “API key” button.", "error"); return; }
  try {
    const out = await api.del(`/v1/collections/${api.enc(c)}/stacks?keeper=${keeper}`);
    notify(`Unstacked: ${out.members.length} records show in search again.`);
    $("detail-stack").hidden = true;
    $("detail").close();
    onUnstacked();
  } catch (e) { showError(e); }
}

function renderModeration(box, m) {
  if (!m || !m.decision) { box.replaceChildren(badge(null), h("p.muted", { text: "Not checked by any policy." })); return; }
  const out = [h("p", {}, "Decision: ", badge(m.decision), m.manual ? h("span.muted", { text: " (manual)" }) : "")];
  if (m.manual) {
    const t = m.manual.triggers[0] || {};
    out.push(h("p.muted", { text: `Set by hand ${fmtDate(m.manual.created_at)}${t.note ? `: “${t.note}”` : ""}` }));
  }
  const trig = m.results.flatMap((res) => res.triggers.map((t) => ({ ...t, policy: res.policy })));
  if (trig.length) {
    out.push(h("ul.triggers", {}, trig.map((t) => h("li", {}, badge(t.action),
      h("span", { text: ` ${t.category || t.check} · score ${fmtScore(t.score)}${t.prompt ? ` · “${t.prompt}”` : ""} · ${t.policy}` })))));
  } else if (!m.manual) out.push(h("p.muted", { text: "No policy triggered." }));
  box.replaceChildren(...out);
}

async function remove() {
  const r = items()[index];
  if (!r) return;
  if (!api.getKey()) { notify("Deleting needs an API key with scope write: use the “API key” button.", "error"); return; }
  if (!confirm(`Delete record ${r.id} from “${coll()}”? It will never be returned by a search again.`)) return;
  try {
    await api.del(`/v1/collections/${api.enc(coll())}/images/${r.id}`);
    $("detail").close();
    notify(`Deleted record ${r.id}.`);
    onDeleted();
  } catch (e) { showError(e); }
}
