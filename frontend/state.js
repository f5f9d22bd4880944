// What several parts of the page read: the image roots, the selected collection and its stats,
// the search results on show. Each field says which module writes it; the others only read.

export const COLLECTION_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,254}$/;

export const state = {
  roots: [], // the image roots (loads.js)
  stats: null, // GET /stats of the selected collection (collections.js)
  collection: null, // selected collection name; null = the server's default collection (collections.js)
  defaultCollection: null, // its name, once the server told us (collections.js)
  collections: [], // CollectionInfo list from the last GET /collections (collections.js, collection-dialogs.js)
  results: [], // the search results on show, most similar first (results.js)
  resultsCollection: null, // collection param the shown results came from (results.js)
};

/** The selected collection's name (the default one's when known). */
export function currentName() {
  return state.collection ?? state.defaultCollection ?? "default";
}

/** The `collection` parameter to send: null for the default collection (the server's choice). */
export function collectionParam() {
  return state.collection;
}
