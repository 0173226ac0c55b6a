// The moderation review queue: records whose decision is flag or review, with thumbnails and the
// category, score and prompt that triggered it; approve or block writes a manual decision.
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

function card(c, item) {
  const trig = item.triggers.map((t) => h("li", {},
    h("strong", { text: t.category || t.check }),
    h("span", { text: ` · score ${fmtScore(t.score)}${t.threshold !== undefined ? ` (≥ ${fmtScore(t.threshold)})` : ""}` }),
    t.prompt ? h("div.prompt", { text: `“${t.prompt}”` }) : null,
    h("div.muted", { text: `policy ${t.policy}` })));
  const li = h("li.review-card", { "data-id": String(item.id) },
    h("img", { src: api.thumbUrl(c, item.id), alt: `record ${item.id}`, loading: "lazy" }),
    h("div.review-body", {},
      h("div.review-head", {}, badge(item.decision), h("span.muted", { text: `#${item.id}` })),
      h("ul.triggers", {}, trig),
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
