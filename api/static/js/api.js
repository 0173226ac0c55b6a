// The /v1 API of the server that serves this page: the API key (kept for this browser session),
// JSON requests, per-file uploads with progress, and readable messages for every error.

const KEY = "blipsearch.key";
const WHO = "blipsearch.keyInfo";

export function getKey() { return sessionStorage.getItem(KEY) || ""; }
// The key's name and scope as the server reported them when it was saved (or null).
export function keyInfo() { try { return JSON.parse(sessionStorage.getItem(WHO) || "null"); } catch { return null; } }
export function setKey(key, info = null) {
  if (key) sessionStorage.setItem(KEY, key.trim());
  else sessionStorage.removeItem(KEY);
  if (key && info) sessionStorage.setItem(WHO, JSON.stringify({ name: info.name, scope: info.scope }));
  else sessionStorage.removeItem(WHO);
  document.dispatchEvent(new CustomEvent("keychange"));
}

// The server's answer for ``key`` (GET /v1/keys/me: id, name, scope), or an ApiError (401).
export async function checkKey(key) {
  let res;
  try { res = await fetch("/v1/keys/me", { headers: { Authorization: `Bearer ${key.trim()}` } }); } catch { throw new ApiError(0, null); }
  const raw = await res.text();
  let body = raw;
  try { body = raw ? JSON.parse(raw) : null; } catch { /* keep text */ }
  if (!res.ok) throw new ApiError(res.status, body);
  return body;
}

// What the server offers (GET /v1/info: the collection-name rule, whether import roots exist), read once.
let infoPromise = null;
export function serverInfo() {
  if (!infoPromise) infoPromise = get("/v1/info").catch((e) => { infoPromise = null; throw e; });
  return infoPromise;
}

export class ApiError extends Error {
  constructor(status, body) {
    super(message(status, body));
    this.status = status;
    this.body = body;
  }
}

// A problem+json body (title, detail, errors) or anything else, as one readable sentence.
export function message(status, body) {
  if (status === 0) return "The server could not be reached. Is it running?";
  let text = "";
  if (body && typeof body === "object") {
    if (typeof body.detail === "string") text = body.detail;
    else if (Array.isArray(body.detail)) text = body.detail.map((e) => e.msg || JSON.stringify(e)).join("; ");
    if (Array.isArray(body.errors) && body.errors.length && !text) {
      text = body.errors.map((e) => `${(e.loc || []).join(".")}: ${e.msg}`).join("; ");
    }
    if (!text && body.title) text = body.title;
  } else if (typeof body === "string" && body.trim() && body.length < 300) {
    text = body.trim();
  }
  if (!text) text = `The server answered HTTP ${status}.`;
  if (status === 401 && !getKey()) text += " Enter an API key with the “API key” button.";
  if (status === 413) text = `Too large: ${text}`;
  return text;
}

function headers(extra) {
  const h = { ...(extra || {}) };
  const key = getKey();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

export async function request(method, path, { json, form, params } = {}) {
  let url = path;
  if (params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (v === undefined || v === null || v === "") continue;
      for (const one of Array.isArray(v) ? v : [v]) q.append(k, String(one));
    }
    if ([...q].length) url += `?${q}`;
  }
  const init = { method, headers: headers(json ? { "content-type": "application/json" } : {}) };
  if (json) init.body = JSON.stringify(json);
  if (form) init.body = form;
  let res;
  try { res = await fetch(url, init); } catch { throw new ApiError(0, null); }
  if (res.status === 204) return null;
  const raw = await res.text();
  let body = raw;
  try { body = raw ? JSON.parse(raw) : null; } catch { /* not JSON: keep the text */ }
  if (!res.ok) throw new ApiError(res.status, body);
  return body;
}

export const get = (path, params) => request("GET", path, { params });
export const post = (path, json) => request("POST", path, { json });
export const postForm = (path, form) => request("POST", path, { form });
export const del = (path) => request("DELETE", path);

// One upload with progress (fetch has no upload progress): resolves with the JSON body.
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    const key = getKey();
    if (key) xhr.setRequestHeader("Authorization", `Bearer ${key}`);
    xhr.upload.addEventListener("progress", (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); });
    xhr.addEventListener("load", () => {
      let body = xhr.responseText;
      try { body = JSON.parse(xhr.responseText); } catch { /* keep text */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(new ApiError(xhr.status, body));
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, null)));
    xhr.send(form);
  });
}

export const enc = encodeURIComponent;
export const thumbUrl = (c, id) => `/v1/collections/${enc(c)}/images/${id}/thumbnail`;
export const fileUrl = (c, id) => `/v1/collections/${enc(c)}/images/${id}/file`;

let collectionsCache = null; // [time, list]: re-read after a few seconds (jobs and uploads change counts)
export async function collections(force = false) {
  if (!collectionsCache || force || Date.now() - collectionsCache[0] > 3000) {
    collectionsCache = [Date.now(), (await get("/v1/collections")).collections];
  }
  return collectionsCache[1];
}
