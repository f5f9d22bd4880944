// The search panel's answer side: the query image, the summary line and the results grid.
// A result opens in the viewer.

import { notify } from "./messages.js";
import { $, basename, dirname, formatBytes } from "./shared.js";
import { currentName, state } from "./state.js";
import { openViewer } from "./viewer.js";

const SUMMARY_HINT = "Similar images appear here, most similar first.";

const els = {
  query: $("#query"),
  queryImage: $("#query-image"),
  queryCaption: $("#query-caption"),
  summary: $("#results-summary"),
  results: $("#results"),
};

let lastData = null; // {took_ms, options, query} of the shown results, for the summary line
let queryUrl = null; // object URL of the query file on show

/** "…/holiday" for a long folder path: the summaries stay one line; the field has it all. */
function shortFolder(path) {
  const parts = path.split("/").filter(Boolean);
  return parts.length > 1 ? `…/${parts.at(-1)}` : path;
}

/** The search options in words, one entry per option that is set. */
export function describeOptions(options) {
  const parts = [];
  if (options.minScore != null) parts.push(`score ≥ ${options.minScore}`);
  if (options.folder) parts.push(`under ${shortFolder(options.folder)}`);
  if (options.collapse) parts.push("identical files merged");
  return parts;
}

function showQuery(query) {
  if (queryUrl) {
    URL.revokeObjectURL(queryUrl);
    queryUrl = null;
  }
  if (query.kind === "file") {
    queryUrl = URL.createObjectURL(query.file);
    els.queryImage.src = queryUrl;
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

/** A search for `query` has started: show it, and mark the results busy. */
export function showSearching(query) {
  showQuery(query);
  els.results.setAttribute("aria-busy", "true");
  els.summary.textContent = "Searching…";
}

/** No search is running any more. */
export function clearBusy() {
  els.results.removeAttribute("aria-busy");
}

/** Back to the empty panel: no query, no results, the hint. */
export function clearResults() {
  state.results = [];
  lastData = null;
  els.results.replaceChildren();
  els.summary.textContent = SUMMARY_HINT;
  els.query.hidden = true;
}

/** Show the answer `data` to `query`, asked with `options` in `collection`. */
export function showResults(data, query, options, collection) {
  state.resultsCollection = collection;
  state.results = data.results;
  lastData = { took_ms: data.took_ms, options, query };
  els.results.replaceChildren(...data.results.map(resultItem));
  renderSummary();
}

/** Take a result that left the index off the grid, say so, and focus the next one. */
export function dropResult(result) {
  const index = state.results.findIndex((r) => r.id === result.id);
  if (index >= 0) {
    state.results = state.results.filter((r) => r.id !== result.id);
    els.results.replaceChildren(...state.results.map(resultItem));
    renderSummary();
  }
  notify("search", "info", `Removed ${basename(result.path)} from the index. The file itself is untouched.`);
  const next = els.results.querySelectorAll("[data-testid=result]")[Math.min(index, state.results.length - 1)];
  (next ?? els.summary).focus();
}

export function focusSummary() {
  els.summary.focus();
}

function renderSummary() {
  const { took_ms: tookMs, options, query } = lastData ?? {};
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

/** The matched window drawn over a square, cover-fitted thumbnail (percentages of the frame). */
function regionOutline(match) {
  const [x, y, w, h] = match.box;
  const [iw, ih] = match.image_size;
  const scale = 1 / Math.min(iw, ih); // the short side fills the frame
  const left = (x - (iw - Math.min(iw, ih)) / 2) * scale;
  const top = (y - (ih - Math.min(iw, ih)) / 2) * scale;
  const clip = (v) => Math.min(100, Math.max(0, v * 100));
  const box = document.createElement("span");
  box.className = match.verified ? "region-box verified" : "region-box";
  box.dataset.testid = "result-region";
  box.title = match.verified ? "The query was found here" : "Most similar part";
  box.style.left = `${clip(left)}%`;
  box.style.top = `${clip(top)}%`;
  box.style.width = `${clip(left + w * scale) - clip(left)}%`;
  box.style.height = `${clip(top + h * scale) - clip(top)}%`;
  return box;
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
  if (result.match?.kind === "region" && result.match.box && result.match.image_size) {
    frame.append(regionOutline(result.match));
  }
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
