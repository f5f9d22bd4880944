// The collection bar: which collection is selected (remembered in the URL and this browser),
// the list of collections, and the selected one's stats. Everything that names the selected
// collection is updated here: the switcher, the stats, the clear button's label, the load
// form's target, the page title.

import { ApiError, api, queryString } from "./api.js";
import { handleBackgroundError, notify } from "./messages.js";
import { updateKeyNotice } from "./settings.js";
import { $, formatNumber } from "./shared.js";
import { COLLECTION_NAME, currentName, state } from "./state.js";

const COLLECTION_STORAGE = "picsearch.collection";
const STATS_STALE_MS = 15000;

const els = {
  collectionSelect: $("#collection-select"),
  statCount: $("#stat-count"),
  statModel: $("#stat-model"),
  statWeights: $("#stat-weights"),
  statDevice: $("#stat-device"),
  clearButton: $("#clear-button"),
  randomWarning: $("#random-warning"),
  randomWarningText: $("#random-warning-text"),
  loadTarget: $("#load-target"),
};

// Set by setupCollections: what the parts above this one do when the collections change.
let hooks = { switched() {}, listed() {} };
let collectionsKey = "";
let lastStatsAt = 0;

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
  const regions = info.regions ? " · crop search" : "";
  return `${info.name}${info.default ? " (default)" : ""} · ${images} · ${info.model}${regions}`;
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
  if (key !== collectionsKey) {
    collectionsKey = key;
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
export function selectCollection(name) {
  const next = isDefaultCollection(name) ? null : name;
  const changed = next !== state.collection;
  state.collection = next;
  persistCollection();
  renderCollectionSelect();
  updateCollectionUi();
  if (!changed) return;
  hooks.switched();
  state.stats = null;
  for (const el of [els.statCount, els.statModel, els.statWeights, els.statDevice]) el.textContent = "…";
  refreshStats();
}

export async function refreshCollections() {
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
    hooks.listed();
  } catch (err) {
    handleBackgroundError(err);
  }
}

export async function refreshStats() {
  lastStatsAt = Date.now();
  const asked = state.collection;
  try {
    const stats = await api(`/stats${queryString({ collection: asked })}`);
    if (asked !== state.collection) return; // switched meanwhile
    if (!asked) state.defaultCollection = stats.collection;
    state.stats = stats;
    els.statCount.textContent = formatNumber(stats.count);
    const regions = stats.regions ? `, crop search: ${formatNumber(stats.region_count)} regions` : "";
    els.statModel.textContent = `${stats.model} (${stats.dimension}-d, ${stats.index_type}${regions})`;
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

/** Whether the stats shown are old enough to ask again while nothing else changes them. */
export function statsStale() {
  return Date.now() - lastStatsAt > STATS_STALE_MS;
}

/**
 * Select the collection the URL or this browser remembers and wire the switcher.
 * `switched()` runs when another collection gets selected, `listed()` after each new list.
 */
export function setupCollections({ switched, listed }) {
  hooks = { switched, listed };
  state.collection = initialCollection();
  renderCollectionSelect();
  updateCollectionUi();
  els.collectionSelect.addEventListener("change", () => {
    selectCollection(els.collectionSelect.value);
    refreshCollections();
  });
}

/** Ask for the list of collections, then for the selected one's stats. */
export function startCollections() {
  lastStatsAt = Date.now(); // the first stats come after the collection list, below
  refreshCollections().then(() => {
    persistCollection();
    refreshStats();
  });
}
