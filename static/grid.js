// The live grid's poll as a conditional request (docs/api.md, "Polling"): each poll of the grid
// fragment sends If-None-Match with the ETag its last 200 carried (the first poll the one the
// page's grid holds in data-etag), the server answers 304 with no body when nothing the grid
// shows changed, and base.html's htmx config swaps nothing for a 304 and takes it for no error,
// so the grid's DOM stays as it is.
//
// The header is set here, not left to the browser's HTTP cache: a request that carries its own
// If-None-Match bypasses that cache, so the 304 reaches htmx as a 304. Left to the cache, the
// browser revalidates by itself and hands htmx the kept body as a 200, which htmx would swap.
(function () {
  "use strict";

  const tags = new Map();   // fragment path -> the ETag of its last 200

  function isGridPoll(config) {
    const elt = config && config.elt;
    return !!elt && elt.id === "batch-grid" && config.verb === "get";
  }

  document.addEventListener("htmx:configRequest", function (event) {
    const config = event.detail;
    if (!isGridPoll(config)) return;
    const tag = tags.get(config.path) || config.elt.dataset.etag;
    if (tag) config.headers["If-None-Match"] = tag;
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    const config = event.detail.requestConfig;
    if (!isGridPoll(config)) return;
    const xhr = event.detail.xhr;
    const tag = xhr.status === 200 && xhr.getResponseHeader("ETag");
    if (tag) tags.set(config.path, tag);
  });
})();
