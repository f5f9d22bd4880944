// Picsearch web UI: plain ES module, no build step, talks to /api/v1 on the same origin.

const API = "/api/v1";
const KEY_STORAGE = "picsearch.apiKey";
const TOPK_STORAGE = "picsearch.topK";
const COLLECTION_STORAGE = "picsearch.collection";
const COLLECTION_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,254}$/;
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

const $ = (selector, root = document) => root.querySelector(selector);
const SUMMARY_HINT = "Similar images appear here, most similar first.";

const els = {
  collectionSelect: $("#collection-select"),
  newCollectionButton: $("#new-collection-button"),
  statCount: $("#stat-count"),
  statModel: $("#stat-model"),
  statWeights: $("#stat-weights"),
  statDevice: $("#stat-device"),
  clearButton: $("#clear-button"),
  settingsButton: $("#settings-button"),
  randomWarning: $("#random-warning"),
  randomWarningText: $("#random-warning-text"),
  keyBanner: $("#key-banner"),
  keyBannerButton: $("#key-banner-button"),
  offlineBanner: $("#offline-banner"),
  offlineText: $("#offline-text"),
  loadForm: $("#load-form"),
  folderInput: $("#folder-input"),
  browseButton: $("#browse-button"),
  rootsList: $("#roots-list"),
  loadButton: $("#load-button"),
  pruneInput: $("#prune-input"),
  loadTarget: $("#load-target"),
  jobs: $("#jobs"),
  jobsEmpty: $("#jobs-empty"),
  jobTemplate: $("#job-template"),
  dropZone: $("#drop-zone"),
  fileInput: $("#search-file"),
  topK: $("#top-k"),
  searchOptions: $("#search-options"),
  optionsState: $("#options-state"),
  minScore: $("#min-score"),
  folderFilter: $("#folder-filter"),
  collapseInput: $("#collapse-input"),
  query: $("#query"),
  queryImage: $("#query-image"),
  queryCaption: $("#query-caption"),
  summary: $("#results-summary"),
  results: $("#results"),
  viewer: $("#viewer"),
  viewerTitle: $("#viewer-title"),
  viewerImage: $("#viewer-image"),
  viewerRank: $("#viewer-rank"),
  viewerScore: $("#viewer-score"),
  viewerPath: $("#viewer-path"),
  viewerDups: $("#viewer-duplicates"),
  viewerDupsTitle: $("#viewer-duplicates-title"),
  viewerDupsList: $("#viewer-duplicates-list"),
  viewerRemove: $("#viewer-remove"),
  viewerOpen: $("#viewer-open"),
  viewerPrev: $("#viewer-prev"),
  viewerNext: $("#viewer-next"),
  moreLikeThis: $("#more-like-this"),
  confirmDialog: $("#confirm-clear"),
  confirmTitle: $("#confirm-title"),
  confirmCount: $("#confirm-count"),
  confirmName: $("#confirm-name"),
  confirmExtra: $("#confirm-extra"),
  confirmButton: $("#confirm-clear-button"),
  removeDialog: $("#confirm-remove"),
  removePath: $("#remove-path"),
  removeCollection: $("#remove-collection"),
  removeDups: $("#remove-dups"),
  newDialog: $("#new-collection-dialog"),
  newForm: $("#new-collection-form"),
  newName: $("#new-collection-name"),
  newModel: $("#new-collection-model"),
  newPooling: $("#new-collection-pooling"),
  newError: $("#new-collection-error"),
  newCancel: $("#new-collection-cancel"),
  newCreate: $("#new-collection-create"),
  picker: $("#folder-dialog"),
  pickerPath: $("#picker-path"),
  pickerInfo: $("#picker-info"),
  pickerError: $("#picker-error"),
  pickerUp: $("#picker-up"),
  pickerList: $("#picker-list"),
  pickerChoose: $("#picker-choose"),
  settingsDialog: $("#settings-dialog"),
  apiKeyInput: $("#api-key"),
};

const messageAreas = {
  global: $("#global-messages"),
  load: $("#load-messages"),
  search: $("#search-messages"),
};

const state = {
  roots: [],
  stats: null,
  collection: null, // selected collection name; null = the server's default collection
  defaultCollection: null, // its name, once the server told us
  collections: [], // CollectionInfo list from the last GET /collections
  collectionsKey: "",
  jobCards: new Map(), // job_id -> card
  activeJobs: new Set(),
  pollTimer: null,
  pollInFlight: null,
  pollAgain: false,
  lastStatsAt: 0,
  loadBusy: false,
  searchSeq: 0,
  searchAbort: null,
  lastQuery: null, // {kind: "file", file} | {kind: "similar", id, path, thumb}
  results: [],
  lastData: null, // {took_ms, options} of the shown results, for the summary line
  resultsCollection: null, // collection param the shown results came from
  removeTarget: null,
  viewerIndex: -1,
  queryUrl: null,
  picker: null, // current FolderListing or null (= list of roots)
};

// ---------------------------------------------------------------- API access

class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

function apiKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";
  }
}

async function api(path, { method = "GET", json, body, signal } = {}) {
  const headers = { Accept: "application/json" };
  const key = apiKey();
  if (key) headers["X-API-Key"] = key;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(API + path, { method, headers, body, signal, cache: "no-store" });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "network", "cannot reach the service");
  }
  let text = "";
  try {
    text = await response.text();
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "network", "the connection broke while reading the answer");
  }
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const code = data?.error ?? `http_${response.status}`;
    const message = data?.message ?? `${response.status} ${response.statusText}`.trim();
    throw new ApiError(response.status, code, message, data?.details);
  }
  return data;
}

