// blipsearch page: plain ES modules, no build step. Screens: search, upload, jobs, review.
// The view and the whole query live in the URL; back and forward replay them.
import * as api from "./api.js";
import * as detail from "./detail.js";
import { $, notify, showError } from "./dom.js";
import * as duplicates from "./duplicates.js";
import * as jobs from "./jobs.js";
import * as review from "./review.js";
import * as search from "./search.js";
import { read, toQuery, VIEWS } from "./state.js";
import * as upload from "./upload.js";

let state = read();

function navigate(next, { replace = false, scroll = true } = {}) {
  state = { ...state, ...next };
  const url = `${location.pathname}${toQuery(state)}`;
  if (replace) history.replaceState(null, "", url);
  else if (url !== `${location.pathname}${location.search}`) history.pushState(null, "", url);
  render(scroll);
}

async function render(scroll = true) {
  for (const v of VIEWS) {
    $(`view-${v}`).hidden = v !== state.view;
    const link = document.querySelector(`nav a[data-view=${v}]`);
    if (v === state.view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `blipsearch · ${state.view}`;
  if (state.view !== "jobs") jobs.hide();
  try {
    if (state.view === "search") await search.show(state);
    else if (state.view === "upload") await upload.show(state.c);
    else if (state.view === "jobs") jobs.show();
    else if (state.view === "review") await review.show(state.c);
    else if (state.view === "duplicates") await duplicates.show(state.c);
  } catch (e) { showError(e); }
  if (scroll && state.view !== "search") window.scrollTo(0, 0);
}

function keyUi() {
  const has = !!api.getKey();
  const who = api.keyInfo();
  $("key-btn").textContent = has ? "API key ✓" : "API key";
  $("key-btn").title = has && who ? `${who.name} (scope ${who.scope})` : "";
  $("key-btn").setAttribute("aria-label", has ? "API key (set for this session)" : "API key (not set)");
}

// Saving a key asks the server who it is (GET /v1/keys/me): a wrong key is refused in the
// dialog, not later by the first upload.
async function saveKey(e) {
  e.preventDefault();
  const key = $("key-input").value.trim();
  $("key-error").textContent = "";
  if (!key) { api.setKey(""); $("key-dialog").close(); notify("API key forgotten."); return; }
  $("key-save").disabled = true;
  try {
    const who = await api.checkKey(key);
    api.setKey(key, who);
    $("key-dialog").close();
    notify(`API key “${who.name}” kept for this browser session (scope ${who.scope}).`);
  } catch (err) {
    $("key-error").textContent = err.status === 401 || err.status === 403
      ? `The server does not accept this key: ${err.message}` : err.message;
    $("key-input").focus();
  } finally { $("key-save").disabled = false; }
}

function initKey() {
  $("key-btn").addEventListener("click", () => {
    $("key-input").value = api.getKey();
    $("key-error").textContent = "";
    $("key-dialog").showModal();
  });
  $("key-form").addEventListener("submit", saveKey);
  $("key-forget").addEventListener("click", () => { api.setKey(""); $("key-dialog").close(); notify("API key forgotten."); });
  $("key-cancel").addEventListener("click", () => $("key-dialog").close());
  document.addEventListener("keychange", () => { keyUi(); if (state.view === "upload") upload.show(); });
  keyUi();
}

document.querySelectorAll("nav a[data-view]").forEach((a) => a.addEventListener("click", (e) => {
  if (e.metaKey || e.ctrlKey || e.shiftKey) return;
  e.preventDefault();
  navigate({ view: a.dataset.view });
}));
window.addEventListener("popstate", () => {
  if ($("detail").open) $("detail").close();
  state = read();
  render(false);
});

search.setSerializer(toQuery);
search.init({ onNavigate: navigate, onOpen: (i) => detail.open(i) });
detail.init({
  results: search.results,
  collection: search.collection,
  more: (id) => search.moreLikeThis(id),
  deleted: async () => { await api.collections(true); search.refresh(); },
  folder: (prefix) => search.onlyFolder(prefix),
  kind: search.lastHow,
  searchMode: search.lastMode,
});
upload.init({ changed: () => api.collections(true) });
jobs.init();
review.init({ decided: () => api.collections(true) });
duplicates.init();
initKey();
render();
