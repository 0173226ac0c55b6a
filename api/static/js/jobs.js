// Jobs: index and moderation jobs with live progress, rate and ETA, counts by failure reason,
// cancel and resume; and a form to index a server folder (inside BLIPSEARCH_IMPORT_ROOTS).
import * as api from "./api.js";
import { $, fmtDate, fmtDuration, h, notify, showError } from "./dom.js";

const ACTIVE = ["pending", "running", "cancelling"];
const RESUMABLE = ["failed", "cancelled"];
let timer = 0;
let visible = false;

export function init() {
  $("index-form").addEventListener("submit", start);
  $("jobs-refresh").addEventListener("click", refresh);
}

export function show() { visible = true; refresh(); offerFolders(); }

// "Index a server folder" only where the server has import roots (GET /v1/info says whether,
// never which): elsewhere the form would only fail after submitting.
async function offerFolders() {
  try {
    const info = await api.serverInfo();
    $("index-panel").hidden = !info.import_roots;
    $("index-none").hidden = info.import_roots;
  } catch { /* leave the form: the server's answer will say why */ }
}
export function hide() { visible = false; clearTimeout(timer); }

async function start(e) {
  e.preventDefault();
  const paths = $("index-paths").value.split("\n").map((p) => p.trim()).filter(Boolean);
  const collection = $("index-collection").value.trim();
  if (!paths.length || !collection) return;
  try {
    const job = await api.post("/v1/jobs/index", { collection, paths });
    notify(`Started index job ${job.id.slice(0, 8)}.`);
    refresh();
  } catch (err) { showError(err); }
}

async function act(job, action) {
  try {
    await api.post(`/v1/jobs/${job.id}/${action}`);
    notify(`Job ${job.id.slice(0, 8)}: ${action === "cancel" ? "cancelling" : "resumed"}.`);
    refresh();
  } catch (err) { showError(err); }
}

async function refresh() {
  clearTimeout(timer);
  try {
    const { jobs } = await api.get("/v1/jobs", { limit: 50 });
    render(jobs);
    if (visible) timer = setTimeout(refresh, jobs.some((j) => ACTIVE.includes(j.state)) ? 700 : 4000);
  } catch (err) {
    $("jobs-list").replaceChildren(h("li.error", { text: `Could not list jobs: ${err.message}` }));
    if (visible) timer = setTimeout(refresh, 5000);
  }
}

function render(jobs) {
  $("jobs-empty").hidden = jobs.length > 0;
  $("jobs-list").replaceChildren(...jobs.map(card));
}

function card(job) {
  const c = job.counts || {};
  const p = c.progress || {};
  const finished = !ACTIVE.includes(job.state);
  const done = p.done ?? (c.checked !== undefined ? c.checked + (c.failed || 0) : 0);
  const total = p.total ?? (finished && job.state === "succeeded" ? done : null);
  const bar = h("progress", { max: total || 1, value: total ? Math.min(done, total) : 0,
    "aria-label": `Progress of job ${job.id.slice(0, 8)}` });
  if (!total && ACTIVE.includes(job.state)) bar.removeAttribute("value"); // indeterminate
  const stats = [`${done}${total !== null ? ` / ${total}` : ""} items`];
  const took = job.started_at && job.finished_at ? (new Date(job.finished_at) - new Date(job.started_at)) / 1000 : null;
  if (finished && took !== null) {
    stats.push(`took ${fmtDuration(took)}`);
    if (took > 0 && done) stats.push(`${(done / took).toFixed(1)}/s on average`);
  } else if (p.rate_per_s !== undefined) stats.push(`${p.rate_per_s}/s`);
  if (ACTIVE.includes(job.state) && p.eta_s !== undefined) stats.push(`ETA ${fmtDuration(p.eta_s)}`);
  const counts = [];
  for (const [k, label] of [["added", "added"], ["skipped_duplicates", "duplicates"], ["updated", "updated"],
    ["checked", "checked"], ["already_done", "already done"], ["failed", "failed"]]) {
    if (c[k]) counts.push(h("li", { text: `${label} ${c[k]}` }));
  }
  for (const [reason, n] of Object.entries(c.failed_by_reason || {})) counts.push(h("li.fail", { text: `${reason} ${n}` }));
  for (const [d, n] of Object.entries(c.decisions || {})) counts.push(h(`li.dec-${d}`, { text: `${d} ${n}` }));
  const buttons = [];
  if (ACTIVE.includes(job.state) && job.state !== "cancelling") {
    buttons.push(h("button", { type: "button", text: "Cancel", onclick: () => act(job, "cancel") }));
  }
  if (job.kind === "index" && RESUMABLE.includes(job.state)) {
    buttons.push(h("button", { type: "button", text: "Resume", onclick: () => act(job, "resume") }));
  }
  return h("li.job", { "data-state": job.state, "data-kind": job.kind },
    h("div.job-head", {},
      h("strong", { text: `${job.kind} · ${job.collection}` }),
      h(`span.state.${job.state}`, { text: job.state }),
      h("span.muted", { text: `${job.id.slice(0, 8)} · ${fmtDate(job.created_at)}` })),
    bar,
    h("div.job-stats", { text: stats.join(" · ") }),
    counts.length ? h("ul.counts", {}, counts) : null,
    job.error ? h("p.error", { text: job.error }) : null,
    (job.failures || []).length ? h("details", {}, h("summary", { text: `${job.failures.length} failure${job.failures.length === 1 ? "" : "s"}` }),
      h("ul.failures", {}, job.failures.slice(0, 50).map((f) => h("li", { text: `${f.path || f.id}: ${f.reason ? `${f.reason}: ` : ""}${f.error}` })))) : null,
    buttons.length ? h("div.actions", {}, buttons) : null);
}
