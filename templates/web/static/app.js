// oarcloud dashboard: live parts fetched again every few seconds, charts
// drawn with Chart.js (Debian's libjs-chart.js) from /api/v1/metrics.
"use strict";

const charts = new Map();

function fmtTime(epoch, span) {
  const d = new Date(epoch * 1000);
  const hm = d.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"});
  return span > 86400 ? d.toLocaleDateString([], {month: "short", day: "numeric"}) + " " + hm : hm;
}

function fmtValue(v, unit) {
  if (unit === "B" || unit === "B/s") {
    const units = ["", "Ki", "Mi", "Gi", "Ti"];
    let i = 0;
    while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return v.toFixed(v < 10 && i ? 1 : 0) + " " + units[i] + unit;
  }
  return (Math.round(v * 10) / 10) + (unit ? " " + unit : "");
}

function metricsUrl(c) {
  const q = new URLSearchParams({kind: c.dataset.kind, subject: c.dataset.subject,
                                 metric: c.dataset.metric, range: c.dataset.range});
  return "/api/v1/metrics?" + q.toString();
}

function lineChart(canvas, label, unit, span) {
  return new Chart(canvas, {
    type: "line",
    data: {datasets: [{label: label, data: [], borderColor: "#2563eb", backgroundColor: "#2563eb33",
                       fill: true, pointRadius: 0, borderWidth: 1.5, tension: 0.2}]},
    options: {animation: false, parsing: false, responsive: true, maintainAspectRatio: false,
              plugins: {legend: {display: false}},
              scales: {x: {type: "linear", ticks: {maxTicksLimit: 6, callback: v => fmtTime(v, span)}},
                       y: {beginAtZero: true, ticks: {callback: v => fmtValue(v, unit)}}}}
  });
}

async function refreshChart(canvas) {
  const resp = await fetch(metricsUrl(canvas), {credentials: "same-origin"});
  if (!resp.ok) { canvas.dataset.error = String(resp.status); return; }
  const body = await resp.json();
  let chart = charts.get(canvas);
  if (!chart) {
    const span = {"1h": 3600, "24h": 86400, "7d": 604800}[canvas.dataset.range] || 3600;
    chart = lineChart(canvas, canvas.dataset.metric, canvas.dataset.unit, span);
    charts.set(canvas, chart);
  }
  chart.data.datasets[0].data = body.points.map(p => ({x: p[0], y: p[1]}));
  const now = Date.now() / 1000, span = {"1h": 3600, "24h": 86400, "7d": 604800}[body.range];
  chart.options.scales.x.min = now - span;   // the whole range, data or not
  chart.options.scales.x.max = now;
  chart.update("none");
  canvas.dataset.points = String(body.points.length);
}

function historyChart(canvas) {
  const rows = JSON.parse(canvas.dataset.history || "[]").filter(r => r.after !== null).reverse();
  const points = rows.map(r => ({x: Date.parse(r.at) / 1000, y: r.after}));
  const span = points.length ? points[points.length - 1].x - points[0].x : 3600;
  const chart = lineChart(canvas, "desired", "", span);
  chart.data.datasets[0].data = points;
  chart.data.datasets[0].stepped = true;
  chart.data.datasets[0].tension = 0;
  chart.data.datasets[0].pointRadius = 2;
  chart.update("none");
  canvas.dataset.points = String(points.length);
}

async function refreshLive() {
  const live = document.getElementById("live");
  if (!live) return;
  const resp = await fetch(location.href, {headers: {"X-Partial": "1"}, credentials: "same-origin"});
  if (resp.redirected || resp.status === 401) { location.reload(); return; }
  if (!resp.ok) return;
  const active = document.activeElement;
  if (active && live.contains(active) && active.matches("input, select")) return;  // typing
  live.innerHTML = await resp.text();
  const updated = document.getElementById("updated");
  if (updated) {
    updated.dataset.at = String(Math.floor(Date.now() / 1000));
    updated.textContent = "live: updated " + new Date().toLocaleTimeString();
  }
}

function tick() {
  refreshLive().catch(() => {});
  document.querySelectorAll("canvas[data-metric]").forEach(c => refreshChart(c).catch(() => {}));
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("canvas[data-metric]").forEach(c => refreshChart(c).catch(() => {}));
  document.querySelectorAll("canvas.history").forEach(historyChart);
  const every = parseInt(document.body.dataset.poll || "5000", 10);
  setInterval(tick, every);
});
