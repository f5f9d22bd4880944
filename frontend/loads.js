// The load panel: the image roots, the "Load a folder" form, and one card per load job with its
// live progress, polled from GET /loads (every second while a job runs).

import { api } from "./api.js";
import { refreshCollections, refreshStats, statsStale } from "./collections.js";
import { clearMessages, describeError, handleBackgroundError, markOnline, notify } from "./messages.js";
import { $, basename, formatDuration, formatNumber, normalisePath } from "./shared.js";
import { currentName, state } from "./state.js";

const JOB_LIMIT = 20;
const FAST_POLL_MS = 1000;
const IDLE_POLL_MS = 5000;
const ACTIVE_STATES = new Set(["queued", "scanning", "embedding", "finalizing"]);
const STATE_LABELS = {
  queued: "Queued",
  scanning: "Scanning folder",
  embedding: "Embedding",
  finalizing: "Finalizing",
  succeeded: "Succeeded",
  failed: "Failed",
  cancelled: "Cancelled",
};

const els = {
  loadForm: $("#load-form"),
  folderInput: $("#folder-input"),
  rootsList: $("#roots-list"),
  loadButton: $("#load-button"),
  pruneInput: $("#prune-input"),
  jobs: $("#jobs"),
  jobsEmpty: $("#jobs-empty"),
  jobTemplate: $("#job-template"),
};

const jobCards = new Map(); // job_id -> card
let activeJobs = new Set();
let pollTimer = null;
let pollInFlight = null;
let pollAgain = false;
let loadBusy = false;

// ---------------------------------------------------------------- roots & load form

export async function loadRoots() {
  try {
    const data = await api("/roots");
    state.roots = data.roots;
    els.rootsList.replaceChildren();
    if (!data.roots.length) {
      els.rootsList.textContent = "none configured — set PICSEARCH_IMAGE_ROOTS";
      return;
    }
    for (const root of data.roots) {
      const chip = document.createElement("button");
      chip.type = "button";
      chip.className = "chip";
      chip.dataset.testid = "root-chip";
      chip.textContent = root;
      chip.title = `Use ${root}`;
      chip.addEventListener("click", () => setFolder(root));
      els.rootsList.append(chip);
    }
    els.folderInput.placeholder = `${data.roots[0].replace(/\/$/, "")}/…`;
  } catch (err) {
    els.rootsList.textContent = "unavailable";
    handleBackgroundError(err);
  }
}

export function setFolder(path) {
  els.folderInput.value = path;
  els.folderInput.focus();
  // Show the end of a long path (the folder name), not its start.
  els.folderInput.setSelectionRange(path.length, path.length);
  els.folderInput.scrollLeft = els.folderInput.scrollWidth;
}

/** The folder typed in the form, trimmed. */
export function typedFolder() {
  return els.folderInput.value.trim();
}

export function focusFolderInput() {
  els.folderInput.focus();
}

async function submitLoad(event) {
  event.preventDefault();
  if (loadBusy) return;
  const path = els.folderInput.value.trim();
  clearMessages("load");
  if (!path) {
    notify("load", "error", "Enter the folder to load, or pick one with Browse….");
    els.folderInput.focus();
    return;
  }
  if (!path.startsWith("/")) {
    const example = state.roots[0] ? ` inside ${state.roots[0]}` : "";
    notify("load", "error", `Enter the folder's absolute path, starting with "/" (for example a folder${example}).`);
    els.folderInput.focus();
    return;
  }
  const target = currentName();
  const running = [...jobCards.values()].find(
    (card) => ACTIVE_STATES.has(card.job.state) && normalisePath(card.job.path) === normalisePath(path) &&
      (card.job.collection || target) === target,
  );
  if (running) {
    notify("load", "error", `A load of ${path} is already running; wait for it or cancel it first.`);
    return;
  }
  const prune = els.pruneInput.checked;
  loadBusy = true;
  els.loadButton.disabled = true;
  els.loadButton.setAttribute("aria-busy", "true");
  els.loadButton.textContent = "Starting…";
  try {
    const json = { path };
    if (state.collection) json.collection = state.collection;
    if (prune) json.prune = true;
    await api("/loads", { method: "POST", json });
    const into = state.collection ? ` into ${state.collection}` : "";
    notify("load", "info", `Load started: ${path}${into}${prune ? ", removing vectors of deleted files" : ""}`);
    await pollJobs();
  } catch (err) {
    notify("load", "error", describeError(err, "load"));
  } finally {
    loadBusy = false;
    els.loadButton.disabled = false;
    els.loadButton.removeAttribute("aria-busy");
    els.loadButton.textContent = "Load";
  }
}

