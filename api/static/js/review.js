// The moderation review queue: records whose decision is flag or review, with thumbnails and the
// category, score and prompt (or hash list, detector box, text match) that triggered it; approve or block writes a manual decision.
import * as api from "./api.js";
import { $, badge, fmtScore, h, notify, showError } from "./dom.js";

let onDecided = () => {};

export function init({ decided }) {
  onDecided = decided;
  $("review-collection").addEventListener("change", () => load());
}

export async function show(wanted) {
  const list = (await api.collections()).filter((c) => c.kind === "images");
  const sel = $("review-collection");
  const keep = wanted || sel.value;
  sel.replaceChildren(...list.map((c) => h("option", { value: c.name, text: c.name })));
  if (keep && list.some((c) => c.name === keep)) sel.value = keep;
  await load();
}

async function load() {
  const c = $("review-collection").value;
  if (!c) { $("review-status").textContent = "No image collections."; $("review-list").replaceChildren(); return; }
  $("review-status").textContent = "Loading…";
  try {
    const q = await api.get("/v1/moderation/queue", { collection: c, limit: 200 });
    $("review-status").textContent = q.total
      ? `${q.total} item${q.total === 1 ? "" : "s"} to review in “${c}”${q.total > q.items.length ? ` (first ${q.items.length} shown)` : ""}.`
      : `Nothing to review in “${c}”: no record is flagged or waiting for review.`;
    $("review-list").replaceChildren(...q.items.map((item) => card(c, item)));
  } catch (e) {
    $("review-status").textContent = `Error: ${e.message}`;
    showError(e);
  }
}

// One trigger's line: what fired and its evidence (a prompt, a hash distance, a detector box, a text match).
function triggerItem(t) {
  const thr = t.threshold !== undefined ? ` (≥ ${fmtScore(t.threshold)})` : "";
  let title = t.category || t.check, detail = `score ${fmtScore(t.score)}${thr}`, quote = t.prompt;
  if (t.error) { title = t.check; detail = `error: ${t.error}`; quote = null; }
  else if (t.check === "hash_list") { title = `hash list ${t.list}`; detail = `distance ${t.distance} (≤ ${t.threshold}, ${t.variant})`; }
  else if (t.check === "detector") { title = `${t.category} · ${t.class}`; }
  else if (t.check === "text_rule") {
    title = `text rule ${t.rule}`;
    detail = t.timed_out ? `timed out after ${t.timeout_ms} ms` : `${t.kind} in ${t.source} text, line ${t.line_no}`;
    quote = t.match;
  }
  return h("li", {},
    h("strong", { text: title }),
    h("span", { text: ` · ${detail}` }),
    quote ? h("div.prompt", { text: `“${quote}”` }) : null,
    h("div.muted", { text: `policy ${t.policy}${t.policy_version ? ` v${t.policy_version}` : ""}` }));
}

// The thumbnail with the detector's boxes drawn over it: an SVG in the image's own pixel
// coordinates, scaled as the thumbnail is: the whole image shown (object-fit: contain = meet).
function thumb(c, item) {
  const img = h("img", { src: api.thumbUrl(c, item.id), alt: `record ${item.id}`, loading: "lazy" });
  const boxes = item.triggers.filter((t) => t.check === "detector" && t.box && t.image_size);
  if (!boxes.length) return img;
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  const [w, hgt] = boxes[0].image_size;
  svg.setAttribute("viewBox", `0 0 ${w} ${hgt}`);
  svg.setAttribute("preserveAspectRatio", "xMidYMid meet");
  svg.setAttribute("class", "det-boxes");
  svg.setAttribute("aria-hidden", "true");
  for (const t of boxes) {
    const r = document.createElementNS(NS, "rect");
    const [x, y, bw, bh] = t.box;
    Object.entries({ x, y, width: bw, height: bh, "vector-effect": "non-scaling-stroke" })
      .forEach(([k, v]) => r.setAttribute(k, String(v)));
    const title = document.createElementNS(NS, "title");
    title.textContent = `${t.class} ${fmtScore(t.score)}`;
    r.append(title);
    svg.append(r);
  }
  return h("div.thumb-boxes", { title: boxes.map((t) => `${t.class} ${fmtScore(t.score)}`).join(", ") }, img, svg);
}

function card(c, item) {
  const li = h("li.review-card", { "data-id": String(item.id) },
    thumb(c, item),
    h("div.review-body", {},
      h("div.review-head", {}, badge(item.decision), h("span.muted", { text: `#${item.id}` })),
      h("ul.triggers", {}, item.triggers.map(triggerItem)),
      h("div.actions", {},
        h("button.approve", { type: "button", text: "Approve", "aria-label": `Approve record ${item.id}`,
          onclick: () => decide(c, item.id, "approve", li) }),
        h("button.block", { type: "button", text: "Block", "aria-label": `Block record ${item.id}`,
          onclick: () => decide(c, item.id, "block", li) }))));
  return li;
}

async function decide(c, id, decision, li) {
  if (!api.getKey()) { notify("Approving or blocking needs an API key with scope write: use the “API key” button.", "error"); return; }
  li.querySelectorAll("button").forEach((b) => { b.disabled = true; });
  try {
    await api.post("/v1/moderation/decisions", { collection: c, id, decision });
    notify(`Record ${id} ${decision === "approve" ? "approved" : "blocked"}.`);
    li.remove();
    await load();
    onDecided();
  } catch (e) {
    li.querySelectorAll("button").forEach((b) => { b.disabled = false; });
    showError(e);
  }
}