function describeError(err, context = "") {
  if (!(err instanceof ApiError)) {
    return `Something went wrong in the page: ${err?.message ?? err}`;
  }
  switch (err.code) {
    case "network":
      return "Cannot reach the Picsearch service. Is it running? Check the server and try again.";
    case "unauthorized":
      return apiKey()
        ? "The server rejected the API key. Open Settings (top right) and enter the correct key."
        : "This server requires an API key. Open Settings (top right) and enter it.";
    case "path_forbidden": {
      const roots = err.details?.image_roots ?? state.roots;
      return `That folder is outside the allowed image roots (${roots.join(", ") || "none configured"}). ` +
        "Choose a folder inside one of them.";
    }
    case "not_found":
      if (context === "load" && /^no collection /.test(err.message)) {
        return `The collection ${currentName()} no longer exists; pick another one.`;
      }
      return context === "load" ? `Folder not found: ${stripPrefix(err.message)}` : `Not found: ${err.message}`;
    case "bad_request":
      return context === "load" ? `That is not a folder Picsearch can load: ${err.message}.` : err.message;
    case "payload_too_large":
      return `That image is too large to upload (${err.message}). Try a smaller copy.`;
    case "unsupported_media_type":
      return "That file is not an image Picsearch can read — use JPEG, PNG, WebP, BMP, GIF or TIFF. " +
        `(${err.message})`;
    case "invalid_image":
      return `The image could not be decoded: ${err.message}. It may be damaged or truncated.`;
    case "service_unavailable":
      return `The service is not ready: ${err.message}. Try again in a moment.`;
    case "collection_mismatch":
      return `The collection was built with another model or weights: ${err.message}`;
    case "conflict":
      if (context === "create") return `That name is taken (${err.message}). Choose another, or pick it in the list.`;
      return context === "cancel" ? `This load has already finished (${err.message}).` : err.message;
    case "validation_error": {
      if (context === "load" && Array.isArray(err.details) && err.details.some((d) => d.loc?.includes("path"))) {
        return 'The folder must be an absolute path starting with "/", inside one of the image roots.';
      }
      const details = Array.isArray(err.details) ? err.details.map((d) => `${d.loc?.slice(-1)[0]}: ${d.msg}`) : [];
      return `The request was not accepted: ${details.join("; ") || err.message}`;
    }
    case "internal_error":
      return "The server hit an internal error. The server logs have the details.";
    default:
      return err.message || `Request failed (${err.status}).`;
  }
}

function stripPrefix(message) {
  return message.replace(/^no such (folder|file): /, "");
}

