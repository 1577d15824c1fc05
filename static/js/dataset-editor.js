// Golden-set editor, keyboard first. Tab reaches every cell; Enter opens it. In the edit box
// Ctrl+Enter (or Cmd+Enter) saves, and so does Enter alone in a question (other fields take
// several lines); Escape cancels; Tab reaches the Save and Cancel buttons. Leaving a cell
// saves it. After a save or cancel from the keyboard the cell gets the focus back.
// Long values are clamped to a few lines; a real "more"/"less" button expands them.
// No inline scripts: the page's CSP forbids them.
(function () {
  "use strict";

  var refocus = null; // id of the cell to focus when it comes back from the server

  function cellForm(el) {
    return el && el.closest ? el.closest("form.cell-form") : null;
  }

  function submit(form, keepFocus) {
    if (form.dataset.done) return;
    form.dataset.done = "1";
    if (keepFocus) refocus = form.closest("td").id;
    htmx.trigger(form, "submit");
  }

  function cancel(form) {
    form.dataset.done = "1";
    refocus = form.closest("td").id;
    htmx.ajax("GET", form.dataset.cancelUrl, { target: form.closest("td"), swap: "outerHTML" });
  }

  // Which clamped values overflow: only those get a visible "more" button.
  function measure(root) {
    var clamps = root.querySelectorAll ? root.querySelectorAll(".clamp") : [];
    clamps.forEach(function (clamp) {
      var button = clamp.nextElementSibling;
      if (!button || !button.classList.contains("expander")) return;
      if (clamp.classList.contains("open")) return;
      var overflowing = clamp.scrollHeight > clamp.clientHeight + 1;
      button.hidden = !overflowing;
      clamp.classList.toggle("clamped", overflowing);
    });
  }

  document.addEventListener("keydown", function (event) {
    var target = event.target;
    var form = cellForm(target);
    if (form) {
      if (event.key === "Escape") {
        event.preventDefault();
        cancel(form);
      } else if (event.key === "Enter" && target.tagName === "TEXTAREA") {
        var save = event.ctrlKey || event.metaKey || (!event.shiftKey && !form.dataset.multiline);
        if (save) {
          event.preventDefault();
          submit(form, true);
        }
      }
      return;
    }
    if (event.key === "Enter" && target.matches && target.matches("td.cell[tabindex]")) {
      event.preventDefault();
      target.click();
    }
  });

  // Capture phase: the expander toggles its value without the click reaching the cell
  // (which would open the editor).
  document.addEventListener(
    "click",
    function (event) {
      var button = event.target.closest && event.target.closest("button.expander");
      if (button) {
        event.stopPropagation();
        var clamp = button.previousElementSibling;
        var open = !clamp.classList.contains("open");
        clamp.classList.toggle("open", open);
        button.setAttribute("aria-expanded", open ? "true" : "false");
        button.textContent = open ? "less" : "more";
        return;
      }
      var cancelButton = event.target.closest && event.target.closest("button.cell-cancel");
      if (cancelButton && cellForm(cancelButton)) {
        event.preventDefault();
        cancel(cellForm(cancelButton));
      }
    },
    true
  );

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.classList && form.classList.contains("cell-form")) {
      if (event.submitter) refocus = form.closest("td").id; // the Save button
      form.dataset.done = "1";
      return;
    }
    var button = event.submitter;
    if (button && button.dataset.confirm && !window.confirm(button.dataset.confirm)) {
      event.preventDefault();
    }
  });

  document.addEventListener("focusout", function (event) {
    var form = cellForm(event.target);
    if (!form || (event.relatedTarget && form.contains(event.relatedTarget))) return;
    // Let a click on another cell start its request first; then save this one.
    setTimeout(function () {
      if (document.body.contains(form)) submit(form, false);
    }, 0);
  });

  document.addEventListener("change", function (event) {
    if (event.target.classList && event.target.classList.contains("select-all")) {
      var boxes = document.querySelectorAll('input[name="ids"][form="bulk-form"]');
      boxes.forEach(function (box) { box.checked = event.target.checked; });
    }
  });

  // htmx:load fires on each piece of new content (an outerHTML swap removes the old target,
  // so events on it never reach the document).
  document.addEventListener("htmx:load", function (event) {
    var root = event.detail.elt;
    if (!root || !root.matches) return;
    measure(root);
    var wanted = refocus && root.id === refocus;
    if (wanted) refocus = null;
    if (root.matches("td.editing")) {
      var box = root.querySelector("textarea");
      if (box) {
        box.focus();
        box.setSelectionRange(box.value.length, box.value.length);
      }
    } else if (wanted && root.hasAttribute("tabindex")) {
      root.focus();
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

  function measureAll() { measure(document); }
  document.addEventListener("DOMContentLoaded", measureAll);
  window.addEventListener("load", measureAll);
  var resizing = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizing);
    resizing = setTimeout(measureAll, 150);
  });
})();
