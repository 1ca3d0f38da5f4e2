// The playground: chat with a model through /v1, authorised by the browser session.
// The CSRF token goes in X-CSRFToken and the browser adds Origin; the gateway accepts a
// session only with both (portal/gateway/session.py). No API key is ever in the page.
// Every answer carries the explicit label 「人工智能生成」 and a "report" control that
// sends the answer, the model and the conversation to /api/governance/reports/.
"use strict";

(() => {
  const root = document.getElementById("playground");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const text = root.dataset;
  const form = $("pg-form");
  const modelSelect = $("pg-model");
  const transcript = $("pg-transcript");
  const errorBox = $("pg-error");
  const sendButton = $("pg-send");
  const stopButton = $("pg-stop");
  const history = [];
  let controller = null;

  const headers = () => ({ "Content-Type": "application/json", "X-CSRFToken": text.csrf });

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }

  async function describeFailure(response) {
    let detail = "";
    try {
      detail = (await response.json()).error.message || "";
    } catch (_) {
      detail = response.statusText;
    }
    const known = { 401: text.msg401, 403: text.msg403, 429: text.msg429, 503: text.msg503 };
    let message = `${text.msgError} ${response.status}`;
    if (known[response.status]) message += `: ${known[response.status]}`;
    const retry = response.headers.get("Retry-After");
    if (retry) message += ` ${text.msgRetry.replace("{seconds}", retry)}`;
    return detail ? `${message}\n${detail}` : message;
  }

  async function loadModels() {
    let response;
    try {
      response = await fetch("/v1/models", { headers: headers(), credentials: "same-origin" });
    } catch (_) {
      showError(text.msgNetwork);
      return;
    }
    if (!response.ok) {
      showError(await describeFailure(response));
      return;
    }
    const models = (await response.json()).data.map((m) => m.id).sort();
    for (const id of models) modelSelect.add(new Option(id, id, false, id === text.model));
    modelSelect.disabled = models.length === 0;
    sendButton.disabled = models.length === 0;
    if (!models.length) showError(text.msgNoModels);
  }

  function addTurn(role, content) {
    const turn = document.createElement("div");
    turn.className = `turn ${role}`;
    const who = document.createElement("strong");
    who.textContent = role === "user" ? text.you : text.assistant;
    const body = document.createElement("div");
    body.className = "content";
    body.textContent = content;
    turn.append(who);
    if (role === "assistant") {
      const label = document.createElement("span");
      label.className = "aigc-label";
      label.textContent = text.aigcLabel;
      label.title = text.aigcTitle;
      turn.append(label);
    }
    turn.append(body);
    transcript.append(turn);
    return body;
  }

  // The report control under a finished answer: a button that opens a reason box, and
  // a POST of the answer with its model, content id and the conversation up to it.
  function addReport(turn, answer) {
    const box = document.createElement("div");
    box.className = "pg-report";
    const open = document.createElement("button");
    open.type = "button";
    open.className = "pg-report-open";
    open.textContent = text.report;
    const form = document.createElement("div");
    form.className = "pg-report-form";
    form.hidden = true;
    const reason = document.createElement("textarea");
    reason.className = "pg-report-reason";
    reason.rows = 2;
    reason.placeholder = text.reportPlaceholder;
    reason.setAttribute("aria-label", text.reportReason);
    const submit = document.createElement("button");
    submit.type = "button";
    submit.className = "pg-report-send";
    submit.textContent = text.reportSend;
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.textContent = text.reportCancel;
    const status = document.createElement("p");
    status.className = "pg-report-status";
    status.setAttribute("role", "status");
    status.hidden = true;
    form.append(reason, submit, cancel);
    box.append(open, form, status);
    turn.append(box);
    open.addEventListener("click", () => {
      form.hidden = false;
      open.hidden = true;
      reason.focus();
    });
    cancel.addEventListener("click", () => {
      form.hidden = true;
      open.hidden = false;
    });
    submit.addEventListener("click", async () => {
      submit.disabled = true;
      status.hidden = false;
      status.className = "pg-report-status";
      try {
        const response = await fetch("/api/governance/reports/", {
          method: "POST",
          headers: headers(),
          credentials: "same-origin",
          body: JSON.stringify({
            text: answer.text,
            served_name: answer.model,
            content_id: answer.contentId || "",
            context: { model: answer.model, messages: answer.messages },
            reason: reason.value.trim(),
          }),
        });
        if (!response.ok) {
          let detail = response.statusText;
          try {
            detail = (await response.json()).detail || detail;
          } catch (_) {
            /* not JSON */
          }
          throw new Error(`${response.status} ${detail}`);
        }
        form.remove();
        open.remove();
        status.classList.add("pg-reported");
        status.textContent = text.reportDone;
      } catch (error) {
        submit.disabled = false;
        status.classList.add("pg-report-error");
        status.textContent = `${text.reportFailed}: ${error.message}`;
      }
    });
  }

  // Yields each parsed `data:` event of a server-sent-events body until [DONE].
  async function* events(response) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
        const data = block
          .split(/\r?\n/)
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).trimStart())
          .join("\n");
        if (data === "[DONE]") return;
        if (data) yield JSON.parse(data);
      }
    }
  }

  function request(messages) {
    const body = {
      model: modelSelect.value,
      messages,
      stream: true,
      temperature: Number($("pg-temperature").value),
      max_tokens: Number($("pg-max-tokens").value),
    };
    controller = new AbortController();
    return fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers(),
      credentials: "same-origin",
      body: JSON.stringify(body),
      signal: controller.signal,
    });
  }

  async function send(event) {
    event.preventDefault();
    const input = $("pg-message");
    const content = input.value.trim();
    if (!content || !modelSelect.value) return;
    showError("");
    const system = $("pg-system").value.trim();
    const messages = [...(system ? [{ role: "system", content: system }] : []), ...history];
    messages.push({ role: "user", content });
    const question = addTurn("user", content).parentElement;
    input.value = "";
    const answer = addTurn("assistant", "");
    answer.parentElement.classList.add("streaming");
    const model = modelSelect.value;
    let contentId = "";
    sendButton.disabled = true;
    stopButton.disabled = false;
    try {
      const response = await request(messages);
      if (!response.ok) {
        // Nothing was said: take the turn back so the message can be sent again.
        answer.parentElement.remove();
        question.remove();
        input.value = content;
        showError(await describeFailure(response));
        return;
      }
      contentId = response.headers.get("x-aigc-content-id") || "";
      for await (const chunk of events(response)) {
        if (chunk.error) throw new Error(chunk.error.message);
        const label = chunk.aigc && (chunk.aigc.AIGC || chunk.aigc);
        if (label && label.ProduceID) contentId = label.ProduceID;
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (delta && delta.content) answer.textContent += delta.content;
      }
      history.push({ role: "user", content }, { role: "assistant", content: answer.textContent });
      if (answer.textContent) {
        addReport(answer.parentElement, {
          text: answer.textContent,
          model,
          contentId,
          messages: [...messages, { role: "assistant", content: answer.textContent }],
        });
      }
    } catch (error) {
      if (error.name === "AbortError") answer.textContent += ` ${text.msgStopped}`;
      else showError(error instanceof TypeError ? text.msgNetwork : `${text.msgError}: ${error.message}`);
    } finally {
      answer.parentElement && answer.parentElement.classList.remove("streaming");
      answer.parentElement && answer.parentElement.classList.add("done");
      controller = null;
      sendButton.disabled = false;
      stopButton.disabled = true;
    }
  }

  form.addEventListener("submit", send);
  stopButton.addEventListener("click", () => controller && controller.abort());
  $("pg-clear").addEventListener("click", () => {
    history.length = 0;
    transcript.replaceChildren();
    showError("");
  });
  $("pg-message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });
  loadModels();
})();
