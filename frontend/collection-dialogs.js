// The collection bar's two dialogs: "New collection…" (POST /collections) and
// "Clear collection…" / "Delete collection…" (which ask before they DELETE).

import { api } from "./api.js";
import { refreshCollections, refreshStats, selectCollection } from "./collections.js";
import { focusFolderInput, pollJobs } from "./loads.js";
import { clearMessages, describeError, notify } from "./messages.js";
import { resetSearch } from "./search.js";
import { $, formatNumber } from "./shared.js";
import { COLLECTION_NAME, currentName, state } from "./state.js";

const els = {
  newCollectionButton: $("#new-collection-button"),
  newDialog: $("#new-collection-dialog"),
  newForm: $("#new-collection-form"),
  newName: $("#new-collection-name"),
  newModel: $("#new-collection-model"),
  newPooling: $("#new-collection-pooling"),
  newRegions: $("#new-collection-regions"),
  newError: $("#new-collection-error"),
  newCancel: $("#new-collection-cancel"),
  newCreate: $("#new-collection-create"),
  clearButton: $("#clear-button"),
  confirmDialog: $("#confirm-clear"),
  confirmTitle: $("#confirm-title"),
  confirmCount: $("#confirm-count"),
  confirmName: $("#confirm-name"),
  confirmExtra: $("#confirm-extra"),
  confirmButton: $("#confirm-clear-button"),
};

// ---------------------------------------------------------------- new collection

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
  body.regions = els.newRegions.checked;
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
    focusFolderInput();
  } catch (err) {
    showNewError(describeError(err, "create"));
  } finally {
    els.newCreate.disabled = false;
    els.newCreate.textContent = "Create";
  }
}

export function setupNewCollection() {
  els.newCollectionButton.addEventListener("click", () => {
    els.newForm.reset();
    showNewError("");
    els.newDialog.showModal();
    els.newName.focus();
  });
  els.newCancel.addEventListener("click", () => els.newDialog.close("cancel"));
  els.newForm.addEventListener("submit", createCollection);
}

// ---------------------------------------------------------------- clear / delete collection

export function setupClear() {
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
