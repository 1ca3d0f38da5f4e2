// A fine-tuning job's page: polls the page's JSON endpoint every ~2 s while the job is
// active and refreshes the status, progress bar, loss chart (Chart.js, vendored),
// checkpoints and events. When the job ends the page reloads once, to show its result.
"use strict";

(() => {
  const root = document.getElementById("ft-job");
  if (!root) return;
  const text = root.dataset;
  const labels = JSON.parse(document.getElementById("ft-status-labels").textContent);
  const pollMs = Number(text.pollMs) || 2000;
  const $ = (id) => document.getElementById(id);
  let since = 0;
  let chart = null;

  const metric = (value, digits) =>
    value === null || value === undefined ? "—" : Number(value).toFixed(digits);

  function makeChart() {
    if (typeof Chart === "undefined") return null;
    return new Chart($("ft-loss-chart"), {
      type: "line",
      data: {
        datasets: [
          { label: text.msgTrain, data: [], borderColor: "#2a6cd6", pointRadius: 0, borderWidth: 1.5 },
          { label: text.msgValid, data: [], borderColor: "#d6772a", pointRadius: 2, borderWidth: 1.5, spanGaps: true },
        ],
      },
      options: {
        animation: false,
        responsive: true,
        parsing: false,
        scales: {
          x: { type: "linear", title: { display: true, text: text.msgStep } },
          y: { beginAtZero: false },
        },
      },
    });
  }

  function addPoints(points) {
    if (!points.length) return;
    chart = chart || makeChart();
    if (!chart) return;
    const [train, valid] = chart.data.datasets;
    for (const [step, trainLoss, validLoss] of points) {
      if (step === null || step === undefined) continue;
      if (trainLoss !== null && trainLoss !== undefined) train.data.push({ x: step, y: trainLoss });
      if (validLoss !== null && validLoss !== undefined) valid.data.push({ x: step, y: validLoss });
    }
    chart.update();
    $("ft-no-points").hidden = true;
    $("ft-loss-chart").dataset.points = String(train.data.length + valid.data.length);
  }

  function showStatus(data) {
    const badge = document.querySelector("#ft-status-box .ft-status");
    badge.className = `ft-status ft-status-${data.status}`;
    badge.dataset.status = data.status;
    badge.textContent = labels[data.status] || data.status;
    const percent = Math.round((data.progress || 0) * 100);
    $("ft-progress").value = percent;
    $("ft-percent").textContent = `${percent} %`;
  }

  function showCheckpoints(checkpoints) {
    const body = $("ft-checkpoints");
    body.replaceChildren();
    if (!checkpoints.length) {
      const cell = body.insertRow().insertCell();
      cell.colSpan = 7;
      cell.textContent = text.msgNoCheckpoints;
      return;
    }
    for (const c of checkpoints) {
      const row = body.insertRow();
      const cells = [
        String(c.step), c.id, metric(c.train_loss, 4), metric(c.valid_loss, 4),
        metric(c.train_mean_token_accuracy, 3), metric(c.valid_mean_token_accuracy, 3), c.created_at,
      ];
      cells.forEach((value, i) => {
        const cell = row.insertCell();
        if (i === 1) {
          const code = document.createElement("code");
          code.textContent = value;
          cell.append(code);
        } else {
          cell.textContent = value;
        }
      });
    }
  }

  function showEvents(events) {
    const list = $("ft-events");
    list.replaceChildren(
      ...events.map((e) => {
        const item = document.createElement("li");
        item.className = `ft-event ft-level-${e.level}`;
        const time = document.createElement("time");
        time.textContent = e.created_at;
        item.append(time, ` ${e.message}`);
        return item;
      }),
    );
  }

  async function poll() {
    let data;
    try {
      const response = await fetch(`${text.url}?since=${since}`, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      data = await response.json();
      $("ft-poll-error").hidden = true;
    } catch (error) {
      $("ft-poll-error").textContent = `${text.msgNetwork} (${error.message})`;
      $("ft-poll-error").hidden = false;
      setTimeout(poll, pollMs * 2);
      return;
    }
    since = data.last;
    addPoints(data.points);
    showStatus(data);
    showCheckpoints(data.checkpoints);
    showEvents(data.events);
    if (data.active) {
      setTimeout(poll, pollMs);
    } else if (text.active === "1") {
      window.location.reload(); // the job ended while watched: show its result
    }
  }

  poll();
})();
