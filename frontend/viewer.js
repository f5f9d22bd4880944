// The viewer: one search result large, with paging through the results, "More like this", and
// "Remove from index…" with its confirmation dialog.

import { ApiError, api, queryString } from "./api.js";
import { refreshCollections, refreshStats } from "./collections.js";
import { describeError, notify } from "./messages.js";
import { $, basename } from "./shared.js";
import { currentName, state } from "./state.js";

const els = {
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
  removeDialog: $("#confirm-remove"),
  removePath: $("#remove-path"),
  removeCollection: $("#remove-collection"),
  removeDups: $("#remove-dups"),
};

// Set by setupViewer: what the search panel does for the viewer's two actions.
let hooks = { async moreLikeThis() {}, removed() {} };
let viewerIndex = -1;
let removeTarget = null;

/** Show result `index` of state.results (opens the viewer if it is closed). */
export function openViewer(index) {
  const result = state.results[index];
  if (!result) return;
  viewerIndex = index;
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

export function closeViewer() {
  if (els.viewer.open) els.viewer.close();
}

/**
 * Wire the viewer's controls. `moreLikeThis(result)` searches for images like the result (the
 * viewer is closed first); `removed(result)` runs once the result has left the index.
 */
export function setupViewer({ moreLikeThis, removed }) {
  hooks = { moreLikeThis, removed };
  els.viewerPrev.addEventListener("click", () => openViewer(viewerIndex - 1));
  els.viewerNext.addEventListener("click", () => openViewer(viewerIndex + 1));
  els.viewer.addEventListener("keydown", (e) => {
    if (e.target instanceof HTMLInputElement) return;
    if (e.key === "ArrowLeft" && viewerIndex > 0) openViewer(viewerIndex - 1);
    if (e.key === "ArrowRight" && viewerIndex < state.results.length - 1) openViewer(viewerIndex + 1);
  });
  // Click on the backdrop closes the dialog.
  els.viewer.addEventListener("click", (e) => {
    if (e.target === els.viewer) els.viewer.close();
  });
  els.viewerRemove.addEventListener("click", () => {
    const result = state.results[viewerIndex];
    if (!result) return;
    removeTarget = result;
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
    const target = removeTarget;
    removeTarget = null;
    if (els.removeDialog.returnValue === "confirm" && target) removeFromIndex(target);
  });
  els.moreLikeThis.addEventListener("click", async () => {
    const result = state.results[viewerIndex];
    if (!result) return;
    els.viewer.close();
    await hooks.moreLikeThis(result);
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
  hooks.removed(result);
  await refreshStats();
  await refreshCollections();
}
