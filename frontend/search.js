// The search panel's query side: an image chosen, dropped or pasted, the number of results,
// the Options disclosure, and the request itself (POST /search, or GET /images/{id}/similar).

import { api, queryString } from "./api.js";
import { clearMessages, describeError, notify } from "./messages.js";
import { clearBusy, clearResults, describeOptions, focusSummary, showResults, showSearching } from "./results.js";
import { $, formatBytes, normalisePath } from "./shared.js";
import { collectionParam, state } from "./state.js";
import { closeViewer } from "./viewer.js";

const TOPK_STORAGE = "picsearch.topK";

const els = {
  dropZone: $("#drop-zone"),
  fileInput: $("#search-file"),
  topK: $("#top-k"),
  searchOptions: $("#search-options"),
  optionsState: $("#options-state"),
  minScore: $("#min-score"),
  folderFilter: $("#folder-filter"),
  collapseInput: $("#collapse-input"),
};

let searchSeq = 0;
let searchAbort = null;
let lastQuery = null; // {kind: "file", file} | {kind: "similar", id, path, thumb}

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

/** Forget the query and its results (another collection is shown now). */
export function resetSearch() {
  searchSeq += 1;
  searchAbort?.abort();
  lastQuery = null;
  clearResults();
  clearBusy();
  closeViewer();
  clearMessages("search");
}

async function runSearch(query) {
  lastQuery = query;
  const seq = ++searchSeq;
  searchAbort?.abort();
  const abort = new AbortController();
  searchAbort = abort;
  clearMessages("search");
  const options = readSearchOptions();
  if (options.error) {
    clearBusy(); // a search this one replaced may have set it
    notify("search", "error", options.error);
    els.searchOptions.open = true;
    options.field.focus();
    return;
  }
  showSearching(query);
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
    if (seq !== searchSeq) return;
    showResults(data, query, options, collection);
  } catch (err) {
    if (err.name === "AbortError" || seq !== searchSeq) return;
    clearResults();
    lastQuery = null;
    notify("search", "error", describeError(err, "search"));
  } finally {
    if (seq === searchSeq) clearBusy();
  }
}

/** "More like this": search for the images like an indexed result, then focus the summary. */
export async function searchLike(result) {
  await runSearch({ kind: "similar", id: result.id, path: result.path, thumb: result.thumbnail_url });
  focusSummary();
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

export function setupSearch() {
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
      if (lastQuery) runSearch(lastQuery);
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
