// Collections and uploads: create a collection, upload many images by drag and drop (or choose),
// each with its own progress bar and result: added, duplicate, or failed with the reason.
import * as api from "./api.js";
import { $, h, notify, showError } from "./dom.js";

const PARALLEL = 2;
let onChanged = () => {};
let pending = []; // files chosen or dropped, waiting for the user to confirm the target collection
let namePattern = null; // the server's rule for new names (GET /v1/info), as the form's pattern

// The server's reason, in words, for a name its rule refuses (the pattern only says no).
function checkName() {
  const input = $("new-name");
  input.setCustomValidity("");
  if (!input.value || input.validity.valid) return;
  const v = input.value;
  const why = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(v) && !v.includes("..")
    ? `“${v}” is a name the server keeps for itself (its own folders and files): choose another.`
    : "Use 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit.";
  input.setCustomValidity(why);
}

// Files wait here until the user confirms where they go: a preselected collection is not consent.
function confirmUpload(files) {
  if (!files.length) return;
  if (!$("upload-collection").value) { notify("Create or choose a collection first.", "error"); return; }
  pending = files;
  showConfirm();
}
function showConfirm() {
  const n = pending.length;
  $("upload-confirm-text").textContent = `Upload ${n} file${n === 1 ? "" : "s"} to “${$("upload-collection").value}”?`;
  $("upload-confirm").hidden = false;
  $("upload-go").focus();
}
function hideConfirm() { pending = []; $("upload-confirm").hidden = true; }

export function init({ changed }) {
  onChanged = changed;
  $("create-form").addEventListener("submit", create);
  $("new-name").addEventListener("input", checkName);
  $("upload-files").addEventListener("change", (e) => { confirmUpload([...e.target.files]); e.target.value = ""; });
  $("upload-go").addEventListener("click", () => { const f = pending; hideConfirm(); uploadAll(f); });
  $("upload-cancel").addEventListener("click", () => { hideConfirm(); $("upload-summary").textContent = "Upload cancelled."; });
  $("upload-collection").addEventListener("change", () => { if (pending.length) showConfirm(); });
  const zone = $("upload-drop");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); confirmUpload([...e.dataTransfer.files]); });
  api.serverInfo().then((info) => { namePattern = info.collection_name_pattern; $("new-name").pattern = namePattern; })
    .catch(() => { /* keep the syntax-only pattern of the page */ });
  zone.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("upload-files").click(); }
  });
}

export async function show(wanted) {
  const list = (await api.collections()).filter((c) => c.kind === "images");
  const sel = $("upload-collection");
  const keep = wanted || sel.value;
  sel.replaceChildren(...list.map((c) => h("option", { value: c.name, text: `${c.name} (${c.count})` })));
  if (keep && list.some((c) => c.name === keep)) sel.value = keep;
  $("upload-empty").hidden = list.length > 0;
  $("upload-key-hint").hidden = !!api.getKey();
}

async function create(e) {
  e.preventDefault();
  checkName();
  if (!$("new-name").reportValidity()) return;
  const name = $("new-name").value.trim();
  if (!name) return;
  try {
    await api.post("/v1/collections", { name, cache_itm_features: $("new-itm").checked });
    notify(`Created collection “${name}”.`);
    $("new-name").value = "";
    await api.collections(true);
    await show(name);
    onChanged();
  } catch (err) { showError(err); }
}

function fileRow(file) {
  const bar = h("progress", { max: 1, value: 0, "aria-label": `Upload progress of ${file.name}` });
  const result = h("span.result.pending", { text: "waiting" });
  const thumb = h("img.thumb", { alt: "", src: URL.createObjectURL(file) });
  thumb.addEventListener("error", () => thumb.classList.add("broken")); // not an image the browser can show
  const li = h("li.file", {}, thumb, h("span.name", { text: file.name, title: file.name }), bar, result);
  return { li, bar, result };
}

const MARKS = { added: "✓", duplicate: "=", failed: "✕", pending: "" };
function setResult(row, kind, text) {
  row.result.className = `result ${kind}`;
  row.result.textContent = `${MARKS[kind] ? `${MARKS[kind]} ` : ""}${text}`;
  row.li.dataset.result = kind; // the row's colour and bar follow it (style.css)
}

async function uploadAll(files) {
  const coll = $("upload-collection").value;
  if (!files.length) return;
  if (!coll) { notify("Create or choose a collection first.", "error"); return; }
  const rows = files.map((f) => ({ file: f, ...fileRow(f) }));
  $("upload-list").prepend(...rows.map((r) => r.li));
  $("upload-summary").textContent = `Uploading ${files.length} file${files.length > 1 ? "s" : ""} to “${coll}”…`;
  let next = 0;
  const counts = { added: 0, duplicate: 0, failed: 0 };
  async function worker() {
    while (next < rows.length) {
      const row = rows[next++];
      setResult(row, "pending", "uploading");
      const form = new FormData();
      form.append("files", row.file, row.file.name);
      try {
        const body = await api.upload(`/v1/collections/${api.enc(coll)}/images`, form, (p) => { row.bar.value = p; });
        row.bar.value = 1;
        if (body.added.length) { setResult(row, "added", `added as #${body.added[0].id}`); counts.added++; }
        else if (body.duplicates.length) { setResult(row, "duplicate", "duplicate: already in the collection"); counts.duplicate++; }
        else { setResult(row, "failed", `failed: ${(body.failures[0] || {}).reason || "not added"}`); counts.failed++; }
      } catch (e) {
        row.bar.value = 0;
        setResult(row, "failed", `failed: ${e.message}`);
        counts.failed++;
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(PARALLEL, rows.length) }, worker));
  $("upload-summary").textContent =
    `Done: ${counts.added} added, ${counts.duplicate} duplicate${counts.duplicate === 1 ? "" : "s"}, ${counts.failed} failed.`;
  await api.collections(true);
  await show(coll);
  onChanged();
}
