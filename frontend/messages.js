// Messages to the user: the dismissable notes above each panel, the "service unreachable"
// banner, and the wording of every API error in the user's terms.

import { ApiError, apiKey } from "./api.js";
import { $ } from "./shared.js";
import { currentName, state } from "./state.js";

const messageAreas = {
  global: $("#global-messages"),
  load: $("#load-messages"),
  search: $("#search-messages"),
};
const offlineBanner = $("#offline-banner");
const offlineText = $("#offline-text");

export function notify(area, kind, text, { timeout } = {}) {
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

export function clearMessages(area) {
  messageAreas[area]?.replaceChildren();
}

function setOffline(offline, text) {
  offlineBanner.hidden = !offline;
  if (text) offlineText.textContent = text;
}

/** The page reached the service: hide the "unreachable" banner. */
export function markOnline() {
  setOffline(false);
}

export function describeError(err, context = "") {
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

let lastBackgroundError = "";

/** A failure of a request the user did not ask for (polling, stats): banner or one message. */
export function handleBackgroundError(err) {
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
