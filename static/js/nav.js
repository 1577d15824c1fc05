// The top bar's menu groups (<details data-navgroup>): Escape closes an open group and returns
// focus to its button; a click outside it, or opening another group, closes it too.
(function () {
  "use strict";
  function groups() { return document.querySelectorAll("details[data-navgroup]"); }
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    groups().forEach(function (group) {
      if (!group.open) return;
      group.open = false;
      group.querySelector("summary").focus();
    });
  });
  document.addEventListener("click", function (event) {
    groups().forEach(function (group) {
      if (group.open && !group.contains(event.target)) group.open = false;
    });
  });
  document.addEventListener("toggle", function (event) {
    var opened = event.target;
    if (!opened.matches || !opened.matches("details[data-navgroup]") || !opened.open) return;
    groups().forEach(function (group) { if (group !== opened) group.open = false; });
  }, true);
})();
