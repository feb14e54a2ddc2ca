// The portal's usage charts: uPlot (vendored) fed from usage.json on this origin.
// Each [data-usage-chart] gets its application's series; when drawn, the element says
// so (data-state="ready", data-requests=<total>), which tests wait on. The live window
// (data-live) is fetched again every 2 s.
(function () {
  "use strict";
  function ready(fn) {
    if (document.readyState !== "loading") { fn(); } else { document.addEventListener("DOMContentLoaded", fn); }
  }
  function draw(element, app) {
    var chart = app.chart;
    var width = Math.max(280, element.clientWidth || 600);
    var series = [
      {},
      { label: "requests", stroke: "#0b5cad", width: 2 },
      { label: "errors", stroke: "#b00020", width: 2 }
    ];
    var axes = [{}, {}];
    var data = [chart.t, chart.requests, chart.errors];
    if (Array.isArray(chart.latency_p95_ms)) {
      // p95 latency on its own scale (right axis), from the rollups' sketches.
      series.push({ label: "p95 ms", stroke: "#8a4b00", width: 1, scale: "ms" });
      axes.push({ scale: "ms", side: 1, grid: { show: false } });
      data.push(chart.latency_p95_ms);
    }
    var opts = { width: width, height: 220, series: series, axes: axes };
    element.textContent = "";
    new window.uPlot(opts, data, element);
    element.dataset.requests = String(app.totals.requests);
    element.dataset.state = "ready";
  }
  var REFRESH_MS = 2000;
  function load(charts) {
    var src = charts[0].dataset.src;
    return fetch(src, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("usage: " + response.status); }
        return response.json();
      })
      .then(function (overview) {
        var byApp = {};
        overview.apps.forEach(function (app) { byApp[app.app] = app; });
        charts.forEach(function (element) {
          var app = byApp[element.dataset.app];
          if (app) { draw(element, app); } else { element.dataset.state = "empty"; }
        });
      })
      .catch(function () {
        charts.forEach(function (element) {
          element.dataset.state = "failed";
          element.textContent = "The chart could not be loaded.";
        });
      });
  }
  ready(function () {
    var charts = Array.prototype.slice.call(document.querySelectorAll("[data-usage-chart]"));
    if (!charts.length || !window.uPlot) { return; }
    load(charts);
    if (charts[0].dataset.live === "true") {
      window.setInterval(function () { if (!document.hidden) { load(charts); } }, REFRESH_MS);
    }
  });
})();
