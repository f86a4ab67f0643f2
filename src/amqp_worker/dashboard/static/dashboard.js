// amqp-worker dashboard: live overview and its chart. No library, nothing fetched from elsewhere.
"use strict";

const SERIES = {
  published: { label: "published/s", cls: "s1" },
  delivered: { label: "delivered/s", cls: "s2" },
  ready: { label: "ready", cls: "s1" },
  failed: { label: "failed", cls: "s3" },
};

function fmt(value, field) {
  if (value === null || value === undefined) return "—";
  if (field && field.endsWith("_rate")) return Number(value).toFixed(1);
  return Number(value).toLocaleString("en-US");
}

function drawChart(history, management) {
  const svg = document.getElementById("chart");
  const legend = document.getElementById("chart-legend");
  if (!svg || !legend) return;
  const keys = management ? ["published", "delivered"] : ["ready", "failed"];
  const all = keys.flatMap((k) => (history[k] || []).map((p) => p[0]));
  const t0 = Math.min(...all), t1 = Math.max(...all);
  const vmax = Math.max(1, ...keys.flatMap((k) => (history[k] || []).map((p) => p[1])));
  svg.replaceChildren();
  legend.replaceChildren();
  for (const key of keys) {
    const points = history[key] || [];
    if (points.length > 1 && t1 > t0) {
      const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
      line.setAttribute("class", "line " + SERIES[key].cls);
      line.setAttribute(
        "points",
        points.map((p) => `${((p[0] - t0) / (t1 - t0)) * 300},${58 - (p[1] / vmax) * 54}`).join(" "),
      );
      svg.appendChild(line);
    }
    const item = document.createElement("span");
    item.className = "key " + SERIES[key].cls;
    const last = points.length ? points[points.length - 1][1] : null;
    item.textContent = `${SERIES[key].label} ${fmt(last, management ? "x_rate" : "")}`;
    legend.appendChild(item);
  }
}

function applyOverview(data) {
  const known = new Set();
  for (const row of data.rows) {
    const tr = document.querySelector(`#queues tr[data-queue="${CSS.escape(row.queue)}"]`);
    if (!tr) {
      location.reload(); // a new queue appeared: render its row on the server
      return;
    }
    known.add(row.queue);
    for (const cell of tr.querySelectorAll("[data-field]")) {
      const text = fmt(row[cell.dataset.field], cell.dataset.field);
      if (cell.textContent !== text) {
        cell.textContent = text;
        cell.classList.remove("changed");
        void cell.offsetWidth; // restart the highlight animation
        cell.classList.add("changed");
      }
    }
  }
  document.getElementById("total-ready").textContent = fmt(data.totals.ready);
  document.getElementById("total-failed").textContent = fmt(data.totals.failed);
  document.getElementById("total-delayed").textContent = fmt(data.delayed);
  const updated = document.getElementById("updated");
  updated.setAttribute("datetime", data.at);
  updated.textContent = data.at.slice(11, 19) + " UTC";
  const notes = document.getElementById("notes");
  notes.replaceChildren(...data.notes.map((n) => Object.assign(document.createElement("li"), { textContent: n })));
  drawChart(data.history, data.management);
}

function startOverview() {
  const initial = document.getElementById("initial-data");
  if (!initial) return;
  const data = JSON.parse(initial.textContent);
  drawChart(data.history, data.management);
  const every = 1000 * Number(document.body.dataset.refreshS || 2);
  const url = initial.dataset.url;
  async function tick() {
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" } });
      if (response.ok) applyOverview(await response.json());
      document.body.classList.toggle("stale", !response.ok);
    } catch (err) {
      document.body.classList.add("stale");
    }
    setTimeout(tick, every);
  }
  setTimeout(tick, every);
}

function startFailed() {
  const all = document.getElementById("select-page");
  if (!all) return;
  all.addEventListener("change", () => {
    for (const box of document.querySelectorAll("input.pick")) box.checked = all.checked;
  });
}

document.addEventListener("DOMContentLoaded", () => {
  startOverview();
  startFailed();
});