// ---------------------------------------------------------------- job cards

function createJobCard(job) {
  const el = els.jobTemplate.content.firstElementChild.cloneNode(true);
  el.dataset.jobId = job.job_id;
  const card = {
    el,
    job,
    name: $("[data-testid=job-name]", el),
    path: $("[data-testid=job-path]", el),
    collection: $("[data-testid=job-collection]", el),
    pruned: $("[data-testid=job-pruned]", el),
    badge: $("[data-testid=job-state]", el),
    bar: $("[data-testid=job-progress]", el),
    fill: $(".bar-fill", el),
    done: $("[data-testid=job-done]", el),
    rate: $("[data-testid=job-rate]", el),
    eta: $("[data-testid=job-eta]", el),
    etaLabel: $(".eta-label", el),
    indexed: $("[data-testid=job-indexed]", el),
    unchanged: $("[data-testid=job-unchanged]", el),
    failed: $("[data-testid=job-failed]", el),
    message: $("[data-testid=job-message]", el),
    errors: $("[data-testid=job-errors]", el),
    errorsSummary: $("summary", el),
    errorList: $(".error-list", el),
    truncated: $(".truncated", el),
    cancel: $("[data-testid=job-cancel]", el),
    errorsKey: "",
  };
  card.cancel.addEventListener("click", () => cancelJob(card));
  return card;
}

function updateJobCard(card, job) {
  card.job = job;
  const active = ACTIVE_STATES.has(job.state);
  card.el.dataset.state = job.state;
  card.name.textContent = basename(job.path) || job.path;
  card.path.textContent = job.path;
  card.path.title = job.path;
  card.badge.textContent = STATE_LABELS[job.state] ?? job.state;
  card.badge.className = `badge state-${job.state}`;
  const otherCollection = Boolean(job.collection && state.defaultCollection) && job.collection !== state.defaultCollection;
  card.collection.hidden = !otherCollection;
  card.collection.textContent = otherCollection ? `collection ${job.collection}` : "";
  card.collection.title = otherCollection ? `Loaded into the collection ${job.collection}` : "";
  card.pruned.hidden = !job.prune;
  const pruneKnown = job.state !== "queued" && job.state !== "scanning";
  card.pruned.textContent = pruneKnown ? `pruned ${formatNumber(job.pruned)}` : "prune on";
  card.pruned.title = pruneKnown
    ? `${formatNumber(job.pruned)} vector${job.pruned === 1 ? "" : "s"} of files gone from disk removed`
    : "Vectors of files gone from disk will be removed";

  // Until the first batch lands there is nothing to measure: show activity, not a stuck 0 %.
  const indeterminate = active && (job.state === "queued" || job.state === "scanning" || !job.discovered || !job.processed);
  card.bar.classList.toggle("indeterminate", indeterminate);
  card.bar.setAttribute("aria-label", `Progress of loading ${basename(job.path)}`);
  if (indeterminate) {
    card.bar.removeAttribute("aria-valuenow");
    card.bar.setAttribute("aria-valuetext", job.state === "scanning" && job.discovered
      ? `${STATE_LABELS[job.state]} — ${formatNumber(job.discovered)} images found so far`
      : STATE_LABELS[job.state]);
    card.fill.style.width = "";
  } else {
    const pct = Math.max(0, Math.min(100, job.percent ?? 0));
    card.bar.setAttribute("aria-valuenow", String(Math.round(pct)));
    card.bar.setAttribute("aria-valuetext",
      `${Math.round(pct)}% — ${formatNumber(job.processed)} of ${formatNumber(job.discovered)} images`);
    card.fill.style.width = `${pct}%`;
  }

  if (job.state === "scanning") {
    // The walk reports what it has found so far; the total is not known yet.
    card.done.textContent = job.discovered ? `${formatNumber(job.discovered)} found…` : "scanning…";
  } else {
    card.done.textContent = job.discovered || !active
      ? `${formatNumber(job.processed)} / ${formatNumber(job.discovered)}`
      : `${formatNumber(job.processed)} / …`;
  }
  card.rate.textContent = job.images_per_second != null ? `${job.images_per_second.toFixed(1)} img/s` : "—";
  if (active) {
    card.etaLabel.textContent = "ETA";
    card.eta.textContent = job.state === "embedding" && job.eta_seconds != null ? formatDuration(job.eta_seconds) : "—";
  } else {
    card.etaLabel.textContent = "Took";
    const start = Date.parse(job.started_at ?? job.created_at);
    const end = Date.parse(job.finished_at ?? "");
    card.eta.textContent = Number.isFinite(start) && Number.isFinite(end) ? formatDuration((end - start) / 1000) : "—";
  }
  card.indexed.textContent = formatNumber(job.indexed);
  card.unchanged.textContent = formatNumber(job.unchanged);
  card.failed.textContent = formatNumber(job.failed);
  card.failed.classList.toggle("bad", job.failed > 0);

  card.message.hidden = !job.message;
  card.message.textContent = job.message ?? "";

  const errorsKey = `${job.errors.length}:${job.errors_truncated}:${job.failed}`;
  if (errorsKey !== card.errorsKey) {
    card.errorsKey = errorsKey;
    const shown = Math.max(job.failed, job.errors.length);
    card.errors.hidden = shown === 0;
    card.errorsSummary.textContent = `${formatNumber(shown)} failed file${shown === 1 ? "" : "s"} — show reasons`;
    card.errorList.replaceChildren(
      ...job.errors.map((e) => {
        const li = document.createElement("li");
        li.dataset.testid = "job-error";
        li.dataset.path = e.path;
        const code = document.createElement("code");
        const prefix = `${normalisePath(job.path)}/`;
        code.textContent = e.path.startsWith(prefix) ? e.path.slice(prefix.length) : e.path;
        code.title = e.path;
        const reason = document.createElement("span");
        reason.className = "reason";
        reason.textContent = e.reason;
        li.append(code, reason);
        return li;
      }),
    );
    card.truncated.hidden = !job.errors_truncated;
  }

  card.cancel.hidden = !active;
}

