// Draws the usage page's two stacked bar charts from the page's JSON (Chart.js, served locally).
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("usage-data").textContent);
  function draw(id, series) {
    new Chart(document.getElementById(id), {
      type: "bar",
      data: { labels: data.labels, datasets: series },
      options: {
        animation: false,
        responsive: true,
        scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } },
      },
    });
  }
  draw("usage-tokens", data.tokens);
  draw("usage-cost", data.cost);
})();
