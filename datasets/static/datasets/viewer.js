// The dataset viewer: pages through a version's rows, full-text search, a `where`
// filter and per-column statistics, all from {api}/{rows|search|filter|statistics}/
// (answers shaped like Hugging Face's dataset viewer: features, rows, num_rows_total).
"use strict";

(() => {
  const root = document.getElementById("ds-viewer");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const text = root.dataset;
  const pageSize = Number(text.pageSize) || 20;
  const table = $("dv-table");
  const summary = $("dv-summary");
  const errorBox = $("dv-error");
  const prev = $("dv-prev");
  const next = $("dv-next");
  const CELL_CHARS = 2000;
  // What the table shows: plain rows, a search or a filter, and from which offset.
  const view = { mode: "rows", query: "", where: "", offset: 0 };

  const fill = (template, values) =>
    template.replace(/\{(\w+)\}/g, (_, key) => (key in values ? values[key] : `{${key}}`));

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }

  async function get(endpoint, params) {
    const query = new URLSearchParams({ file: $("dv-file").value, ...params });
    let response;
    try {
      response = await fetch(`${text.api}/${endpoint}/?${query}`, {
        credentials: "same-origin",
        headers: { "X-CSRFToken": text.csrf },
      });
    } catch (_) {
      throw new Error(text.msgNetwork);
    }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const detail = body.detail || body.error || Object.values(body).flat().join(" ");
      throw new Error(`${text.msgError} ${response.status}: ${detail || response.statusText}`);
    }
    return body;
  }

  // Chat turns read as "role: content" lines; other values as text or JSON.
  function cellText(value) {
    if (value === null || value === undefined) return "";
    if (typeof value === "string") return value;
    if (Array.isArray(value) && value.every((m) => m && typeof m === "object" && "role" in m)) {
      return value.map((m) => `${m.role}: ${typeof m.content === "string" ? m.content : JSON.stringify(m.content)}`).join("\n");
    }
    return JSON.stringify(value);
  }

  function renderRows(answer) {
    const names = answer.features.map((f) => f.name);
    const head = document.createElement("tr");
    for (const label of ["#", ...names]) {
      const th = document.createElement("th");
      th.textContent = label;
      head.append(th);
    }
    const body = answer.rows.map(({ row_idx: index, row }) => {
      const tr = document.createElement("tr");
      tr.className = "dv-row";
      const number = document.createElement("td");
      number.textContent = index;
      tr.append(number);
      for (const name of names) {
        const td = document.createElement("td");
        const value = cellText(row[name]);
        td.textContent = value.length > CELL_CHARS ? `${value.slice(0, CELL_CHARS)}…` : value;
        tr.append(td);
      }
      return tr;
    });
    table.replaceChildren(head, ...body);
  }

  function renderSummary(answer) {
    const total = answer.num_rows_total;
    const shown = answer.rows.length;
    if (!shown) {
      summary.textContent = text.msgNone;
    } else {
      const template = view.mode === "rows" ? text.msgRows : text.msgMatches;
      summary.textContent = fill(template, {
        total,
        from: view.offset + 1,
        to: view.offset + shown,
      });
    }
    if (answer.partial) summary.textContent += ` ${text.msgPartial}`;
    prev.disabled = view.offset === 0;
    next.disabled = view.offset + shown >= total;
  }

  async function load() {
    const params = { offset: view.offset, length: pageSize };
    if (view.mode === "search") params.query = view.query;
    if (view.mode === "filter") params.where = view.where;
    try {
      const answer = await get(view.mode, params);
      showError("");
      renderRows(answer);
      renderSummary(answer);
    } catch (error) {
      showError(error.message);
    }
  }

  function start(mode, fields = {}) {
    Object.assign(view, { query: "", where: "", ...fields, mode, offset: 0 });
    load();
  }

  function statValue(value) {
    if (typeof value === "number") return Number.isInteger(value) ? value : value.toFixed(3);
    return typeof value === "object" && value !== null ? JSON.stringify(value) : String(value);
  }

  async function loadStatistics() {
    let answer;
    try {
      answer = await get("statistics", {});
    } catch (error) {
      showError(error.message);
      return;
    }
    const head = document.createElement("tr");
    for (const label of [text.msgColumn, text.msgType, text.msgStat]) {
      const th = document.createElement("th");
      th.textContent = label;
      head.append(th);
    }
    // The API wraps the viewer's answer ({num_examples, statistics}) in "columns".
    const columns = (answer.columns || answer).statistics || [];
    const rows = columns.map((column) => {
      const tr = document.createElement("tr");
      const stats = Object.entries(column.column_statistics || {})
        .filter(([key]) => key !== "histogram")
        .map(([key, value]) => `${key}: ${statValue(value)}`)
        .join(" · ");
      for (const value of [column.column_name, column.column_type, stats]) {
        const td = document.createElement("td");
        td.textContent = value;
        tr.append(td);
      }
      return tr;
    });
    const result = document.createElement("table");
    result.id = "dv-stats-table";
    result.append(head, ...rows);
    $("dv-stats").replaceChildren(result);
  }

  $("dv-search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const query = $("dv-search").value.trim();
    if (query) start("search", { query });
    else start("rows");
  });
  $("dv-filter-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const where = $("dv-where").value.trim();
    if (where) start("filter", { where });
    else start("rows");
  });
  $("dv-reset").addEventListener("click", () => {
    $("dv-search").value = "";
    $("dv-where").value = "";
    start("rows");
  });
  $("dv-file").addEventListener("change", () => start(view.mode, view));
  $("dv-stats-button").addEventListener("click", loadStatistics);
  prev.addEventListener("click", () => {
    view.offset = Math.max(0, view.offset - pageSize);
    load();
  });
  next.addEventListener("click", () => {
    view.offset += pageSize;
    load();
  });
  start("rows");
})();
