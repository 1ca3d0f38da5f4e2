// The upload panel of a dataset page: files go straight from the browser to the object
// store by presigned multipart upload (the bytes never pass through the portal):
//   POST {api}/uploads/ -> per file a part size and one presigned PUT URL per part;
//   PUT every slice with XMLHttpRequest (for upload progress), keep each part's ETag;
//   POST {api}/versions/{n}/complete/ with the ETags; poll the version until validated.
// The store is another origin: it must answer CORS preflights and expose ETag.
"use strict";

(() => {
  const root = document.getElementById("ds-upload");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const text = root.dataset;
  const input = $("ds-file-input");
  const drop = $("ds-drop");
  const list = $("ds-upload-files");
  const startButton = $("ds-upload-start");
  const statusLine = $("ds-upload-status");
  const errorBox = $("ds-upload-error");
  const PARALLEL_PARTS = 4;
  const POLL_MS = 1000;
  const POLL_LIMIT_MS = 10 * 60 * 1000;
  let chosen = [];

  const fill = (template, values) =>
    template.replace(/\{(\w+)\}/g, (_, key) => (key in values ? values[key] : `{${key}}`));

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }

  function setStatus(message) {
    statusLine.textContent = message;
  }

  async function api(path, options = {}) {
    const response = await fetch(`${text.api}${path}`, {
      credentials: "same-origin",
      ...options,
      headers: { "Content-Type": "application/json", "X-CSRFToken": text.csrf },
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const detail = body.detail || Object.values(body).flat().join(" ") || response.statusText;
      throw new Error(`${text.msgError} ${response.status}: ${detail}`);
    }
    return body;
  }

  function choose(files) {
    chosen = Array.from(files);
    list.replaceChildren(
      ...chosen.map((file) => {
        const item = document.createElement("li");
        item.dataset.path = file.name;
        const name = document.createElement("code");
        name.textContent = file.name;
        const bar = document.createElement("progress");
        bar.max = 100;
        bar.value = 0;
        const percent = document.createElement("span");
        percent.className = "ds-percent";
        percent.textContent = "0 %";
        item.append(name, " ", bar, " ", percent);
        return item;
      }),
    );
    startButton.disabled = chosen.length === 0;
    showError("");
    setStatus("");
  }

  function progressOf(path) {
    const item = Array.from(list.children).find((li) => li.dataset.path === path);
    const bar = item.querySelector("progress");
    const percent = item.querySelector(".ds-percent");
    return (fraction) => {
      const value = Math.min(100, Math.floor(fraction * 100));
      bar.value = value;
      percent.textContent = `${value} %`;
    };
  }

  // PUT one slice; resolves with its ETag, reports bytes sent so far.
  function putPart(url, blob, number, onBytes) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("PUT", url);
      xhr.upload.onprogress = (event) => onBytes(event.loaded);
      xhr.onload = () => {
        if (xhr.status < 200 || xhr.status >= 300) {
          reject(new Error(fill(text.msgStore, { part: number, status: xhr.status })));
          return;
        }
        const etag = xhr.getResponseHeader("ETag");
        if (!etag) {
          reject(new Error(text.msgNoEtag));
          return;
        }
        onBytes(blob.size);
        resolve(etag);
      };
      xhr.onerror = () => reject(new Error(text.msgNetwork));
      xhr.send(blob);
    });
  }

  async function uploadFile(file, plan) {
    const sent = new Array(plan.urls.length).fill(0);
    const report = progressOf(plan.path);
    const etags = new Array(plan.urls.length);
    let next = 0;
    const worker = async () => {
      while (next < plan.urls.length) {
        const index = next++;
        const start = index * plan.part_size;
        const blob = file.slice(start, Math.min(start + plan.part_size, file.size));
        etags[index] = await putPart(plan.urls[index], blob, index + 1, (bytes) => {
          sent[index] = bytes;
          report(sent.reduce((a, b) => a + b, 0) / file.size);
        });
      }
    };
    await Promise.all(Array.from({ length: PARALLEL_PARTS }, worker));
    report(1);
    return etags;
  }

  async function waitForValidation(number) {
    const deadline = Date.now() + POLL_LIMIT_MS;
    while (Date.now() < deadline) {
      const version = await api(`/versions/${number}/`);
      if (version.state === "ready" || version.state === "invalid") return version;
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
    return null;
  }

  function showResult(version, number) {
    const link = document.createElement("a");
    link.id = "ds-upload-result";
    link.href = `?version=${number}`;
    link.textContent = fill(text.msgView, { n: number });
    if (version === null) {
      setStatus(text.msgTimeout);
    } else if (version.state === "ready") {
      setStatus(fill(text.msgReady, { rows: version.rows }));
    } else {
      setStatus(text.msgInvalid);
    }
    statusLine.dataset.state = version ? version.state : "pending";
    statusLine.append(" ", link);
  }

  async function upload() {
    startButton.disabled = true;
    input.disabled = true;
    showError("");
    setStatus(text.msgUploading);
    try {
      const started = await api("/uploads/", {
        method: "POST",
        body: JSON.stringify({
          files: chosen.map((file) => ({ path: file.name, size: file.size })),
          message: $("ds-upload-message").value,
        }),
      });
      const byName = new Map(chosen.map((file) => [file.name, file]));
      const parts = {};
      for (const plan of started.files) {
        parts[plan.path] = await uploadFile(byName.get(plan.path), plan);
      }
      setStatus(text.msgCompleting);
      await api(`/versions/${started.version}/complete/`, {
        method: "POST",
        body: JSON.stringify({ parts }),
      });
      setStatus(text.msgValidating);
      showResult(await waitForValidation(started.version), started.version);
    } catch (error) {
      setStatus("");
      showError(error.message || String(error));
      startButton.disabled = false;
    } finally {
      input.disabled = false;
    }
  }

  input.addEventListener("change", () => choose(input.files));
  startButton.addEventListener("click", upload);
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("ds-dragging");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("ds-dragging"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("ds-dragging");
    choose(event.dataTransfer.files);
  });
})();
