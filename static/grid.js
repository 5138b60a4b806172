// The live grid's poll as a conditional request (docs/api.md, "Polling"): each poll of the grid
// fragment sends If-None-Match with the ETag its last 200 carried, and a 304 swaps nothing (the
// grid's DOM stays as it is) and is no error. Set explicitly, not left to the browser's cache: an
// XHR that relies on the cache sees a 200 with the cached body, which htmx would swap.
(function () {
  "use strict";

  // Before every other rule (the base template's meta config, where [23].. swaps).
  htmx.config.responseHandling.unshift({code: "304", swap: false, error: false});

  const tags = new Map();   // fragment path -> the ETag of its last 200

  function isGridPoll(detail) {
    const elt = detail.elt;
    return elt && elt.id === "batch-grid" && (detail.verb || detail.requestConfig.verb) === "get";
  }

  document.addEventListener("htmx:configRequest", function (event) {
    const detail = event.detail;
    if (!isGridPoll(detail)) return;
    const tag = tags.get(detail.path);
    if (tag) detail.headers["If-None-Match"] = tag;
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    const detail = event.detail;
    if (!detail.requestConfig || !isGridPoll(detail.requestConfig)) return;
    const xhr = detail.xhr;
    const tag = xhr.status === 200 && xhr.getResponseHeader("ETag");
    if (tag) tags.set(detail.requestConfig.path, tag);
  });
})();
