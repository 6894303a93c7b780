// jobqueue dashboard, version 1: live updates over SSE, charts, selection. No build step.
(function () {
  "use strict";
  var body = document.body;
  var REFRESH_MS = 500;

  // Live updates: one EventSource per page (it resumes with Last-Event-ID by itself). Each
  // batch of job events and queue changes (job_id null: paused, resumed, configured) fires
  // jq:changed (lists and figures refresh, throttled by htmx) and jq:job-<id> for each job
  // (its detail page refreshes).
  function connect() {
    var url = body.getAttribute("data-live");
    if (!url || !window.EventSource) return;
    var mark = document.getElementById("live-state");
    var seen = new Set();
    var source = new EventSource(url);
    source.onopen = function () { if (mark) mark.classList.add("on"); };
    source.onerror = function () { if (mark) mark.classList.remove("on"); };
    // Leaving the page closes the stream: a page kept in the back-forward cache would
    // otherwise hold its connection open (a browser allows six per host: after a few
    // pages, the next navigation waited for one). Coming back from that cache reopens it.
    window.addEventListener("pagehide", function () { source.close(); });
    window.addEventListener("pageshow", function (ev) { if (ev.persisted) location.reload(); });
    // Coalesce: at most one refresh per REFRESH_MS, and the last batch always gets one (a
    // plain throttle would drop it and leave the page stale).
    var pending = null;
    function flush() {
      var batch = pending;
      pending = null;
      body.dispatchEvent(new CustomEvent("jq:changed", { detail: batch.events }));
      batch.jobs.forEach(function (id) { body.dispatchEvent(new CustomEvent("jq:job-" + id)); });
    }
    source.addEventListener("jobs", function (msg) {
      var events = JSON.parse(msg.data), fresh = [];
      events.forEach(function (e) { if (!seen.has(e.id)) { seen.add(e.id); fresh.push(e); } });
      if (!fresh.length) return;
      if (pending === null) {
        pending = { events: [], jobs: new Set() };
        setTimeout(flush, REFRESH_MS);
      }
      fresh.forEach(function (e) {
        pending.events.push(e);
        if (e.job_id !== null) pending.jobs.add(e.job_id);
      });
    });
  }

  // Charts (uPlot): drawn from the JSON the overview renders, redrawn after each refresh.
  function charts() {
    var data = document.getElementById("series");
    if (!data || !window.uPlot) return;
    var s = JSON.parse(data.textContent);
    document.querySelectorAll("[data-chart]").forEach(function (el) {
      el.innerHTML = "";
      var errors = el.getAttribute("data-chart") === "errors";
      var width = Math.max(el.clientWidth, 280);
      var series = errors
        // points too: a minute with attempts between two without (the current one, say) is
        // a dot, not nothing (a line needs two neighbours)
        ? [{}, { label: "error %", stroke: "#c43b3b", fill: "rgba(196,59,59,.1)", spanGaps: false,
                 points: { show: true, size: 5, fill: "#c43b3b" } }]
        : [{}, { label: "completed", stroke: "#23864a", fill: "rgba(35,134,74,.1)" }, { label: "failed", stroke: "#c43b3b" }];
      var values = errors ? [s.t, s.error_rate] : [s.t, s.completed, s.failed];
      new uPlot({ width: width, height: 180, series: series, scales: { x: { time: true } } }, values, el);
    });
  }

  // Selection: "select all" and checked boxes survive a live refresh of the rows.
  var checked = new Set();
  document.addEventListener("change", function (ev) {
    var t = ev.target;
    if (t.id === "select-all") {
      document.querySelectorAll("input[name=id]").forEach(function (box) {
        box.checked = t.checked;
        if (t.checked) checked.add(box.value); else checked.delete(box.value);
      });
    } else if (t.name === "id") {
      if (t.checked) checked.add(t.value); else checked.delete(t.value);
    }
  });
  document.addEventListener("htmx:afterSwap", function () {
    document.querySelectorAll("input[name=id]").forEach(function (box) { box.checked = checked.has(box.value); });
    charts();
  });

  var started = false;
  function start() { if (started) return; started = true; connect(); charts(); }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
