// The dashboard overview's live view: one WebSocket (/dashboard/ws, authenticated by the
// dashboard session cookie) with the `traffic` room (one frame per second) and the
// `alerts` room (alert.* and anomaly.* events). Frames update the figures, the chart
// (uPlot) and the tables; an event makes the htmx panels reload (`pc:alerts`,
// `pc:events` on <body>). Text goes in with textContent only (no HTML from the wire).
(function () {
  "use strict";
  var HISTORY = 60;          // seconds on the chart and in the 60 s columns
  var PING_MS = 20000;       // the server closes a socket idle for 60 s
  var section = document.getElementById("traffic");
  if (!section) { return; }
  var statusLine = document.getElementById("live-status");
  var routeServices = JSON.parse(section.getAttribute("data-route-services") || "{}");
  var canTraffic = section.getAttribute("data-can-traffic") === "yes";
  var canAlerts = section.getAttribute("data-can-alerts") === "yes";
  var frames = [];           // the last HISTORY frames, oldest first
  // Resume point of the traffic room: at first, a minute ago by the server's clock (the
  // control plane replays the seconds it keeps), then the last frame's second.
  var lastSecond = parseInt(section.getAttribute("data-history-from"), 10);
  if (isNaN(lastSecond)) { lastSecond = null; }
  var lastEvent = null;      // resume point of the alerts room
  var socket = null, pinger = null, retry = 1000, chart = null;

  function setStatus(state, text) {
    statusLine.setAttribute("data-state", state);
    statusLine.textContent = text;
  }

  function fmt(value, digits) {
    if (value === null || value === undefined) { return "–"; }
    return Number(value).toFixed(digits === undefined ? 0 : digits);
  }

  function text(id, value) { document.getElementById(id).textContent = value; }

  function cell(row, value, numeric) {
    var td = document.createElement("td");
    td.textContent = value;
    if (numeric) { td.className = "num"; }
    row.appendChild(td);
  }

  // Sums of one name's entries over the kept frames, and its entry in the newest frame.
  function summarise(kind, keyOf) {
    var groups = {};
    frames.forEach(function (frame, index) {
      var entries = frame[kind] || {};
      Object.keys(entries).forEach(function (name) {
        var key = keyOf ? keyOf(name) : name;
        var e = entries[name];
        var g = groups[key] || (groups[key] = { total: 0, now: null, names: {} });
        g.total += e.requests;
        g.names[name] = true;
        if (index === frames.length - 1) {
          var n = g.now || (g.now = { requests: 0, errors_4xx: 0, errors_5xx: 0, p95_ms: null });
          n.requests += e.requests; n.errors_4xx += e.errors_4xx; n.errors_5xx += e.errors_5xx;
          if (e.p95_ms !== null && (n.p95_ms === null || e.p95_ms > n.p95_ms)) { n.p95_ms = e.p95_ms; }
        }
      });
    });
    return Object.keys(groups).sort(function (a, b) { return groups[b].total - groups[a].total; })
      .slice(0, 20).map(function (key) { return [key, groups[key]]; });
  }

  function fillTable(id, rows, columns) {
    var body = document.querySelector("#" + id + " tbody");
    var fresh = document.createDocumentFragment();
    rows.forEach(function (item) {
      var tr = document.createElement("tr");
      tr.setAttribute("data-name", item[0]);
      columns(tr, item[0], item[1]);
      fresh.appendChild(tr);
    });
    body.replaceChildren(fresh);
  }

  function render() {
    var newest = frames[frames.length - 1];
    var t = newest.totals;
    text("stat-rps", fmt(t.requests));
    text("stat-errors", fmt(t.errors_4xx + t.errors_5xx));
    text("stat-5xx", fmt(t.errors_5xx));
    text("stat-p95", t.p95_ms === null ? "–" : fmt(t.p95_ms, 1) + " ms");
    var total = frames.reduce(function (sum, f) { return sum + f.totals.requests; }, 0);
    var totalEl = document.getElementById("stat-total");
    totalEl.textContent = fmt(total);
    totalEl.setAttribute("data-total", String(total));

    var zero = { requests: 0, errors_4xx: 0, errors_5xx: 0, p95_ms: null };
    fillTable("routes-table", summarise("routes"), function (tr, name, g) {
      var n = g.now || zero;
      tr.setAttribute("data-route", name);
      tr.setAttribute("data-total", String(g.total));
      cell(tr, name); cell(tr, routeServices[name] || "–");
      cell(tr, fmt(n.requests), true); cell(tr, fmt(n.errors_4xx), true);
      cell(tr, fmt(n.errors_5xx), true); cell(tr, fmt(n.p95_ms, 1), true);
      cell(tr, fmt(g.total), true);
    });
    fillTable("services-table", summarise("routes", function (route) {
      return routeServices[route] || "(unknown)";
    }), function (tr, name, g) {
      var n = g.now || zero;
      tr.setAttribute("data-service", name);
      cell(tr, name); cell(tr, fmt(n.requests), true);
      cell(tr, fmt(n.errors_4xx + n.errors_5xx), true); cell(tr, fmt(n.p95_ms, 1), true);
      cell(tr, fmt(g.total), true);
    });
    fillTable("consumers-table", summarise("consumers"), function (tr, name, g) {
      var n = g.now || zero;
      tr.setAttribute("data-consumer", name);
      cell(tr, name); cell(tr, fmt(n.requests), true);
      cell(tr, fmt(n.errors_4xx + n.errors_5xx), true); cell(tr, fmt(g.total), true);
    });
    drawChart();
  }

  function chartData() {
    return [
      frames.map(function (f) { return f.second; }),
      frames.map(function (f) { return f.totals.requests; }),
      frames.map(function (f) { return f.totals.errors_4xx + f.totals.errors_5xx; }),
    ];
  }

  function drawChart() {
    var holder = document.getElementById("traffic-chart");
    if (typeof window.uPlot !== "function") { return; }
    if (chart === null) {
      chart = new window.uPlot({
        width: Math.max(280, holder.clientWidth),
        height: 200,
        series: [
          {},
          { label: "requests/s", stroke: "#0b5cad", width: 2 },
          { label: "errors/s", stroke: "#b00020", width: 2 },
        ],
        axes: [
          {
            incrs: [1, 2, 5, 10, 15, 30, 60],  // whole seconds only
            space: 70,
            values: function (u, splits) {
              return splits.map(function (t) { return new Date(t * 1000).toLocaleTimeString(); });
            },
          },
          { label: "per second" },
        ],
      }, chartData(), holder);
      window.addEventListener("resize", function () {
        chart.setSize({ width: Math.max(280, holder.clientWidth), height: 200 });
      });
    } else {
      chart.setData(chartData());
    }
  }

  function onTraffic(frame) {
    lastSecond = frame.second;
    frames.push(frame);
    while (frames.length > HISTORY) { frames.shift(); }
    render();
  }

  function onEvent(message) {
    lastEvent = message.position;
    var kind = message.event.kind || "";
    document.body.dispatchEvent(new CustomEvent("pc:events"));
    if (kind.indexOf("alert.") === 0 || kind.indexOf("anomaly.") === 0) {
      document.body.dispatchEvent(new CustomEvent("pc:alerts"));
    }
    if (kind.indexOf("upstream.") === 0 || kind.indexOf("circuit.") === 0) {
      document.body.dispatchEvent(new CustomEvent("pc:upstreams"));
    }
  }

  function send(message) { socket.send(JSON.stringify(message)); }

  function subscribe() {
    if (canTraffic) {
      var traffic = { type: "subscribe", room: "traffic", id: "traffic" };
      if (lastSecond !== null) { traffic.after = lastSecond; }
      send(traffic);
    }
    if (canAlerts) {
      var alerts = { type: "subscribe", room: "alerts", id: "alerts" };
      if (lastEvent !== null) { alerts.after = lastEvent; }
      send(alerts);
    }
  }

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + window.location.host + section.getAttribute("data-socket"));
    socket.addEventListener("message", function (raw) {
      var message = JSON.parse(raw.data);
      if (message.type === "welcome") {
        retry = 1000;
        setStatus("live", "Live: updating every second.");
        subscribe();
      } else if (message.type === "traffic") {
        onTraffic(message.traffic);
      } else if (message.type === "event") {
        onEvent(message);
      } else if (message.type === "reset" && message.room === "alerts") {
        lastEvent = message.position;
      } else if (message.type === "error") {
        setStatus("error", "Live stream: " + message.detail);
      } else if (message.type === "closed") {
        setStatus("closed", "Live stream ended: " + message.reason);
      }
    });
    socket.addEventListener("open", function () {
      pinger = window.setInterval(function () { send({ type: "ping" }); }, PING_MS);
    });
    socket.addEventListener("close", function (event) {
      window.clearInterval(pinger);
      if (event.code === 4401 || event.code === 4403) {
        setStatus("closed", "Signed out: reload the page to sign in again.");
        return;
      }
      setStatus("reconnecting", "Connection lost: reconnecting…");
      window.setTimeout(connect, retry);
      retry = Math.min(retry * 2, 15000);
    });
  }

  connect();
})();
