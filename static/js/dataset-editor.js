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

  document.addEventListener("htmx:afterSwap", function (event) {
    var box = document.querySelector("td.editing textarea:not([data-focused])");
    if (box) {
      box.dataset.focused = "1";
      box.focus();
      box.setSelectionRange(box.value.length, box.value.length);
    }
    if (event.detail.target && event.detail.target.id === "items-body") {
      var form = document.querySelector("form.add-form");
      var error = document.getElementById("add-error");
      if (form) form.reset();
      if (error) error.textContent = "";
    }
  });
})();
