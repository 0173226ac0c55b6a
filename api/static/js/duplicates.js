// The duplicates screen: groups in tiers (exact copies, re-encoded/resized, bursts, near-duplicates)
// with why each is a group (scores, distances) and the proposed keeper; Stack hides the others in
// search (nothing is deleted), Unstack shows them again. The screen builds its own section, so the
// page needs only a nav link and a render line.
import * as api from "./api.js";
import { $, fmtScore, h, notify, showError } from "./dom.js";

function section() {
  let s = $("view-duplicates");
  if (s) return s;
  s = h("section", { id: "view-duplicates", "aria-labelledby": "dup-h", hidden: true },
    h("div.section-head", {}, h("h1", { id: "dup-h", text: "Duplicates" }),
      h("label.inline", {}, "Collection ", h("select", { id: "dup-collection", onchange: () => load() }))),
    h("p", { id: "dup-status", role: "status", "aria-live": "polite" }),
    h("ul", { id: "dup-list", class: "review-grid", "aria-label": "Duplicate groups" }));
  document.querySelector("main").append(s);
  return s;
}

export function init() { section(); }

export async function show(wanted) {
  section();
  const list = (await api.collections()).filter((c) => c.kind === "images");
  const sel = $("dup-collection");
  const keep = wanted || sel.value;
  sel.replaceChildren(...list.map((c) => h("option", { value: c.name, text: c.name })));
  if (keep && list.some((c) => c.name === keep)) sel.value = keep;
  await load();
}

async function load() {
  const c = $("dup-collection").value;
  if (!c) { $("dup-status").textContent = "No image collections."; $("dup-list").replaceChildren(); return; }
  $("dup-status").textContent = "Looking for duplicates…";
  try {
    const d = await api.get(`/v1/collections/${api.enc(c)}/duplicates`, { limit: 200 });
    const counts = Object.entries(d.counts).map(([t, n]) => `${t} ${n}`).join(", ");
    const skipped = Object.entries(d.skipped).map(([t, why]) => `${t}: ${why}`).join("; ");
    $("dup-status").textContent = `${d.total} group${d.total === 1 ? "" : "s"} in “${c}” (${counts})`
      + (skipped ? `. Skipped: ${skipped}.` : ".");
    $("dup-list").replaceChildren(...d.groups.map((g) => card(c, g)));
  } catch (e) {
    $("dup-status").textContent = `Error: ${e.message}`;
    showError(e);
  }
}

function member(c, m) {
  const facts = [`#${m.id}`, `${m.width}×${m.height}`, m.format, m.path || m.uri];
  if (!m.keeper && m.similarity !== undefined) facts.push(`ITC ${fmtScore(m.similarity)}`);
  if (!m.keeper && m.pdq_distance !== null && m.pdq_distance !== undefined) facts.push(`PDQ ${m.pdq_distance}`);
  if (!m.keeper && m.seconds_apart !== null && m.seconds_apart !== undefined) facts.push(`${m.seconds_apart} s apart`);
  return h("li", { class: m.keeper ? "keeper" : "" },
    h("img", { src: api.thumbUrl(c, m.id), alt: `record ${m.id}`, loading: "lazy", width: 64, height: 64 }),
    h("span", { text: `${m.keeper ? "keeper · " : ""}${facts.filter(Boolean).join(" · ")}` }));
}

function card(c, g) {
  const canStack = g.tier !== "exact";
  const li = h("li.review-card.dup-card", { "data-group": g.group },
    h("div.review-body", {},
      h("div.review-head", {}, h("strong", { text: g.tier }), h("span.muted", { text: ` ${g.group}${g.stacked ? " · stacked" : ""}` })),
      h("p", { text: g.why }),
      h("p.muted", { text: `Keeper #${g.keeper}: ${g.keeper_why}` }),
      h("ul.triggers", {}, g.members.map((m) => member(c, m))),
      canStack ? h("div.actions", {},
        h("button", { type: "button", text: g.stacked ? "Unstack" : "Stack",
          "aria-label": `${g.stacked ? "Unstack" : "Stack"} group ${g.group}`,
          onclick: () => toggle(c, g, li) })) : null));
  return li;
}

async function toggle(c, g, li) {
  if (!api.getKey()) { notify("Stacking needs an API key with scope write: use the “API key” button.", "error"); return; }
  li.querySelectorAll("button").forEach((b) => { b.disabled = true; });
  try {
    const path = `/v1/collections/${api.enc(c)}/stacks`;
    if (g.stacked) await api.del(`${path}?keeper=${g.keeper}`);
    else await api.post(path, { group: g.group });
    notify(g.stacked ? `Group ${g.group} unstacked.` : `Group ${g.group} stacked under #${g.keeper}.`);
    await load();
  } catch (e) {
    li.querySelectorAll("button").forEach((b) => { b.disabled = false; });
    showError(e);
  }
}
