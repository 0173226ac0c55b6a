// Filter controls (not JSON): dates, sizes, uri prefix, metadata field = value chips built from
// the collection's known keys, "hide items under review". Active filters show as removable chips.
import { $, h } from "./dom.js";

const STORED = ["format", "external_id", "caption_model"]; // stored columns filters.fields also matches

// Fill the controls from a state.
export function fill(s) {
  $("f-from").value = s.from || "";
  $("f-to").value = s.to || "";
  for (const k of ["minw", "maxw", "minh", "maxh"]) $(`f-${k}`).value = s[k] ?? "";
  $("f-prefix").value = s.prefix || "";
  $("f-hide").checked = !!s.hide;
}

// Read the controls into a state (fields are kept as they are: chips edit them).
export function collect(s) {
  const num = (id) => {
    const v = $(id).value.trim();
    return v === "" ? null : Math.max(0, Math.round(Number(v)));
  };
  return { ...s, from: $("f-from").value, to: $("f-to").value, minw: num("f-minw"), maxw: num("f-maxw"),
    minh: num("f-minh"), maxh: num("f-maxh"), prefix: $("f-prefix").value.trim(), hide: $("f-hide").checked };
}

export function setKeys(keys) {
  const sel = $("f-key");
  const all = [...(keys || []), ...STORED.filter((k) => !(keys || []).includes(k))];
  sel.replaceChildren(...all.map((k) => h("option", { value: k, text: k })));
}

// Chips for each active filter; onRemove(newState) is called when one is removed. ``extra``:
// chips for the query itself ({label, remove}: "similar to #182", the query image).
export function chips(s, onRemove, extra = []) {
  const out = extra.map((x) => h("li.chip.query-chip", {},
    h("span", { text: x.label }),
    h("button.icon", { type: "button", "aria-label": `Remove ${x.label}`, text: "×", onclick: x.remove })));
  const chip = (label, patch) => out.push(h("li.chip", {},
    h("span", { text: label }),
    h("button.icon", { type: "button", "aria-label": `Remove filter ${label}`, text: "×",
      onclick: () => onRemove({ ...s, ...patch }) })));
  if (s.from) chip(`added from ${s.from}`, { from: "" });
  if (s.to) chip(`added to ${s.to}`, { to: "" });
  if (s.minw !== null || s.maxw !== null) chip(`width ${s.minw ?? 0}–${s.maxw ?? "∞"}`, { minw: null, maxw: null });
  if (s.minh !== null || s.maxh !== null) chip(`height ${s.minh ?? 0}–${s.maxh ?? "∞"}`, { minh: null, maxh: null });
  if (s.prefix) chip(`uri starts with ${s.prefix}`, { prefix: "" });
  s.fields.forEach((f, i) => chip(`${f.key} = ${f.value}`, { fields: s.fields.filter((_, j) => j !== i) }));
  if (s.hide) chip("hiding items under review", { hide: false });
  if (s.min !== null && s.min !== undefined) chip(`score ≥ ${s.min}`, { min: null });
  $("chips").replaceChildren(...out);
  $("chips").hidden = !out.length;
  const n = out.length - extra.length;
  $("filter-count").textContent = n ? String(n) : "";
}
