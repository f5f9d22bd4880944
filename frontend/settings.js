// The API key: the Settings button and dialog, and the banner that says up front when this
// server needs a key.

import { apiKey, storeApiKey } from "./api.js";
import { notify } from "./messages.js";
import { $ } from "./shared.js";
import { state } from "./state.js";

const els = {
  settingsButton: $("#settings-button"),
  keyBanner: $("#key-banner"),
  keyBannerButton: $("#key-banner-button"),
  settingsDialog: $("#settings-dialog"),
  apiKeyInput: $("#api-key"),
};

function updateSettingsLabel() {
  const hasKey = Boolean(apiKey());
  const needed = !hasKey && Boolean(state.stats?.api_key_required);
  els.settingsButton.textContent = hasKey ? "Settings · key set" : needed ? "Settings · key needed" : "Settings";
  els.settingsButton.classList.toggle("attention", needed);
  els.settingsButton.setAttribute("aria-label",
    hasKey ? "Settings (API key is set)" : needed ? "Settings (this server needs an API key)" : "Settings (no API key)");
}

/** Say up front that changes need a key, instead of waiting for the first 401. */
export function updateKeyNotice() {
  els.keyBanner.hidden = !(state.stats?.api_key_required && !apiKey());
  updateSettingsLabel();
}

function openSettings() {
  els.apiKeyInput.value = apiKey();
  els.settingsDialog.returnValue = "";
  els.settingsDialog.showModal();
}

export function setupSettings() {
  els.settingsButton.addEventListener("click", openSettings);
  els.keyBannerButton.addEventListener("click", openSettings);
  els.settingsDialog.addEventListener("close", () => {
    const action = els.settingsDialog.returnValue;
    try {
      if (action === "save") {
        const key = els.apiKeyInput.value.trim();
        storeApiKey(key);
        notify("global", "info", key ? "API key saved in this browser." : "API key removed.");
      } else if (action === "forget") {
        storeApiKey("");
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