/** Redraw every card from the job it shows (the collection tags follow the default collection). */
export function redrawJobCards() {
  for (const card of jobCards.values()) updateJobCard(card, card.job);
}

function renderJobs(jobs) {
  const seen = new Set();
  jobs.forEach((job, index) => {
    let card = jobCards.get(job.job_id);
    if (!card) {
      card = createJobCard(job);
      jobCards.set(job.job_id, card);
    }
    updateJobCard(card, job);
    const at = els.jobs.children[index];
    if (at !== card.el) els.jobs.insertBefore(card.el, at ?? null);
    seen.add(job.job_id);
  });
  for (const [id, card] of jobCards) {
    if (!seen.has(id)) {
      card.el.remove();
      jobCards.delete(id);
    }
  }
  els.jobsEmpty.hidden = jobs.length > 0;
}

async function cancelJob(card) {
  card.cancel.disabled = true;
  try {
    await api(`/loads/${encodeURIComponent(card.job.job_id)}`, { method: "DELETE" });
    notify("load", "info", `Cancelled the load of ${card.job.path}. Images already indexed stay searchable.`);
  } catch (err) {
    notify("load", "error", describeError(err, "cancel"));
  } finally {
    card.cancel.disabled = false;
    await pollJobs();
  }
}

export function pollJobs() {
  // One request at a time; a call during a request queues exactly one more.
  if (pollInFlight) {
    pollAgain = true;
    return pollInFlight;
  }
  clearTimeout(pollTimer);
  pollInFlight = (async () => {
    let anyActive = false;
    try {
      const data = await api(`/loads?limit=${JOB_LIMIT}`);
      markOnline();
      renderJobs(data.jobs);
      const active = new Set(data.jobs.filter((j) => ACTIVE_STATES.has(j.state)).map((j) => j.job_id));
      const finishedSome = [...activeJobs].some((id) => !active.has(id));
      activeJobs = active;
      anyActive = active.size > 0;
      const stale = statsStale();
      if (anyActive || finishedSome || stale) await refreshStats();
      if (finishedSome || stale) await refreshCollections();
    } catch (err) {
      handleBackgroundError(err);
    } finally {
      pollInFlight = null;
      const delay = anyActive ? FAST_POLL_MS : IDLE_POLL_MS;
      if (pollAgain) {
        pollAgain = false;
        pollTimer = setTimeout(pollJobs, 0);
      } else {
        pollTimer = setTimeout(pollJobs, document.hidden && !anyActive ? IDLE_POLL_MS * 3 : delay);
      }
    }
  })();
  return pollInFlight;
}

export function setupLoads() {
  els.loadForm.addEventListener("submit", submitLoad);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) pollJobs();
  });
}
