// The whole query state lives in the URL (shareable; back and forward replay it).
// ?view=search&c=photos&q=red&mode=hybrid&rerank=1&rk=64&min=0.5&k=24&from=2024-01-01&to=…
//  &minw=&maxw=&minh=&maxh=&prefix=/srv&field=tag:red&field=camera:nikon&hide=1&sim=12&target=images
//  &like=12&unlike=7 (relevance feedback: 👍 / 👎 on results) &raw=1 (the query not parsed)
//  &tafter=2024-05-01&tbefore=…&nlat=38.7&nlon=-9.1&nrad=25&place=lisboa&camera=canon&sort=taken_at (photos)
import { photoFilters } from "./filters.js";

export const VIEWS = ["search", "upload", "jobs", "review", "duplicates"];
const NUMS = ["rk", "min", "k", "minw", "maxw", "minh", "maxh", "sim", "nlat", "nlon", "nrad"];
const STORED = ["format", "external_id", "caption_model"]; // string columns
const STRS = ["view", "c", "q", "mode", "from", "to", "prefix", "target", "tafter", "tbefore", "place", "camera", "sort"];

export function defaults() {
  return { view: "search", c: "", q: "", mode: "vector", rerank: false, rk: 64, min: null, k: 24, from: "", to: "",
    minw: null, maxw: null, minh: null, maxh: null, prefix: "", fields: [], hide: false, sim: null, target: "images",
    like: [], unlike: [], raw: false, tafter: "", tbefore: "", nlat: null, nlon: null, nrad: null, place: "", camera: "",
    sort: "" };
}

export function read(search = location.search) {
  const p = new URLSearchParams(search);
  const s = defaults();
  for (const k of STRS) if (p.has(k)) s[k] = p.get(k);
  for (const k of NUMS) {
    if (p.has(k) && p.get(k) !== "" && isFinite(Number(p.get(k)))) s[k] = Number(p.get(k));
  }
  s.rerank = p.get("rerank") === "1";
  s.hide = p.get("hide") === "1";
  s.raw = p.get("raw") === "1";
  const ids = (k) => [...new Set(p.getAll(k).map(Number).filter((n) => Number.isInteger(n) && n >= 0))];
  s.like = ids("like");
  s.unlike = ids("unlike");
  s.fields = p.getAll("field").map((f) => {
    const i = f.indexOf(":");
    return i > 0 ? { key: f.slice(0, i), value: f.slice(i + 1) } : null;
  }).filter(Boolean);
  if (!VIEWS.includes(s.view)) s.view = "search";
  if (!["vector", "keyword", "hybrid"].includes(s.mode)) s.mode = "vector";
  if (s.sort !== "taken_at") s.sort = "";
  return s;
}

export function toQuery(s) {
  const d = defaults();
  const p = new URLSearchParams();
  for (const k of [...STRS, ...NUMS]) {
    if (s[k] !== null && s[k] !== undefined && s[k] !== "" && s[k] !== d[k]) p.set(k, String(s[k]));
  }
  if (s.rerank) p.set("rerank", "1");
  if (s.hide) p.set("hide", "1");
  if (s.raw) p.set("raw", "1");
  for (const id of s.like || []) p.append("like", String(id));
  for (const id of s.unlike || []) p.append("unlike", String(id));
  for (const f of s.fields || []) p.append("field", `${f.key}:${f.value}`);
  return `?${p}`;
}

// The API's Filters object for a state (null when nothing filters).
export function filtersOf(s) {
  const f = {};
  if (s.prefix) f.uri_prefix = s.prefix;
  if (s.from) f.added_after = new Date(`${s.from}T00:00:00`).toISOString();
  if (s.to) { // inclusive day: before the next midnight
    const end = new Date(`${s.to}T00:00:00`);
    end.setDate(end.getDate() + 1);
    f.added_before = end.toISOString();
  }
  for (const [k, name] of [["minw", "min_width"], ["maxw", "max_width"], ["minh", "min_height"], ["maxh", "max_height"]]) {
    if (s[k] !== null && s[k] !== undefined) f[name] = s[k];
  }
  if (s.fields && s.fields.length) {
    f.fields = {};
    for (const { key, value } of s.fields) {
      const numeric = /^-?\d+(\.\d+)?$/.test(value) && !STORED.includes(key);
      const v = numeric ? [value, Number(value)] : [value]; // JSON metadata may hold numbers
      f.fields[key] = [...(Array.isArray(f.fields[key]) ? f.fields[key] : []), ...v];
    }
  }
  if (s.hide) f.exclude_decisions = ["flag", "review"];
  Object.assign(f, photoFilters(s));
  return Object.keys(f).length ? f : null;
}

export function hasFilters(s) { return filtersOf(s) !== null; }
