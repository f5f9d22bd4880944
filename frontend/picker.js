// The folder picker: the load form's Browse… dialog, walking the image roots' folders through
// GET /folders and handing the chosen one back to the form.

import { api } from "./api.js";
import { loadRoots, setFolder, typedFolder } from "./loads.js";
import { describeError } from "./messages.js";
import { $, formatNumber } from "./shared.js";
import { state } from "./state.js";

const els = {
  browseButton: $("#browse-button"),
  picker: $("#folder-dialog"),
  pickerPath: $("#picker-path"),
  pickerInfo: $("#picker-info"),
  pickerError: $("#picker-error"),
  pickerUp: $("#picker-up"),
  pickerList: $("#picker-list"),
  pickerChoose: $("#picker-choose"),
};

let listing = null; // the FolderListing shown, or null while the list of roots is

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
  listing = null;
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
    listing = data;
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

export function setupPicker() {
  els.browseButton.addEventListener("click", async () => {
    pickerShowError("");
    els.picker.returnValue = "";
    els.pickerList.replaceChildren();
    els.picker.showModal();
    if (!state.roots.length) await loadRoots();
    const typed = typedFolder();
    if (!(typed && (await pickerOpen(typed, { quiet: true })))) {
      if (state.roots.length === 1) {
        if (!(await pickerOpen(state.roots[0]))) pickerShowRoots();
      } else {
        pickerShowRoots();
      }
    }
  });
  els.pickerUp.addEventListener("click", () => {
    const current = listing;
    if (current?.parent) pickerOpen(current.parent);
    else pickerShowRoots();
  });
  els.pickerChoose.addEventListener("click", () => {
    if (!listing) return;
    els.picker.close("choose");
    setFolder(listing.path);
  });
}
