// The cache insights dashboard: polls `cacheInsights` with the token kept in this tab's
// sessionStorage, keeps the series of successive polls (the server keeps counters only) and
// draws them with uPlot. `?every=<ms>` sets the poll interval (at least 250, default 5000).
"use strict";

(() => {
  const TOKEN_KEY = "catalog-dashboard-token";
  const HISTORY = 360;
  const params = new URLSearchParams(location.search);
  const every = Math.max(250, Number(params.get("every")) || 5000);
  const QUERY = `query CacheInsightsDashboard($first: Int!) {
    cacheInsights(first: $first) {
      trackedOperations operationCapacity memoryBoundBytes
      totals { requests hits stale misses hitRate maxAchievableHitRate missesByReason { reason count } }
      operations {
        name documentHash requests hits stale misses hitRate maxAchievableHitRate p50Ms p99Ms
        missesByReason { reason count }
      }
      topInvalidators { mutation invalidations tags missesCaused operations { operation misses } }
    }
  }`;
  const COLORS = { rate: "#1f77b4", max: "#2ca02c", rps: "#9467bd", p50: "#ff7f0e", p99: "#d62728", bad: "#8c564b" };

  const history = { time: [], hitRate: [], maxRate: [], rps: [] };
  let previous = null;
  let polls = 0;
  let timer = null;
  let charts = null;
  let running = false;

  const $ = (id) => document.getElementById(id);
  const percent = (value) => `${(value * 100).toFixed(1)}%`;
  const status = (text, error) => {
    $("status").textContent = text;
    $("status").className = error ? "error" : "";
  };

  function width(id) {
    return Math.max(300, $(id).clientWidth || 500);
  }

  function lineChart(id, series, range) {
    return new uPlot({
      width: width(id),
      height: 240,
      scales: { x: { time: true }, y: range ? { range } : { auto: true } },
      series: [{}, ...series.map(([label, stroke, dash]) => ({ label, stroke, dash, width: 2, spanGaps: true }))],
    }, [[], ...series.map(() => [])], $(id));
  }

  function barChart(id, series, names) {
    const bars = series.length;
    return new uPlot({
      width: width(id),
      height: 240,
      scales: { x: { time: false, range: (u, min, max) => [min - 0.6, max + 0.6] }, y: { range: (u, min, max) => [0, Math.max(1, max) * 1.1] } },
      series: [{}, ...series.map(([label, color], index) => ({
        label,
        stroke: color,
        fill: color,
        width: 1,
        paths: uPlot.paths.bars({ size: [0.8 / bars, 60], align: bars === 1 ? 0 : (index === 0 ? -1 : 1) }),
        points: { show: false },
      }))],
      axes: [
        { splits: (u) => u.data[0], values: (u, splits) => splits.map((i) => (names()[i - 1] || "").slice(0, 18)) },
        {},
      ],
    }, [[], ...series.map(() => [])], $(id));
  }

  function makeCharts(state) {
    state.operationNames = [];
    state.mutationNames = [];
    return {
      // The hit rate is drawn last, over the (dashed) rate it could reach.
      hitRate: lineChart("chart-hit-rate", [["max achievable", COLORS.max, [6, 4]], ["hit rate", COLORS.rate]], [0, 1]),
      requests: lineChart("chart-requests", [["requests/s", COLORS.rps]]),
      latency: barChart("chart-latency", [["p50 ms", COLORS.p50], ["p99 ms", COLORS.p99]], () => state.operationNames),
      invalidators: barChart("chart-invalidators", [["misses caused", COLORS.bad]], () => state.mutationNames),
    };
  }

  function cell(row, text, className) {
    const td = row.insertCell();
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function renderTables(insights) {
    const operations = $("operations").tBodies[0];
    operations.replaceChildren();
    for (const op of insights.operations) {
      const row = operations.insertRow();
      row.dataset.operation = op.name;
      row.dataset.document = op.documentHash;
      cell(row, op.name, "text");
      const code = document.createElement("code");
      code.textContent = op.documentHash;
      cell(row, "", "text").append(code);
      cell(row, String(op.requests), "requests");
      cell(row, String(op.hits), "hits");
      cell(row, String(op.stale), "stale");
      cell(row, String(op.misses), "misses");
      cell(row, percent(op.hitRate), "hit-rate");
      cell(row, percent(op.maxAchievableHitRate), "max-rate");
      cell(row, op.p50Ms.toFixed(2), "p50");
      cell(row, op.p99Ms.toFixed(2), "p99");
      cell(row, op.missesByReason.map((m) => `${m.reason.toLowerCase()} ${m.count}`).join(", "), "text reasons");
    }
    const invalidators = $("invalidators").tBodies[0];
    invalidators.replaceChildren();
    for (const inv of insights.topInvalidators) {
      const row = invalidators.insertRow();
      row.dataset.mutation = inv.mutation;
      cell(row, inv.mutation, "text");
      cell(row, String(inv.invalidations), "invalidations");
      cell(row, String(inv.tags), "tags");
      cell(row, String(inv.missesCaused), "misses-caused");
      cell(row, inv.operations.map((o) => `${o.operation} ${o.misses}`).join(", "), "text");
    }
  }

  function render(insights, now) {
    const totals = insights.totals;
    const hits = totals.hits + totals.stale;
    const expired = totals.missesByReason.filter((m) => m.reason === "EXPIRED").reduce((sum, m) => sum + m.count, 0);
    const achievable = hits + expired;
    let intervalRate = null;
    let intervalMax = null;
    let rps = null;
    if (previous) {
      const requests = totals.requests - previous.requests;
      const seconds = Math.max(0.001, now - previous.time);
      rps = requests / seconds;
      if (requests > 0) {
        intervalRate = (hits - previous.hits) / requests;
        intervalMax = (achievable - previous.achievable) / requests;
      }
    }
    previous = { time: now, requests: totals.requests, hits, achievable };
    history.time.push(now);
    history.hitRate.push(intervalRate);
    history.maxRate.push(intervalMax);
    history.rps.push(rps);
    if (history.time.length > HISTORY) {
      for (const series of Object.values(history)) series.shift();
    }
    const state = charts ? charts.state : {};
    if (!charts) charts = { state, ...makeCharts(state) };
    const top = insights.operations.slice(0, 10);
    state.operationNames = top.map((op) => op.name);
    state.mutationNames = insights.topInvalidators.map((inv) => inv.mutation);
    charts.hitRate.setData([history.time, history.maxRate, history.hitRate]);
    charts.requests.setData([history.time, history.rps]);
    charts.latency.setData([top.map((_, i) => i + 1), top.map((op) => op.p50Ms), top.map((op) => op.p99Ms)]);
    charts.invalidators.setData([
      insights.topInvalidators.map((_, i) => i + 1),
      insights.topInvalidators.map((inv) => inv.missesCaused),
    ]);

    $("total-requests").textContent = String(totals.requests);
    $("total-hit-rate").textContent = percent(totals.hitRate);
    $("total-max-rate").textContent = percent(totals.maxAchievableHitRate);
    $("total-rps").textContent = rps === null ? "–" : rps.toFixed(1);
    $("tracked").textContent = `${insights.trackedOperations} / ${insights.operationCapacity}`;
    renderTables(insights);
    polls += 1;
    // What the page shows, for tests and tools: the figures of this poll.
    document.body.dataset.figures = JSON.stringify({
      polls,
      totals,
      operations: insights.operations,
      topInvalidators: insights.topInvalidators,
      points: history.time.length,
    });
    status(`Updated ${new Date().toLocaleTimeString()} · every ${every / 1000} s · ${polls} polls`);
  }

  async function poll() {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) {
      status("Enter a token to start.");
      return;
    }
    running = true;
    try {
      const response = await fetch("/graphql", {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
        body: JSON.stringify({ query: QUERY, variables: { first: 20 } }),
      });
      const body = await response.json();
      if (body.errors || !body.data) {
        const codes = (body.errors || []).map((e) => (e.extensions && e.extensions.code) || e.message);
        status(`The server refused: ${codes.join(", ")}`, true);
        return;
      }
      render(body.data.cacheInsights, Date.now() / 1000);
    } catch (error) {
      status(`Could not reach the server: ${error}`, true);
    } finally {
      running = false;
    }
  }

  function start() {
    stop();
    poll();
    timer = setInterval(poll, every);
  }

  function stop() {
    if (timer !== null) clearInterval(timer);
    timer = null;
  }

  $("connect").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    start();
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    stop();
    status("Token forgotten.");
  });

  // Tests and tools stop the polling to read a settled page.
  window.catalogDashboard = { stop, polling: () => running };
  if (sessionStorage.getItem(TOKEN_KEY)) start();
})();
