// Say so when an htmx request fails, rather than leaving the page silently out of date; and the
// dialog behaviour that would otherwise be inline handlers, which the page's CSP does not run.
(function () {
  "use strict";

  function show(message) {
    const banner = document.getElementById("request-error");
    banner.textContent = message;
    banner.hidden = false;
  }

  document.addEventListener("htmx:responseError", function (event) {
    const xhr = event.detail.xhr;
    show(xhr.status === 413
      ? "The upload is too large: choose fewer or smaller images."
      : "The server answered " + xhr.status + " " + xhr.statusText + ". Reload the page and try again.");
  });
  document.addEventListener("htmx:sendError", function () {
    show("The server cannot be reached right now; this page catches up once it is back.");
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    if (event.detail.successful) {
      document.getElementById("request-error").hidden = true;
    }
    // The cancel dialog's confirm: close the dialog, and take the focus to what it did.
    const form = event.detail.elt;
    if (form.matches && form.matches("form[data-closes-dialog]")) {
      form.closest("dialog").close();
      document.getElementById("batch-notice").focus();
    }
  });

  // A dialog htmx fills opens once its content has settled in.
  document.addEventListener("htmx:afterSettle", function (event) {
    const dialog = event.target;
    if (dialog.matches && dialog.matches("dialog[data-opens-when-filled]") && !dialog.open) {
      dialog.showModal();
    }
  });
})();
