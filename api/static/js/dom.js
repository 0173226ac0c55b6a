// Small DOM helpers shared by the screens.

export const $ = (id) => document.getElementById(id);

// h("div.card", {title: "x", onclick: fn}, child, "text", ...)
export function h(spec, attrs, ...children) {
  const [tag, ...classes] = spec.split(".");
  const el = document.createElement(tag || "div");
  if (classes.length) el.className = classes.join(" ");
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

// A message for the user: errors stay until dismissed or replaced; others fade.
let toastTimer = 0;
export function notify(text, kind = "info") {
  const box = $("toast");
  box.replaceChildren(
    h("span", { text }),
    h("button.icon", { type: "button", "aria-label": "Dismiss", text: "×", onclick: () => box.replaceChildren() }),
  );
  box.className = `toast ${kind}`;
  clearTimeout(toastTimer);
  if (kind !== "error") toastTimer = setTimeout(() => box.replaceChildren(), 4000);
}
export const showError = (e) => notify(e && e.message ? e.message : String(e), "error");

export function fmtBytes(n) {
  if (n === null || n === undefined || !isFinite(n)) return "—";
  if (n < 1024) return `${n} bytes`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}
export function fmtScore(x) { return x === null || x === undefined ? "—" : Number(x).toFixed(3); }
export function fmtDuration(s) {
  if (s === null || s === undefined || !isFinite(s)) return "—";
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}
export function fmtDate(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return isNaN(d) ? String(iso) : d.toLocaleString();
}

export function badge(decision) {
  return h(`span.badge.${decision || "none"}`, { text: decision || "not checked" });
}
