// An evaluation run's page: a bar chart per task (Chart.js, vendored) with each metric's
// standard error drawn as a whisker, and, while the run is active, a poll of the page's
// JSON endpoint every ~2 s that refreshes the status, progress bar and sample counts.
// When the run ends the page reloads once, to show its scores.
"use strict";

(() => {
  const root = document.getElementById("ev-run");
  if (!root) return;
  const text = root.dataset;
  const $ = (id) => document.getElementById(id);
  const labels = JSON.parse($("ev-status-labels").textContent);
  const charts = JSON.parse($("ev-chart-data").textContent);
  const pollMs = Number(text.pollMs) || 2000;

  // Chart.js has no error bars: this plugin draws value ± stderr over each bar.
  const whiskers = {
    id: "evWhiskers",
    afterDatasetsDraw(chart) {
      const stderr = chart.data.datasets[0].stderr || [];
      const meta = chart.getDatasetMeta(0);
      const y = chart.scales.y;
      const ctx = chart.ctx;
      ctx.save();
      ctx.strokeStyle = "#333";
      ctx.lineWidth = 1;
      meta.data.forEach((bar, i) => {
        const value = chart.data.datasets[0].data[i];
        const err = stderr[i];
        if (err === null || err === undefined || !Number.isFinite(err)) return;
        const top = y.getPixelForValue(value + err);
        const bottom = y.getPixelForValue(value - err);
        ctx.beginPath();
        ctx.moveTo(bar.x, top);
        ctx.lineTo(bar.x, bottom);
        ctx.moveTo(bar.x - 5, top);
        ctx.lineTo(bar.x + 5, top);
        ctx.moveTo(bar.x - 5, bottom);
        ctx.lineTo(bar.x + 5, bottom);
        ctx.stroke();
      });
      ctx.restore();
    },
  };

  function drawCharts() {
    if (typeof Chart === "undefined") return;
    document.querySelectorAll("#ev-charts canvas").forEach((canvas) => {
      const data = charts[Number(canvas.dataset.index)];
      if (!data) return;
      new Chart(canvas, {
        type: "bar",
        data: {
          labels: data.labels,
          datasets: [{ label: text.msgValue, data: data.values, stderr: data.stderr, backgroundColor: "#7aa6e8" }],
        },
        options: {
          animation: false,
          responsive: true,
          plugins: {
            legend: { display: false },
            tooltip: {
              callbacks: {
                label: (item) => {
                  const err = data.stderr[item.dataIndex];
                  const value = Number(item.raw).toFixed(4);
                  return err === null || err === undefined ? value : `${value} ± ${Number(err).toFixed(4)}`;
                },
              },
            },
          },
          scales: { y: { beginAtZero: true } },
        },
        plugins: [whiskers],
      });
      canvas.dataset.bars = String(data.values.length);
    });
  }

  function showStatus(data) {
    const badge = document.querySelector("#ev-status-box .ev-status");
    badge.className = `ev-status ev-status-${data.status}`;
    badge.dataset.status = data.status;
    badge.textContent = labels[data.status] || data.status;
    $("ev-progress").value = data.percent;
    $("ev-percent").textContent = `${data.percent} %`;
    $("ev-counts").textContent = `${data.done_samples} / ${data.total_samples}`;
  }

  async function poll() {
    let data;
    try {
      const response = await fetch(text.url, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      data = await response.json();
      $("ev-poll-error").hidden = true;
    } catch (error) {
      $("ev-poll-error").textContent = `${text.msgNetwork} (${error.message})`;
      $("ev-poll-error").hidden = false;
      setTimeout(poll, pollMs * 2);
      return;
    }
    showStatus(data);
    if (data.active) {
      setTimeout(poll, pollMs);
    } else {
      window.location.reload(); // the run ended while watched: show its scores
    }
  }

  const filter = $("ev-sample-task");
  if (filter) filter.addEventListener("change", () => filter.form.submit());
  drawCharts();
  if (text.active === "1") poll();
})();
