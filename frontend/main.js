// Picsearch web UI: plain ES modules, no build step, talking to /api/v1 on the same origin.
//
// This module starts the page. Each other module owns one part of index.html and calls the
// modules it imports directly; the two calls the other way (switching collection resets the
// search, the viewer's actions change the results) go through the hooks passed below, so no
// module imports one that imports it.

import { setupClear, setupNewCollection } from "./collection-dialogs.js";
import { setupCollections, startCollections } from "./collections.js";
import { loadRoots, pollJobs, redrawJobCards, setupLoads } from "./loads.js";
import { setupPicker } from "./picker.js";
import { dropResult } from "./results.js";
import { resetSearch, searchLike, setupSearch } from "./search.js";
import { setupSettings } from "./settings.js";
import { setupViewer } from "./viewer.js";

function init() {
  setupCollections({ switched: resetSearch, listed: redrawJobCards });
  setupNewCollection();
  setupLoads();
  setupSearch();
  setupViewer({ moreLikeThis: searchLike, removed: dropResult });
  setupClear();
  setupPicker();
  setupSettings();
  loadRoots();
  startCollections();
  pollJobs();
  document.documentElement.dataset.ready = "true";
}

init();
