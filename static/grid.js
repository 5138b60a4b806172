// The live grid (docs/api.md, "Polling"): a conditional poll, and the batch's event stream.
//
// Each GET of the grid fragment sends If-None-Match with the ETag its last 200 carried (the
// first one the tag the page's grid holds in data-etag); the server answers 304 with no body
// when nothing the grid shows changed, and base.html's htmx config swaps nothing for a 304 and
// takes it for no error, so the grid's DOM stays as it is. The header is set here, not left to
// the browser's HTTP cache: a request that carries its own If-None-Match bypasses that cache, so
// the 304 reaches htmx as a 304. Left to the cache, the browser revalidates by itself and hands
// htmx the kept body as a 200, which htmx would swap.
//
// The page also listens to the batch's events (show.html, htmx's SSE extension): a summary or
// the batch's end triggers the same GET (hx-trigger "sse:summary, sse:batch"), so one renderer
// draws the grid. While the stream is open the 2 s poll is held back; when it errs, closes or
// never opens, the poll goes on as before. An open stream that says nothing for the page's
// data-stream-check seconds (a paused batch, or a proxy that holds the events back) lets one
// poll through each time, a 304 when nothing moved, so a stalled stream cannot freeze the grid.
//
// Only a tab that is seen streams: over HTTP/1.1 a browser keeps at most 6 connections to one
// host, and each open stream holds one, so a few hidden batch tabs would leave none for pages.
// A tab that is hidden closes its stream and polls (conditionally, cheaply); shown again, it
// reconnects through the extension's own retry (its onerror, here without an error to log).
(function () {
  "use strict";

  const tags = new Map();   // fragment path -> the ETag of its last 200
  let streaming = false;    // the batch's EventSource is open
  let heard = 0;            // when it opened or last had an event (or a check poll went)

  let source = null;        // the page's EventSource, made here for the extension
  let shelved = false;      // closed here while the tab was hidden

  htmx.createEventSource = function (url) {
    source = new EventSource(url, {withCredentials: true});
    if (document.hidden) shelve();
    return source;
  };

  function shelve() {
    if (!source || source.readyState === EventSource.CLOSED) return;  // or ended at its batch
    source.close();
    shelved = true;
    streaming = false;
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      shelve();
    } else if (shelved) {
      shelved = false;
      // Unless the grid settled meanwhile (polled): then there is nothing left to stream.
      if (document.querySelector("#batch-grid[hx-trigger]") && source.onerror) source.onerror(null);
    }
  });

  function checkMs() {
    const live = document.getElementById("batch-live");
    return 1000 * Number((live && live.dataset.streamCheck) || 30);
  }

  function isGridGet(config) {
    const elt = config && config.elt;
    return !!elt && elt.id === "batch-grid" && config.verb === "get";
  }

  document.addEventListener("htmx:sseOpen", function () { streaming = true; heard = Date.now(); });
  document.addEventListener("htmx:sseMessage", function () { heard = Date.now(); });
  document.addEventListener("htmx:sseError", function () { streaming = false; });
  document.addEventListener("htmx:sseClose", function () { streaming = false; });

  document.addEventListener("htmx:configRequest", function (event) {
    const config = event.detail;
    if (!isGridGet(config)) return;
    // A poll (htmx's timer: no triggering event) while events arrive: the stream says it all.
    if (streaming && !config.triggeringEvent) {
      if (Date.now() - heard < checkMs()) {
        event.preventDefault();
        return;
      }
      heard = Date.now();   // the check poll goes; the next one a whole interval later
    }
    const tag = tags.get(config.path) || config.elt.dataset.etag;
    if (tag) config.headers["If-None-Match"] = tag;
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    const config = event.detail.requestConfig;
    if (!isGridGet(config)) return;
    const xhr = event.detail.xhr;
    const tag = xhr.status === 200 && xhr.getResponseHeader("ETag");
    if (tag) tags.set(config.path, tag);
  });
})();
