// Render Plotly charts whose specs the page embeds as JSON (<script type="application/json">),
// again after htmx swaps in new figures; size share bars from their data-share attribute.
(function () {
  "use strict";
  function draw(root) {
    var scope = root || document;
    scope.querySelectorAll("[data-share]").forEach(function (bar) {
      bar.style.width = Math.round(parseFloat(bar.dataset.share || "0") * 100) + "%";
    });
    if (!window.Plotly) return;
    scope.querySelectorAll("[data-chart]").forEach(function (el) {
      var source = document.getElementById(el.dataset.chart);
      if (!source) return;
      var spec = JSON.parse(source.textContent);
      var layout = Object.assign(
        { font: { family: "system-ui, sans-serif", size: 12 }, paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)" },
        spec.layout || {}
      );
      Plotly.react(el, spec.data, layout, { displaylogo: false, responsive: true });
    });
  }
  function start() { draw(document); }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
  document.addEventListener("htmx:afterSettle", function (event) { draw(event.detail.elt || document); });
})();
