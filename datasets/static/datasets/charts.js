// Draws each histogram of a version's statistics ({bin_edges, hist} per file and kind)
// as a bar chart with Chart.js (vendored, served locally).
"use strict";

(() => {
  const source = document.getElementById("ds-charts");
  if (!source || typeof Chart === "undefined") return;
  const label = (low, high) => `${Math.round(low)}–${Math.round(high)}`;
  for (const chart of JSON.parse(source.textContent)) {
    const edges = chart.bin_edges;
    new Chart(document.getElementById(chart.id), {
      type: "bar",
      data: {
        labels: chart.hist.map((_, i) => label(edges[i], edges[i + 1])),
        datasets: [{ label: chart.kind, data: chart.hist }],
      },
      options: {
        animation: false,
        responsive: true,
        plugins: { legend: { display: false } },
        scales: { y: { beginAtZero: true } },
      },
    });
  }
})();