/** "?a=1&b=2" from the entries that are set (null, undefined, "" and false are left out). */
function queryString(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "" && value !== false) search.set(name, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

// ---------------------------------------------------------------- messages

function notify(area, kind, text, { timeout } = {}) {
  const container = messageAreas[area] ?? messageAreas.global;
  const msg = document.createElement("div");
  msg.className = `msg ${kind}`;
  msg.dataset.testid = kind === "error" ? "error-message" : "info-message";
  const span = document.createElement("span");
  span.textContent = text;
  const close = document.createElement("button");
  close.type = "button";
  close.className = "icon small";
  close.setAttribute("aria-label", "Dismiss message");
  close.textContent = "✕";
  close.addEventListener("click", () => msg.remove());
  msg.append(span, close);
  container.append(msg);
  while (container.children.length > 3) container.firstElementChild.remove();
  const ttl = timeout ?? (kind === "error" ? 0 : 6000);
  if (ttl > 0) setTimeout(() => msg.remove(), ttl);
  return msg;
}

function clearMessages(area) {
  messageAreas[area]?.replaceChildren();
}

function setOffline(offline, text) {
  els.offlineBanner.hidden = !offline;
  if (text) els.offlineText.textContent = text;
}

// ---------------------------------------------------------------- formatting

function formatNumber(n) {
  return Number(n ?? 0).toLocaleString();
}

function formatDuration(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function basename(path) {
  const parts = String(path).split(/[\\/]/).filter(Boolean);
  return parts.at(-1) ?? String(path);
}

function dirname(path) {
  const p = String(path);
  const i = Math.max(p.lastIndexOf("/"), p.lastIndexOf("\\"));
  return i > 0 ? p.slice(0, i) : "";
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

// ---------------------------------------------------------------- collections

/** The selected collection's name (the default one's when known). */
function currentName() {
  return state.collection ?? state.defaultCollection ?? "default";
}

/** The `collection` parameter to send: null for the default collection (the server's choice). */
function collectionParam() {
  return state.collection;
}

function isDefaultCollection(name) {
  return !name || name === state.defaultCollection;
}

function initialCollection() {
  const fromUrl = new URLSearchParams(location.search).get("collection");
  if (fromUrl && COLLECTION_NAME.test(fromUrl)) return fromUrl;
  try {
    const stored = localStorage.getItem(COLLECTION_STORAGE);
    if (stored && COLLECTION_NAME.test(stored)) return stored;
  } catch {
    /* private mode */
  }
  return null;
}

function collectionOptionText(info) {
  const images = `${formatNumber(info.count)} image${info.count === 1 ? "" : "s"}`;
  return `${info.name}${info.default ? " (default)" : ""} · ${images} · ${info.model}`;
}

function renderCollectionSelect() {
  const list = [...state.collections];
  const name = currentName();
  if (state.collection && !list.some((c) => c.name === state.collection)) {
    list.push({ name: state.collection, default: false, count: null, model: "…" });
  }
  if (!list.length) list.push({ name, default: true, count: null, model: "…" });
  // Rebuild only on change: replacing the options of an open drop-down would close it.
  const key = JSON.stringify(list.map((c) => [c.name, c.default, c.count, c.model]));
  if (key !== state.collectionsKey) {
    state.collectionsKey = key;
    els.collectionSelect.replaceChildren(
      ...list.map((info) => {
        const option = document.createElement("option");
        option.value = info.name;
        option.textContent = info.count == null ? info.name : collectionOptionText(info);
        return option;
      }),
    );
  }
  if (els.collectionSelect.value !== name) els.collectionSelect.value = name;
}

/** Reflect the selection everywhere it shows: select, load target, clear button, URL, title. */
function updateCollectionUi() {
  const name = currentName();
  const isDefault = !state.collection;
  els.loadTarget.textContent = isDefault ? `${name} (default)` : name;
  els.clearButton.textContent = isDefault ? "Clear collection…" : "Delete collection…";
  els.clearButton.setAttribute("aria-label",
    isDefault ? `Clear the collection ${name}` : `Delete the collection ${name}`);
  document.title = isDefault ? "Picsearch" : `${name} · Picsearch`;
  renderCollectionSelect();
}

function persistCollection() {
  try {
    if (state.collection) localStorage.setItem(COLLECTION_STORAGE, state.collection);
    else localStorage.removeItem(COLLECTION_STORAGE);
  } catch {
    /* private mode: the URL still carries it */
  }
  const url = new URL(location.href);
  if (state.collection) url.searchParams.set("collection", state.collection);
  else url.searchParams.delete("collection");
  if (url.href !== location.href) history.replaceState(history.state, "", url);
}

/** Switch to `name` (null or the default's name = the default collection). */
function selectCollection(name) {
  const next = isDefaultCollection(name) ? null : name;
  const changed = next !== state.collection;
  state.collection = next;
  persistCollection();
  renderCollectionSelect();
  updateCollectionUi();
  if (!changed) return;
  resetSearch();
  state.stats = null;
  for (const el of [els.statCount, els.statModel, els.statWeights, els.statDevice]) el.textContent = "…";
  refreshStats();
}

async function refreshCollections() {
  try {
    const data = await api("/collections");
    state.collections = data.collections;
    state.defaultCollection = data.collections.find((c) => c.default)?.name ?? state.defaultCollection;
    if (state.collection === state.defaultCollection) state.collection = null;
    const missing = state.collection && !data.collections.some((c) => c.name === state.collection);
    if (missing) {
      notify("global", "error",
        `There is no collection named “${state.collection}” (any more); showing the default collection.`);
      selectCollection(null);
    }
    renderCollectionSelect();
    updateCollectionUi();
    for (const card of state.jobCards.values()) updateJobCard(card, card.job); // collection tags
  } catch (err) {
    handleBackgroundError(err);
  }
}

function setupCollections() {
  els.collectionSelect.addEventListener("change", () => {
    selectCollection(els.collectionSelect.value);
    refreshCollections();
  });
  els.newCollectionButton.addEventListener("click", () => {
    els.newForm.reset();
    showNewError("");
    els.newDialog.showModal();
    els.newName.focus();
  });
  els.newCancel.addEventListener("click", () => els.newDialog.close("cancel"));
  els.newForm.addEventListener("submit", createCollection);
}

function showNewError(text) {
  els.newError.hidden = !text;
  els.newError.textContent = text ?? "";
}

async function createCollection(event) {
  event.preventDefault();
  const name = els.newName.value.trim();
  if (!COLLECTION_NAME.test(name)) {
    showNewError(name
      ? `“${name}” is not a valid name: use letters, digits and _ only, not starting with a digit.`
      : "Give the collection a name.");
    els.newName.focus();
    return;
  }
  if (state.collections.some((c) => c.name === name)) {
    showNewError(`There already is a collection named “${name}”. Choose another name, or pick it in the list.`);
    els.newName.focus();
    return;
  }
  const body = { name, model: els.newModel.value };
  if (els.newPooling.value) body.pooling = els.newPooling.value;
  showNewError("");
  els.newCreate.disabled = true;
  els.newCreate.textContent = "Creating…";
  try {
    const info = await api("/collections", { method: "POST", json: body });
    els.newDialog.close("created");
    await refreshCollections();
    selectCollection(info.name);
    notify("global", "info",
      `Collection “${info.name}” created (${info.model}, ${info.dimension}-d). Load a folder into it.`);
    els.folderInput.focus();
  } catch (err) {
    showNewError(describeError(err, "create"));
  } finally {
    els.newCreate.disabled = false;
    els.newCreate.textContent = "Create";
  }
}

// ---------------------------------------------------------------- collection stats

async function refreshStats() {
  state.lastStatsAt = Date.now();
  const asked = state.collection;
  try {
    const stats = await api(`/stats${queryString({ collection: asked })}`);
    if (asked !== state.collection) return; // switched meanwhile
    if (!asked) state.defaultCollection = stats.collection;
    state.stats = stats;
    els.statCount.textContent = formatNumber(stats.count);
    els.statModel.textContent = `${stats.model} (${stats.dimension}-d, ${stats.index_type})`;
    els.statModel.title = `recipe: ${stats.recipe}; Milvus: ${stats.milvus}`;
    els.statWeights.textContent = stats.weights_id;
    els.statWeights.classList.toggle("warn-text", Boolean(stats.random_weights));
    els.statDevice.textContent = `${stats.device} · ${stats.precision}`;
    els.randomWarning.hidden = !stats.random_weights;
    if (stats.random_weights) {
      els.randomWarningText.textContent =
        `Vectors come from random, untrained weights (${stats.weights_id}), so similarity ` +
        "scores are not meaningful. Start the service with PICSEARCH_WEIGHTS=imagenet for real results.";
    }
    const listed = state.collections.find((c) => c.name === stats.collection);
    if (listed && listed.count !== stats.count) {
      listed.count = stats.count;
      renderCollectionSelect();
    }
    updateKeyNotice();
    updateCollectionUi();
  } catch (err) {
    if (asked !== state.collection) return;
    if (asked && err instanceof ApiError && err.code === "not_found") {
      await refreshCollections(); // notices the collection is gone and switches to the default
      return;
    }
    handleBackgroundError(err);
  }
}

// ---------------------------------------------------------------- roots & load form

async function loadRoots() {
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

function setFolder(path) {
  els.folderInput.value = path;
  els.folderInput.focus();
  // Show the end of a long path (the folder name), not its start.
  els.folderInput.setSelectionRange(path.length, path.length);
  els.folderInput.scrollLeft = els.folderInput.scrollWidth;
}

function normalisePath(p) {
  return p.length > 1 ? p.replace(/[\\/]+$/, "") : p;
}

async function submitLoad(event) {
  event.preventDefault();
  if (state.loadBusy) return;
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
  const running = [...state.jobCards.values()].find(
    (card) => ACTIVE_STATES.has(card.job.state) && normalisePath(card.job.path) === normalisePath(path) &&
      (card.job.collection || target) === target,
  );
  if (running) {
    notify("load", "error", `A load of ${path} is already running; wait for it or cancel it first.`);
    return;
  }
  const prune = els.pruneInput.checked;
  state.loadBusy = true;
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
    state.loadBusy = false;
    els.loadButton.disabled = false;
    els.loadButton.removeAttribute("aria-busy");
    els.loadButton.textContent = "Load";
  }
}

// ---------------------------------------------------------------- jobs

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

function renderJobs(jobs) {
  const seen = new Set();
  jobs.forEach((job, index) => {
    let card = state.jobCards.get(job.job_id);
    if (!card) {
      card = createJobCard(job);
      state.jobCards.set(job.job_id, card);
    }
    updateJobCard(card, job);
    const at = els.jobs.children[index];
    if (at !== card.el) els.jobs.insertBefore(card.el, at ?? null);
    seen.add(job.job_id);
  });
  for (const [id, card] of state.jobCards) {
    if (!seen.has(id)) {
      card.el.remove();
      state.jobCards.delete(id);
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

function pollJobs() {
  // One request at a time; a call during a request queues exactly one more.
  if (state.pollInFlight) {
    state.pollAgain = true;
    return state.pollInFlight;
  }
  clearTimeout(state.pollTimer);
  state.pollInFlight = (async () => {
    let anyActive = false;
    try {
      const data = await api(`/loads?limit=${JOB_LIMIT}`);
      setOffline(false);
      renderJobs(data.jobs);
      const active = new Set(data.jobs.filter((j) => ACTIVE_STATES.has(j.state)).map((j) => j.job_id));
      const finishedSome = [...state.activeJobs].some((id) => !active.has(id));
      state.activeJobs = active;
      anyActive = active.size > 0;
      const stale = Date.now() - state.lastStatsAt > 15000;
      if (anyActive || finishedSome || stale) await refreshStats();
      if (finishedSome || stale) await refreshCollections();
    } catch (err) {
      handleBackgroundError(err);
    } finally {
      state.pollInFlight = null;
      const delay = anyActive ? FAST_POLL_MS : IDLE_POLL_MS;
      if (state.pollAgain) {
        state.pollAgain = false;
        state.pollTimer = setTimeout(pollJobs, 0);
      } else {
        state.pollTimer = setTimeout(pollJobs, document.hidden && !anyActive ? IDLE_POLL_MS * 3 : delay);
      }
    }
  })();
  return state.pollInFlight;
}

let lastBackgroundError = "";
function handleBackgroundError(err) {
  if (err instanceof ApiError && (err.code === "network" || err.status === 502 || err.status === 504)) {
    setOffline(true, "Cannot reach the Picsearch service — retrying every few seconds…");
    return;
  }
  if (err instanceof ApiError && err.code === "service_unavailable") {
    setOffline(true, `The service is not ready: ${err.message}. Retrying…`);
    return;
  }
  setOffline(false);
  const text = describeError(err);
  if (text !== lastBackgroundError) {
    lastBackgroundError = text;
    notify("global", "error", text);
  }
}

// ---------------------------------------------------------------- search

function readTopK() {
  let k = Number.parseInt(els.topK.value, 10);
  if (!Number.isFinite(k)) k = 12;
  k = Math.min(100, Math.max(1, k));
  if (String(k) !== els.topK.value) els.topK.value = String(k);
  try {
    localStorage.setItem(TOPK_STORAGE, String(k));
  } catch {
    /* private mode: fine */
  }
  return k;
}

/** The Options disclosure's values, or {error} when one is not usable. */
function readSearchOptions() {
  const options = { minScore: null, folder: null, collapse: els.collapseInput.checked };
  const rawScore = els.minScore.value.trim();
  if (rawScore || els.minScore.validity.badInput) {
    const score = Number(rawScore);
    if (!rawScore || !Number.isFinite(score) || score < -1 || score > 1) {
      return { error: "The minimum score must be a number from −1 to 1 (or empty for none).", field: els.minScore };
    }
    options.minScore = score;
  }
  const folder = els.folderFilter.value.trim();
  if (folder) {
    if (!folder.startsWith("/")) {
      return { error: 'The folder to search in must be an absolute path starting with "/" (or empty).', field: els.folderFilter };
    }
    options.folder = normalisePath(folder);
  }
  return options;
}

/** "…/holiday" for a long folder path: the summaries stay one line; the field has it all. */
function shortFolder(path) {
  const parts = path.split("/").filter(Boolean);
  return parts.length > 1 ? `…/${parts.at(-1)}` : path;
}

function describeOptions(options) {
  const parts = [];
  if (options.minScore != null) parts.push(`score ≥ ${options.minScore}`);
  if (options.folder) parts.push(`under ${shortFolder(options.folder)}`);
  if (options.collapse) parts.push("identical files merged");
  return parts;
}

function updateOptionsState() {
  const options = readSearchOptions();
  if (options.error) {
    els.optionsState.textContent = "· needs a fix";
    els.searchOptions.classList.add("has-error");
    return;
  }
  els.searchOptions.classList.remove("has-error");
  const parts = describeOptions(options);
  els.optionsState.textContent = parts.length ? `· ${parts.join(" · ")}` : "";
  els.optionsState.title = parts.join("; ");
}

function resetSearch() {
  state.searchSeq += 1;
  state.searchAbort?.abort();
  state.results = [];
  state.lastData = null;
  state.lastQuery = null;
  els.results.replaceChildren();
  els.results.removeAttribute("aria-busy");
  els.summary.textContent = SUMMARY_HINT;
  els.query.hidden = true;
  if (els.viewer.open) els.viewer.close();
  clearMessages("search");
}

function showQuery(query) {
  if (state.queryUrl) {
    URL.revokeObjectURL(state.queryUrl);
    state.queryUrl = null;
  }
  if (query.kind === "file") {
    state.queryUrl = URL.createObjectURL(query.file);
    els.queryImage.src = state.queryUrl;
    els.queryImage.alt = "Your query image";
    const name = query.file.name || "Pasted image";
    els.queryCaption.textContent = `${name} · ${formatBytes(query.file.size)}`;
  } else {
    els.queryImage.src = query.thumb;
    els.queryImage.alt = `Query: ${basename(query.path)}`;
    els.queryCaption.textContent = `More like ${basename(query.path)}`;
  }
  els.query.hidden = false;
}

async function runSearch(query) {
  state.lastQuery = query;
  const seq = ++state.searchSeq;
  state.searchAbort?.abort();
  const abort = new AbortController();
  state.searchAbort = abort;
  clearMessages("search");
  const options = readSearchOptions();
  if (options.error) {
    els.results.removeAttribute("aria-busy"); // a search this one replaced may have set it
    notify("search", "error", options.error);
    els.searchOptions.open = true;
    options.field.focus();
    return;
  }
  showQuery(query);
  els.results.setAttribute("aria-busy", "true");
  els.summary.textContent = "Searching…";
  const collection = collectionParam();
  try {
    const topK = readTopK();
    let data;
    if (query.kind === "file") {
      const form = new FormData();
      form.append("image", query.file, query.file.name || "pasted-image");
      form.append("top_k", String(topK));
      if (collection) form.append("collection", collection);
      if (options.minScore != null) form.append("min_score", String(options.minScore));
      if (options.folder) form.append("folder", options.folder);
      if (options.collapse) form.append("collapse_duplicates", "true");
      data = await api("/search", { method: "POST", body: form, signal: abort.signal });
    } else {
      const params = queryString({
        collection,
        top_k: topK,
        min_score: options.minScore,
        folder: options.folder,
        collapse_duplicates: options.collapse,
      });
      data = await api(`/images/${encodeURIComponent(query.id)}/similar${params}`, { signal: abort.signal });
    }
    if (seq !== state.searchSeq) return;
    state.resultsCollection = collection;
    renderResults(data, query, options);
  } catch (err) {
    if (err.name === "AbortError" || seq !== state.searchSeq) return;
    state.results = [];
    state.lastData = null;
    els.results.replaceChildren();
    els.summary.textContent = SUMMARY_HINT;
    els.query.hidden = true;
    state.lastQuery = null;
    notify("search", "error", describeError(err, "search"));
  } finally {
    if (seq === state.searchSeq) els.results.removeAttribute("aria-busy");
  }
}

function renderResults(data, query, options) {
  state.results = data.results;
  state.lastData = { took_ms: data.took_ms, options, query };
  els.results.replaceChildren(...data.results.map(resultItem));
  renderSummary();
}

function renderSummary() {
  const { took_ms: tookMs, options, query } = state.lastData ?? {};
  if (!query) return;
  const n = state.results.length;
  const filters = describeOptions(options);
  if (n === 0) {
    if (state.stats && state.stats.count === 0) {
      els.summary.textContent = `No images are indexed in ${currentName()} yet — load a folder first.`;
    } else if (options.minScore != null || options.folder) {
      els.summary.textContent = `No similar images with ${filters.filter((f) => !f.startsWith("identical")).join(" and ")}.`;
    } else {
      els.summary.textContent = "No similar images found.";
    }
    return;
  }
  const what = query.kind === "similar" ? ` like ${basename(query.path)}` : "";
  const where = state.resultsCollection ? ` in ${state.resultsCollection}` : "";
  const extra = filters.length ? ` · ${filters.join(" · ")}` : "";
  els.summary.textContent = `${n} result${n === 1 ? "" : "s"}${what}${where}${extra} · ${Math.round(tookMs)} ms`;
}

function resultItem(result, index) {
  const li = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "result";
  button.dataset.testid = "result";
  button.dataset.id = result.id;
  button.dataset.path = result.path;
  button.dataset.score = String(result.score);
  button.title = result.path;
  const dups = result.duplicates?.length ?? 0;
  button.dataset.duplicates = String(dups);
  button.setAttribute("aria-label", `Open ${basename(result.path)}, similarity ${result.score.toFixed(3)}` +
    (dups ? `, plus ${dups} identical file${dups === 1 ? "" : "s"}` : ""));

  const frame = document.createElement("span");
  frame.className = "thumb";
  const img = document.createElement("img");
  img.src = result.thumbnail_url;
  img.alt = "";
  img.loading = index < 12 ? "eager" : "lazy";
  img.decoding = "async";
  img.addEventListener("error", () => frame.classList.add("missing"), { once: true });
  frame.append(img);
  if (dups) {
    const badge = document.createElement("span");
    badge.className = "dups";
    badge.dataset.testid = "result-duplicates";
    badge.textContent = `+${dups} identical`;
    badge.title = result.duplicates.map((d) => d.path).join("\n");
    frame.append(badge);
  }

  const meta = document.createElement("span");
  meta.className = "result-meta";
  const score = document.createElement("span");
  score.className = "score";
  score.dataset.testid = "result-score";
  score.textContent = result.score.toFixed(3);
  const rank = document.createElement("span");
  rank.className = "rank";
  rank.textContent = `#${index + 1}`;
  const name = document.createElement("span");
  name.className = "name";
  name.dataset.testid = "result-path";
  name.textContent = basename(result.path);
  const dir = document.createElement("span");
  dir.className = "dir";
  // LRM marks keep the leading "/" in place inside the right-to-left (ellipsis-at-start) box.
  dir.textContent = `\u200E${dirname(result.path)}\u200E`;
  meta.append(rank, score, name, dir);

  button.append(frame, meta);
  button.addEventListener("click", () => openViewer(index));
  li.append(button);
  return li;
}

function fileFromDataTransfer(dt) {
  if (!dt) return { file: null, hadItems: false };
  const files = [...(dt.files ?? [])];
  const file = files.find((f) => f.type.startsWith("image/")) ?? files[0] ?? null;
  if (file) return { file, hadItems: true };
  for (const item of dt.items ?? []) {
    if (item.kind === "file") {
      const f = item.getAsFile();
      if (f) return { file: f, hadItems: true };
    }
  }
  return { file: null, hadItems: (dt.types ?? []).length > 0 };
}

function searchFile(file) {
  if (!file) return;
  if (file.size === 0) {
    clearMessages("search");
    notify("search", "error", `${file.name || "That file"} is empty — choose an image file.`);
    return;
  }
  const limit = state.stats?.max_upload_bytes;
  if (limit && file.size > limit) {
    clearMessages("search");
    notify("search", "error",
      `${file.name || "That image"} is ${formatBytes(file.size)}, but this server accepts images up to ` +
      `${formatBytes(limit)}. Choose a smaller copy (for example one exported at a lower resolution).`);
    return;
  }
  runSearch({ kind: "file", file });
}

function setupSearchInputs() {
  els.fileInput.addEventListener("change", () => {
    const file = els.fileInput.files?.[0];
    els.fileInput.value = "";
    searchFile(file);
  });

  let dragDepth = 0;
  const hasFiles = (e) => [...(e.dataTransfer?.types ?? [])].some((t) => t === "Files" || t === "text/uri-list");
  window.addEventListener("dragenter", (e) => {
    if (!hasFiles(e)) return;
    dragDepth += 1;
    els.dropZone.classList.add("dragging");
  });
  window.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) els.dropZone.classList.remove("dragging");
  });
  window.addEventListener("dragover", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault(); // allow dropping anywhere on the page instead of navigating away
    if (e.dataTransfer) e.dataTransfer.dropEffect = "copy";
  });
  window.addEventListener("drop", (e) => {
    dragDepth = 0;
    els.dropZone.classList.remove("dragging");
    if (!e.dataTransfer) return;
    e.preventDefault();
    const { file } = fileFromDataTransfer(e.dataTransfer);
    if (file) {
      searchFile(file);
    } else {
      clearMessages("search");
      notify("search", "error",
        "Drop an image file from your computer. Images dragged from another web page can't be read — save it first.");
    }
  });

  document.addEventListener("paste", (e) => {
    const { file, hadItems } = fileFromDataTransfer(e.clipboardData);
    if (file) {
      e.preventDefault();
      searchFile(file);
      return;
    }
    const target = e.target;
    const editable = target instanceof HTMLElement && (target.isContentEditable || target.matches("input, textarea"));
    if (!editable && hadItems) {
      clearMessages("search");
      notify("search", "error", "The clipboard holds no image. Copy an image (not a link to it) and paste again.");
    }
  });

  let topKTimer = null;
  const rerun = () => {
    clearTimeout(topKTimer);
    topKTimer = setTimeout(() => {
      if (state.lastQuery) runSearch(state.lastQuery);
    }, 250);
  };
  els.topK.addEventListener("change", () => {
    readTopK();
    rerun();
  });
  for (const input of [els.minScore, els.folderFilter, els.collapseInput]) {
    input.addEventListener("input", updateOptionsState);
    input.addEventListener("change", () => {
      updateOptionsState();
      rerun();
    });
  }
  updateOptionsState();
  try {
    const stored = localStorage.getItem(TOPK_STORAGE);
    if (stored) els.topK.value = stored;
  } catch {
    /* ignore */
  }
}

// ---------------------------------------------------------------- viewer

function openViewer(index) {
  const result = state.results[index];
  if (!result) return;
  state.viewerIndex = index;
  els.viewerTitle.textContent = basename(result.path);
  els.viewerImage.src = result.image_url;
  els.viewerImage.alt = basename(result.path);
  els.viewerRank.textContent = `#${index + 1} of ${state.results.length}`;
  els.viewerScore.textContent = result.score.toFixed(3);
  els.viewerPath.textContent = result.path;
  els.viewerOpen.href = result.image_url;
  const dups = result.duplicates ?? [];
  els.viewerDups.hidden = dups.length === 0;
  els.viewerDupsTitle.textContent =
    `${dups.length} identical file${dups.length === 1 ? "" : "s"} (same bytes) merged into this result:`;
  els.viewerDupsList.replaceChildren(
    ...dups.map((d) => {
      const li = document.createElement("li");
      li.dataset.testid = "viewer-duplicate";
      const code = document.createElement("code");
      code.textContent = d.path;
      li.append(code);
      return li;
    }),
  );
  els.viewerRemove.disabled = false;
  els.viewerPrev.disabled = index === 0;
  els.viewerNext.disabled = index >= state.results.length - 1;
  if (!els.viewer.open) els.viewer.showModal();
}

function setupViewer() {
  els.viewerPrev.addEventListener("click", () => openViewer(state.viewerIndex - 1));
  els.viewerNext.addEventListener("click", () => openViewer(state.viewerIndex + 1));
  els.viewer.addEventListener("keydown", (e) => {
    if (e.target instanceof HTMLInputElement) return;
    if (e.key === "ArrowLeft" && state.viewerIndex > 0) openViewer(state.viewerIndex - 1);
    if (e.key === "ArrowRight" && state.viewerIndex < state.results.length - 1) openViewer(state.viewerIndex + 1);
  });
  // Click on the backdrop closes the dialog.
  els.viewer.addEventListener("click", (e) => {
    if (e.target === els.viewer) els.viewer.close();
  });
  els.viewerRemove.addEventListener("click", () => {
    const result = state.results[state.viewerIndex];
    if (!result) return;
    state.removeTarget = result;
    els.removePath.textContent = result.path;
    els.removeCollection.textContent = state.resultsCollection ?? currentName();
    const dups = result.duplicates?.length ?? 0;
    els.removeDups.textContent = dups
      ? `Its ${dups} identical cop${dups === 1 ? "y stays" : "ies stay"} indexed. `
      : "";
    els.removeDialog.returnValue = "";
    els.removeDialog.showModal();
  });
  els.removeDialog.addEventListener("close", () => {
    const target = state.removeTarget;
    state.removeTarget = null;
    if (els.removeDialog.returnValue === "confirm" && target) removeFromIndex(target);
  });
  els.moreLikeThis.addEventListener("click", async () => {
    const result = state.results[state.viewerIndex];
    if (!result) return;
    els.viewer.close();
    await runSearch({ kind: "similar", id: result.id, path: result.path, thumb: result.thumbnail_url });
    els.summary.focus();
  });
}

async function removeFromIndex(result) {
  els.viewerRemove.disabled = true;
  const name = basename(result.path);
  const params = queryString({ collection: state.resultsCollection });
  let gone = false;
  try {
    await api(`/images/${encodeURIComponent(result.id)}${params}`, { method: "DELETE" });
    gone = true;
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      gone = true; // removed meanwhile (another tab, the CLI): the result is stale either way
    } else {
      if (els.viewer.open) els.viewer.close();
      notify("search", "error", `Could not remove ${name}: ${describeError(err, "remove")}`);
    }
  } finally {
    els.viewerRemove.disabled = false;
  }
  if (!gone) return;
  if (els.viewer.open) els.viewer.close();
  const index = state.results.findIndex((r) => r.id === result.id);
  if (index >= 0) {
    state.results = state.results.filter((r) => r.id !== result.id);
    els.results.replaceChildren(...state.results.map(resultItem));
    renderSummary();
  }
  notify("search", "info", `Removed ${name} from the index. The file itself is untouched.`);
  const next = els.results.querySelectorAll("[data-testid=result]")[Math.min(index, state.results.length - 1)];
  (next ?? els.summary).focus();
  await refreshStats();
  await refreshCollections();
}

// ---------------------------------------------------------------- clear collection

function setupClear() {
  let target = null; // the collection the open dialog is about (null = default)
  els.clearButton.addEventListener("click", () => {
    target = state.collection;
    const name = currentName();
    els.confirmCount.textContent = state.stats ? formatNumber(state.stats.count) : "the";
    els.confirmName.textContent = name;
    els.confirmTitle.textContent = target ? `Delete the collection “${name}”?` : "Clear the collection?";
    els.confirmExtra.textContent = target
      ? "The collection itself goes too, and the default collection is selected again."
      : "The collection stays, empty.";
    els.confirmButton.textContent = target ? "Delete collection" : "Clear collection";
    els.confirmDialog.returnValue = "";
    els.confirmDialog.showModal();
  });
  els.confirmDialog.addEventListener("close", async () => {
    if (els.confirmDialog.returnValue !== "confirm") return;
    els.clearButton.disabled = true;
    clearMessages("global");
    const dropping = target;
    try {
      const res = dropping
        ? await api(`/collections/${encodeURIComponent(dropping)}?confirm=true`, { method: "DELETE" })
        : await api("/collection?confirm=true", { method: "DELETE" });
      const cancelled = res.cancelled_jobs.length;
      const what = dropping ? `Collection “${dropping}” deleted` : "Collection cleared";
      notify("global", "info",
        `${what}: ${formatNumber(res.dropped)} vectors removed` +
        (cancelled ? `, ${cancelled} running load${cancelled === 1 ? "" : "s"} cancelled.` : "."));
      resetSearch();
      if (dropping && state.collection === dropping) {
        state.collections = state.collections.filter((c) => c.name !== dropping);
        selectCollection(null);
      }
    } catch (err) {
      notify("global", "error", describeError(err, "clear"));
    } finally {
      els.clearButton.disabled = false;
      await refreshCollections();
      await refreshStats();
      await pollJobs();
    }
  });
}

// ---------------------------------------------------------------- folder picker

function pickerShowError(text) {
  els.pickerError.hidden = !text;
  els.pickerError.textContent = text ?? "";
}

function pickerEntry(name, path, label) {
  const li = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "folder";
  button.dataset.testid = "picker-folder";
  button.dataset.path = path;
  button.textContent = name;
  button.setAttribute("aria-label", label ?? `Open folder ${name}`);
  button.addEventListener("click", () => pickerOpen(path));
  li.append(button);
  return li;
}

function pickerShowRoots() {
  state.picker = null;
  pickerShowError("");
  els.pickerPath.textContent = "image roots";
  els.pickerInfo.textContent = state.roots.length ? "Pick a root to browse its folders." : "No image roots are configured.";
  els.pickerList.replaceChildren(...state.roots.map((r) => pickerEntry(r, r, `Open root ${r}`)));
  els.pickerUp.disabled = true;
  els.pickerChoose.disabled = true;
  els.pickerList.querySelector("button")?.focus();
}

async function pickerOpen(path, { quiet = false } = {}) {
  try {
    const data = await api(`/folders?path=${encodeURIComponent(path)}`);
    state.picker = data;
    pickerShowError("");
    els.pickerPath.textContent = data.path;
    const n = data.image_files;
    els.pickerInfo.textContent =
      `${formatNumber(n)} image file${n === 1 ? "" : "s"} directly here · ${data.folders.length} sub-folder${data.folders.length === 1 ? "" : "s"}`;
    if (data.folders.length) {
      els.pickerList.replaceChildren(...data.folders.map((f) => pickerEntry(f.name, f.path)));
    } else {
      const li = document.createElement("li");
      li.className = "hint";
      li.textContent = "No sub-folders.";
      els.pickerList.replaceChildren(li);
    }
    els.pickerUp.disabled = false;
    els.pickerChoose.disabled = false;
    (els.pickerList.querySelector("button") ?? els.pickerChoose).focus();
    return true;
  } catch (err) {
    if (!quiet) pickerShowError(describeError(err, "load"));
    return false;
  }
}

function setupPicker() {
  els.browseButton.addEventListener("click", async () => {
    pickerShowError("");
    els.picker.returnValue = "";
    els.pickerList.replaceChildren();
    els.picker.showModal();
    if (!state.roots.length) await loadRoots();
    const typed = els.folderInput.value.trim();
    if (!(typed && (await pickerOpen(typed, { quiet: true })))) {
      if (state.roots.length === 1) {
        if (!(await pickerOpen(state.roots[0]))) pickerShowRoots();
      } else {
        pickerShowRoots();
      }
    }
  });
  els.pickerUp.addEventListener("click", () => {
    const current = state.picker;
    if (current?.parent) pickerOpen(current.parent);
    else pickerShowRoots();
  });
  els.pickerChoose.addEventListener("click", () => {
    if (!state.picker) return;
    els.picker.close("choose");
    setFolder(state.picker.path);
  });
}

// ---------------------------------------------------------------- settings (API key)

function updateSettingsLabel() {
  const hasKey = Boolean(apiKey());
  const needed = !hasKey && Boolean(state.stats?.api_key_required);
  els.settingsButton.textContent = hasKey ? "Settings · key set" : needed ? "Settings · key needed" : "Settings";
  els.settingsButton.classList.toggle("attention", needed);
  els.settingsButton.setAttribute("aria-label",
    hasKey ? "Settings (API key is set)" : needed ? "Settings (this server needs an API key)" : "Settings (no API key)");
}

/** Say up front that changes need a key, instead of waiting for the first 401. */
function updateKeyNotice() {
  els.keyBanner.hidden = !(state.stats?.api_key_required && !apiKey());
  updateSettingsLabel();
}

function openSettings() {
  els.apiKeyInput.value = apiKey();
  els.settingsDialog.returnValue = "";
  els.settingsDialog.showModal();
}

function setupSettings() {
  els.settingsButton.addEventListener("click", openSettings);
  els.keyBannerButton.addEventListener("click", openSettings);
  els.settingsDialog.addEventListener("close", () => {
    const action = els.settingsDialog.returnValue;
    try {
      if (action === "save") {
        const key = els.apiKeyInput.value.trim();
        if (key) localStorage.setItem(KEY_STORAGE, key);
        else localStorage.removeItem(KEY_STORAGE);
        notify("global", "info", key ? "API key saved in this browser." : "API key removed.");
      } else if (action === "forget") {
        localStorage.removeItem(KEY_STORAGE);
        notify("global", "info", "API key removed from this browser.");
      }
    } catch {
      notify("global", "error", "This browser does not allow storing the API key (private mode?).");
    }
    els.apiKeyInput.value = "";
    updateKeyNotice();
  });
  updateSettingsLabel();
}

// ---------------------------------------------------------------- start

function init() {
  state.collection = initialCollection();
  renderCollectionSelect();
  updateCollectionUi();
  setupCollections();
  els.loadForm.addEventListener("submit", submitLoad);
  setupSearchInputs();
  setupViewer();
  setupClear();
  setupPicker();
  setupSettings();
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) pollJobs();
  });
  loadRoots();
  state.lastStatsAt = Date.now(); // the first stats come after the collection list, below
  refreshCollections().then(() => {
    persistCollection();
    refreshStats();
  });
  pollJobs();
  document.documentElement.dataset.ready = "true";
}

init();
