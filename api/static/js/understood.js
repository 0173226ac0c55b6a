// How the server read the query (the answer's `understood`: weighted parts and filters), shown as
// chips the user edits: removing one takes its words out of the query and searches again;
// "search the words as typed" turns parsing off (raw).
import { $, h } from "./dom.js";

function partLabel(p) {
  const text = p.text ?? p.source ?? "";
  if (p.weight < 0) return `not “${text}”`;
  return p.weight !== 1 ? `“${text}” ×${p.weight}` : `“${text}”`;
}

// The query with one part's words taken out (its source text, once).
function without(query, source) {
  const i = query.indexOf(source);
  return i < 0 ? query : `${query.slice(0, i)} ${query.slice(i + source.length)}`.replace(/\s+/g, " ").trim();
}

// Render ``understood`` for ``state``; ``rerun(patch)`` searches again with the state patched.
export function show(understood, state, rerun) {
  const box = $("understood");
  // Liked and disliked records already show as chips of their own (search.js).
  const parts = ((understood && understood.parts) || []).filter((p) => p.kind !== "record");
  const sources = (understood && understood.filter_sources) || {};
  const parsed = parts.length > 1 || Object.keys(sources).length || parts.some((p) => p.kind === "text" && p.weight !== 1);
  if (!understood || (!parsed && !state.raw)) { box.hidden = true; return; }
  const chips = parts.map((p) => {
    const label = partLabel(p);
    const remove = () => rerun({ q: without(state.q, p.source || p.text || "") });
    return h(`li.chip.part${p.weight < 0 ? ".negative" : ""}`, { "data-kind": p.kind },
      h("span", { text: label }),
      h("button.icon", { type: "button", "aria-label": `Remove ${label}`, text: "×", onclick: remove }));
  });
  for (const [name, words] of Object.entries(sources)) {
    const label = `${words} → ${name.replace(/_/g, " ")}`;
    chips.push(h("li.chip.filter-part", {}, h("span", { text: label }),
      h("button.icon", { type: "button", "aria-label": `Remove ${label}`, text: "×", onclick: () => rerun({ q: without(state.q, words) }) })));
  }
  const toggle = state.raw
    ? h("button.ghost.small", { type: "button", text: "Read the query again", onclick: () => rerun({ raw: false }) })
    : h("button.ghost.small", { type: "button", text: "Search the words as typed", onclick: () => rerun({ raw: true }) });
  box.replaceChildren(h("span.muted", { text: state.raw ? "Searched as typed:" : "Understood as:" }), h("ul.chips", {}, chips), toggle);
  box.hidden = false;
}

export function hide() { $("understood").hidden = true; }
