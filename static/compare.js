// The batch page's lightbox: a result opens large in #compare-dialog; ←/→ move between the
// batch's results, Esc closes and the focus goes back to the card that opened it; a slider
// reveals the input over the result. htmx replaces the grid every 2 s while the batch runs, so
// everything is delegated to the document and the results are read from the grid as it is now.
(function () {
  "use strict";

  const OPENER = "#batch-grid a.open-compare";
  let current = null; // the id of the tile shown
  let openedFrom = null; // the id of the tile whose result was clicked

  function byId(id) {
    return document.getElementById(id);
  }

  function results() {
    return [...document.querySelectorAll(OPENER)];
  }

  function openerOf(tileId) {
    const tile = byId(tileId);
    return tile && tile.querySelector("a.open-compare");
  }

  function reveal(value) {
    // A custom property set through the CSSOM: the CSP refuses style attributes, not this.
    byId("compare-stage").style.setProperty("--reveal", value + "%");
    byId("compare-slider").setAttribute("aria-valuetext", "the left " + value + "% shows the input");
  }

  function show(link) {
    const all = results();
    const index = all.indexOf(link);
    const name = link.dataset.name;
    const input = link.dataset.input;
    current = link.closest(".tile").id;
    byId("compare-name").textContent = name;
    byId("compare-count").textContent = "result " + (index + 1) + " of " + all.length;
    const result = byId("compare-result");
    result.src = link.href;
    result.alt = "Result for " + name;
    const before = byId("compare-input");
    if (input) {
      before.src = input;
      before.alt = "Input " + name;
    } else {
      before.removeAttribute("src");
      before.alt = "";
    }
    byId("compare-before").hidden = !input;
    byId("compare-slider-box").hidden = !input;
    byId("compare-no-input").hidden = !!input;
    byId("compare-prev").disabled = all.length < 2;
    byId("compare-next").disabled = all.length < 2;
  }

  function step(by) {
    const all = results();
    const at = all.indexOf(openerOf(current));
    if (all.length === 0) {
      return;
    }
    show(all[(Math.max(at, 0) + by + all.length) % all.length]);
  }

  function outside(dialog, event) {
    const box = dialog.getBoundingClientRect();
    return event.clientX < box.left || event.clientX > box.right
      || event.clientY < box.top || event.clientY > box.bottom;
  }

  document.addEventListener("click", function (event) {
    const link = event.target.closest && event.target.closest(OPENER);
    if (link) {
      // A click with a modifier (a new tab, a download) keeps the link's own meaning.
      if (event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) {
        return;
      }
      event.preventDefault();
      const dialog = byId("compare-dialog");
      show(link);
      openedFrom = current;
      reveal(byId("compare-slider").value);
      if (!dialog.open) {
        dialog.showModal();
      }
      byId("compare-close").focus();
      return;
    }
    const target = event.target;
    if (target.closest("#compare-close")) {
      byId("compare-dialog").close();
    } else if (target.closest("#compare-prev")) {
      step(-1);
    } else if (target.closest("#compare-next")) {
      step(1);
    } else if (target.id === "compare-dialog" && outside(target, event)) {
      target.close(); // a click on the backdrop
    }
  });

  document.addEventListener("keydown", function (event) {
    const dialog = byId("compare-dialog");
    if (!dialog || !dialog.open || event.altKey || event.ctrlKey || event.metaKey) {
      return;
    }
    // On the slider the arrows move the divide, as on any slider.
    if (event.target.id === "compare-slider") {
      return;
    }
    if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
      event.preventDefault();
      step(event.key === "ArrowRight" ? 1 : -1);
    }
  });

  document.addEventListener("input", function (event) {
    if (event.target.id === "compare-slider") {
      reveal(event.target.value);
    }
  });

  // However it closes (Esc, the button, the backdrop), the focus goes back to the card that
  // opened it, as it is in the grid now (htmx may have replaced the one that was clicked).
  document.addEventListener("close", function (event) {
    if (event.target.id !== "compare-dialog") {
      return;
    }
    const link = openedFrom && openerOf(openedFrom);
    if (link) {
      link.focus();
    }
  }, true);
})();
