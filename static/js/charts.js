// Render Plotly charts whose specs the page embeds as JSON (<script type="application/json">),
// again after htmx swaps in new figures; size share bars from their data-share attribute.
//
// The page's text and tables never wait for charts: plotly.js is a deferred script, the first
// chart is drawn once the browser reports the page's first contentful paint, and charts are
// drawn one per frame, those in (or near) the window first, the rest right after — or at once
// when scrolled to. A chart costs tens of milliseconds to draw, so the first one shows without
// waiting for the whole page's worth.
(function () {
  "use strict";
  var NEAR = 200; // px beyond the window that count as "in view"
  var queue = [];
  var scheduled = false;
  var observer = "IntersectionObserver" in window
    ? new IntersectionObserver(function (entries) {
        entries.forEach(function (entry) {
          if (!entry.isIntersecting) return;
          var at = queue.indexOf(entry.target);
          if (at > 0) queue.unshift(queue.splice(at, 1)[0]);
        });
      }, { rootMargin: NEAR + "px 0px" })
    : null;

  function plot(el) {
    if (observer) observer.unobserve(el);
    if (!el.isConnected) return;
    var source = document.getElementById(el.dataset.chart);
    if (!source) return;
    var spec = JSON.parse(source.textContent);
    var layout = Object.assign(
      { font: { family: "system-ui, sans-serif", size: 12 }, paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)" },
      spec.layout || {}
    );
    Plotly.react(el, spec.data, layout, { displaylogo: false, responsive: true });
  }

  // Text first: until the first contentful paint is reported (or for at most PAINT_WAIT_MS where
  // the browser reports none), charts wait.
  var PAINT_WAIT_MS = 1000;
  var painted = !("PerformanceObserver" in window) ||
    (PerformanceObserver.supportedEntryTypes || []).indexOf("paint") < 0 ||
    performance.getEntriesByName("first-contentful-paint").length > 0;
  if (!painted) {
    var onPaint = function () {
      if (painted) return;
      painted = true;
      if (queue.length) schedule();
    };
    new PerformanceObserver(function (list, watcher) {
      if (!list.getEntriesByName("first-contentful-paint").length) return;
      watcher.disconnect();
      onPaint();
    }).observe({ type: "paint", buffered: true });
    setTimeout(onPaint, PAINT_WAIT_MS);
  }

  function pump() {
    scheduled = false;
    if (!window.Plotly || !painted) return;
    var el = queue.shift();
    if (el) plot(el);
    if (queue.length) schedule();
  }

  // Draw in the next frame's gap: after this frame is painted, so each chart shows as it is done.
  function schedule() {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(function () { setTimeout(pump, 0); });
  }

  function inView(el) {
    var box = el.getBoundingClientRect();
    return box.bottom >= -NEAR && box.top <= window.innerHeight + NEAR;
  }

  function draw(root) {
    var scope = root || document;
    scope.querySelectorAll("[data-share]").forEach(function (bar) {
      bar.style.width = Math.round(parseFloat(bar.dataset.share || "0") * 100) + "%";
    });
    var charts = Array.prototype.slice.call(scope.querySelectorAll("[data-chart]"));
    if (scope.matches && scope.matches("[data-chart]")) charts.unshift(scope);
    if (!charts.length) return;
    var near = charts.filter(inView);
    var later = charts.filter(function (el) { return near.indexOf(el) < 0; });
    queue = near.concat(queue.filter(function (el) { return charts.indexOf(el) < 0; }), later);
    if (observer) later.forEach(function (el) { observer.observe(el); });
    schedule();
  }

  function start() { draw(document); }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
  document.addEventListener("htmx:afterSettle", function (event) { draw(event.detail.elt || document); });
})();
