// Golden-set editor keyboard handling: Enter opens a cell, Enter saves (Shift+Enter = new line),
// Escape cancels, leaving a cell saves it. No inline scripts: the page's CSP forbids them.
(function () {
  "use strict";

  function cellForm(el) {
    return el && el.closest ? el.closest("form.cell-form") : null;
  }

  function submit(form) {
    if (form.dataset.done) return;
    form.dataset.done = "1";
    htmx.trigger(form, "submit");
  }

  document.addEventListener("keydown", function (event) {
    var target = event.target;
    var form = cellForm(target);
    if (form) {
      if (event.key === "Escape") {
        event.preventDefault();
        form.dataset.done = "1";
        htmx.ajax("GET", form.dataset.cancelUrl, { target: form.closest("td"), swap: "outerHTML" });
      } else if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        submit(form);
      }
      return;
    }
    if (event.key === "Enter" && target.matches && target.matches("td.cell[tabindex]")) {
      event.preventDefault();
      target.click();
    }
  });

  document.addEventListener("focusout", function (event) {
    var form = cellForm(event.target);
    if (!form || (event.relatedTarget && form.contains(event.relatedTarget))) return;
    // Let a click on another cell start its request first; then save this one.
    setTimeout(function () {
      if (document.body.contains(form)) submit(form);
    }, 0);
  });

  document.addEventListener("change", function (event) {
    if (event.target.classList && event.target.classList.contains("select-all")) {
      var boxes = document.querySelectorAll('input[name="ids"][form="bulk-form"]');
      boxes.forEach(function (box) { box.checked = event.target.checked; });
    }
  });

  document.addEventListener("submit", function (event) {
    var button = event.submitter;
    if (button && button.dataset.confirm && !window.confirm(button.dataset.confirm)) {
      event.preventDefault();
    }
  });

  // htmx:load fires on each piece of new content (an outerHTML swap removes the old target,
  // so events on it never reach the document).
  document.addEventListener("htmx:load", function (event) {
    var root = event.detail.elt;
    var box = root && root.matches && root.matches("td.editing")
      ? root.querySelector("textarea")
      : null;
    if (box) {
      box.focus();
      box.setSelectionRange(box.value.length, box.value.length);
    }
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    var form = event.detail.elt;
    if (!form || !form.classList || !form.classList.contains("add-form") || !event.detail.successful) return;
    var error = document.getElementById("add-error");
    if (event.detail.target && event.detail.target.id === "items-body") {
      form.reset();
      if (error) error.textContent = "";
    }
  });
})();
