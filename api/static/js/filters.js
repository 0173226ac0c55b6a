// Filter controls (not JSON): dates, sizes, uri prefix, metadata field = value chips built from
// the collection's known keys, "hide items under review", and the photo fields: date taken,
// near a GPS position, place, camera, and the order by date taken. Active filters show as
// removable chips. A photo control is off where no record of the collection has its field
// (the counts of GET /v1/collections/{name}: photo_fields).
import { $, h } from "./dom.js";

const STORED = ["format", "external_id", "caption_model"]; // stored columns filters.fields also matches

// Every filter of a state, cleared ("Clear all", and the "would anything match unfiltered?" probe).
export const CLEARED = { from: "", to: "", minw: null, maxw: null, minh: null, maxh: null, prefix: "", fields: [],
  hide: false, min: null, tafter: "", tbefore: "", nlat: null, nlon: null, nrad: null, place: "", camera: "" };

// The photo controls: which fields of photo_fields each needs (any of them), and why it is off.
const PHOTO = [
  { set: "f-taken-set", fields: ["taken_at"], off: "No record in this collection has a date taken (EXIF)." },
  { set: "f-near-set", fields: ["gps_lat"], off: "No record in this collection has a GPS position." },
  { set: "f-place-set", fields: ["country_code", "country", "region", "city"], off: "No record in this collection has a place (from GPS)." },
  { set: "f-camera-set", fields: ["camera_make", "camera_model"], off: "No record in this collection names its camera." },
];

// Fill the controls from a state.
export function fill(s) {
  $("f-from").value = s.from || "";
  $("f-to").value = s.to || "";
  for (const k of ["minw", "maxw", "minh", "maxh", "nlat", "nlon", "nrad"]) $(`f-${k}`).value = s[k] ?? "";
  $("f-prefix").value = s.prefix || "";
  $("f-hide").checked = !!s.hide;
  $("f-tafter").value = s.tafter || "";
  $("f-tbefore").value = s.tbefore || "";
  $("f-place").value = s.place || "";
  $("f-camera").value = s.camera || "";
  $("f-sort").value = s.sort === "taken_at" ? "taken_at" : "";
}

// Read the controls into a state (fields are kept as they are: chips edit them).
export function collect(s) {
  const num = (id) => {
    const v = $(id).value.trim();
    return v === "" ? null : Math.max(0, Math.round(Number(v)));
  };
  const real = (id) => { // a coordinate or a radius as typed (the API checks its range)
    const v = $(id).value.trim();
    return v === "" || !isFinite(Number(v)) ? null : Number(v);
  };
  return { ...s, from: $("f-from").value, to: $("f-to").value, minw: num("f-minw"), maxw: num("f-maxw"),
    minh: num("f-minh"), maxh: num("f-maxh"), prefix: $("f-prefix").value.trim(), hide: $("f-hide").checked,
    tafter: $("f-tafter").value, tbefore: $("f-tbefore").value, nlat: real("f-nlat"), nlon: real("f-nlon"),
    nrad: real("f-nrad"), place: $("f-place").value.trim(), camera: $("f-camera").value.trim(),
    sort: $("f-sort").value === "taken_at" ? "taken_at" : "" };
}

// Why a state cannot be searched as the controls say (null when it can): "near" needs all three.
export function problem(s) {
  const near = [s.nlat, s.nlon, s.nrad].filter((v) => v !== null && v !== undefined).length;
  if (near && near < 3) return "Near needs a latitude, a longitude and a radius in km (all three).";
  return null;
}

// The photo fields of the API's Filters object for a state (state.js adds them to the rest).
export function photoFilters(s) {
  const f = {};
  if (s.tafter) f.taken_after = `${s.tafter}T00:00:00`; // no zone: UTC, as the API reads it
  if (s.tbefore) { // inclusive day: before the next midnight
    const end = new Date(`${s.tbefore}T00:00:00Z`);
    end.setUTCDate(end.getUTCDate() + 1);
    f.taken_before = end.toISOString().slice(0, 19);
  }
  if (![s.nlat, s.nlon, s.nrad].some((v) => v === null || v === undefined)) f.near = `${s.nlat},${s.nlon},${s.nrad}`;
  if (s.place) f.place = s.place;
  if (s.camera) f.camera = s.camera;
  return f;
}

// The query's order: by date taken only for a text query (the API's sort); browsing, "similar"
// and image queries have their own order, so the control is off there.
export function setSortable(on) {
  $("f-sort").disabled = !on;
  $("f-sort").title = on ? "" : "Ordering by date taken applies to text queries.";
}

// The collection's metadata keys for the field chips, and its photo field counts (null for a
// text collection: every photo control off).
export function setKeys(keys, photoFields) {
  const sel = $("f-key");
  const all = [...(keys || []), ...STORED.filter((k) => !(keys || []).includes(k))];
  sel.replaceChildren(...all.map((k) => h("option", { value: k, text: k })));
  for (const p of PHOTO) {
    const on = !!photoFields && p.fields.some((k) => (photoFields[k] || 0) > 0);
    const set = $(p.set);
    set.disabled = !on;
    set.title = on ? "" : p.off;
    set.classList.toggle("unavailable", !on);
  }
  $("f-sort").querySelector("option[value=taken_at]").disabled = !photoFields || !photoFields.taken_at;
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
  if (s.tafter) chip(`taken from ${s.tafter}`, { tafter: "" });
  if (s.tbefore) chip(`taken to ${s.tbefore}`, { tbefore: "" });
  if (s.nlat !== null && s.nlon !== null && s.nrad !== null) {
    chip(`within ${s.nrad} km of ${s.nlat}, ${s.nlon}`, { nlat: null, nlon: null, nrad: null });
  }
  if (s.place) chip(`place: ${s.place}`, { place: "" });
  if (s.camera) chip(`camera: ${s.camera}`, { camera: "" });
  if (s.sort === "taken_at" && s.q) chip("newest taken first", { sort: "" });
  if (s.hide) chip("hiding items under review", { hide: false });
  if (s.min !== null && s.min !== undefined) chip(`score ≥ ${s.min}`, { min: null });
  $("chips").replaceChildren(...out);
  $("chips").hidden = !out.length;
  const n = out.length - extra.length;
  $("filter-count").textContent = n ? String(n) : "";
}
