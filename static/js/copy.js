// Copy buttons: <button data-copy="#element-id">Copy</button> copies that element's text.
// A static file because the console's Content-Security-Policy allows no inline script.
(function () {
  "use strict";

  function flash(button, text) {
    var label = button.dataset.copyLabel || button.textContent;
    button.dataset.copyLabel = label;
    button.textContent = text;
    window.setTimeout(function () { button.textContent = label; }, 2000);
  }

  function selectText(element) {
    var range = document.createRange();
    range.selectNodeContents(element);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var source = document.querySelector(button.dataset.copy);
    if (!source) return;
    var text = source.textContent.trim();
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(
        function () { flash(button, "Copied"); },
        function () { selectText(source); flash(button, "Press Ctrl+C"); }
      );
    } else {
      // Plain http (a laptop): no clipboard API; select the text for the keyboard shortcut.
      selectText(source);
      flash(button, "Press Ctrl+C");
    }
  });
})();
