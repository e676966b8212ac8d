// The export page: export definitions with their latest export, exports on
// demand (by definition or ad hoc) followed live, downloads by signed URL,
// and the dead letters. Plain JavaScript against the JSON API under
// /api/v1; no build step, nothing loaded from elsewhere.
//
// Every value from the API is untrusted text: it reaches the page through
// textContent and attributes only, never as HTML.
"use strict";

(() => {
  const POLL_MS = 500; // an export in progress
  const AUTO_REFRESH_MS = 5000; // definitions, dead letters, open histories
  const HISTORY_LIMIT = 20;
  const DEADLETTER_LIMIT = 10;
  const TOKEN_KEY = "exportstream.token";

  const $ = (id) => document.getElementById(id);

  // el builds an element: el("td", {class: "num", dataset: {field: "id"}}, "12").
  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "dataset") Object.assign(e.dataset, v);
      else if (k === "text") e.textContent = v;
      else if (k === "hidden" || k === "disabled") e[k] = Boolean(v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) {
      if (c === undefined || c === null || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  // ---- the API ----

  class APIError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function storedToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || "";
    } catch {
      return "";
    }
  }

  function storeToken(t) {
    try {
      if (t) sessionStorage.setItem(TOKEN_KEY, t);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      // storage disabled: the token lives until the page is left
    }
    memoryToken = t;
  }

  let memoryToken = storedToken();

  // api calls the API with the token, and returns the decoded answer or
  // throws an APIError with the API's message.
  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (memoryToken) headers.Authorization = "Bearer " + memoryToken;
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (err) {
      throw new APIError(0, "network", `cannot reach the service (${method} ${path}): ${err.message}`);
    }
    const text = await resp.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    const apiErr = data && typeof data === "object" && data.error ? data.error : null;
    if (resp.status === 401) {
      askForToken(apiErr ? apiErr.message : "");
      throw new APIError(401, "unauthorized", apiErr ? apiErr.message : "the API needs a token");
    }
    if (!resp.ok) {
      throw new APIError(resp.status, apiErr ? apiErr.code : "http_" + resp.status,
        apiErr && apiErr.message ? apiErr.message : `${method} ${path}: ${resp.status} ${resp.statusText}`);
    }
    return data;
  }

  // ---- messages ----

  let messageSource = "";

  // showError shows an error; source names what caused it, so that the
  // next success of the same kind can clear it.
  function showError(err, source) {
    if (err instanceof APIError && err.status === 401) return; // the token form says it
    const box = $("message");
    box.replaceChildren(
      el("span", { class: "message-text", text: err && err.message ? err.message : String(err) }),
      el("button", { type: "button", class: "link", "aria-label": "Dismiss the error", dataset: { action: "dismiss" } }, "Dismiss"),
    );
    box.hidden = false;
    messageSource = source || "action";
  }

  function clearError(source) {
    if (!source || messageSource === source) {
      $("message").hidden = true;
      $("message").replaceChildren();
      messageSource = "";
    }
  }

  function notice(...parts) {
    const box = $("notice");
    box.replaceChildren(...parts);
    box.hidden = parts.length === 0;
  }

  // ---- the token ----

  let needToken = false;

  function askForToken(apiMessage) {
    const first = !needToken;
    needToken = true;
    $("auth").hidden = false;
    $("forget-token").hidden = true;
    let hint = $("auth-hint");
    if (!hint) {
      hint = el("p", { id: "auth-hint", class: "hint", "data-testid": "auth-hint" });
      $("auth-form").after(hint);
    }
    hint.textContent = memoryToken ? "The token was not accepted: " + (apiMessage || "unauthorized") : "";
    if (first) $("token").focus();
  }

  $("auth-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $("token").value.trim();
    if (!t) return;
    storeToken(t);
    $("token").value = "";
    needToken = false;
    $("auth").hidden = true;
    $("forget-token").hidden = false;
    refreshAll("auth");
  });

  $("forget-token").addEventListener("click", () => {
    storeToken("");
    askForToken("");
  });

  // ---- formatting ----

  const FINAL = new Set(["complete", "failed", "skipped"]);

  function formatBytes(n) {
    if (typeof n !== "number" || !isFinite(n)) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let v = n;
    let i = 0;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i++;
    }
    return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
  }

  function formatCount(n) {
    return typeof n === "number" ? n.toLocaleString() : "–";
  }

  function recordTime(rec) {
    return rec.completed_time || rec.created_time || "";
  }

  function timeElement(iso) {
    if (!iso) return el("span", { class: "muted", text: "–" });
    const d = new Date(iso);
    if (isNaN(d)) return el("span", { text: iso });
    return el("time", { datetime: iso, title: d.toISOString() }, d.toLocaleString());
  }

  function describeSource(kind, ref) {
    switch (kind) {
      case "project":
        return "whole project";
      case "":
      case undefined:
        return "";
      default:
        return ref ? `${kind} ${ref}` : kind;
    }
  }

  function downloadName(rec) {
    const base = (rec.key || "").split("/").pop();
    return base || `export-${rec.id}.json`;
  }

  // statusCell fills a cell with a record's status, its progress while it
  // runs, and the reason when it failed.
  function fillStatus(cell, rec) {
    if (!rec) {
      cell.replaceChildren(el("span", { class: "muted", dataset: { field: "status" }, text: "no export yet" }));
      return;
    }
    const parts = [el("span", { class: `badge status-${rec.status}`, dataset: { field: "status" }, text: rec.status })];
    if (!FINAL.has(rec.status)) {
      const pct = Math.max(0, Math.min(100, rec.percent_complete || 0));
      parts.push(" ", el("span", { class: "percent", dataset: { field: "percent" }, text: `${pct}%` }));
      parts.push(el("progress", { max: "100", value: String(pct), "aria-label": `Export ${rec.id}: ${pct}% done` }));
    }
    if (rec.deleted_time) {
      parts.push(el("div", { class: "status-text muted", text: "removed from the bucket by retention" }));
    }
    if (rec.status === "failed" && rec.status_text) {
      parts.push(el("div", { class: "status-text error-text", dataset: { field: "status-text" }, text: rec.status_text }));
    }
    if (rec.status === "skipped" && rec.status_text) {
      parts.push(el("div", { class: "status-text warn-text", dataset: { field: "status-text" }, text: `nothing written: ${rec.status_text}` }));
    }
    cell.replaceChildren(...parts);
  }

  function downloadable(rec) {
    return Boolean(rec && rec.status === "complete" && !rec.deleted_time);
  }

  // ---- following exports in progress ----

  const polls = new Map(); // export id -> Set of callbacks

  // follow polls an export every POLL_MS until it is complete or failed,
  // giving each state to onUpdate.
  function follow(rec, onUpdate) {
    if (FINAL.has(rec.status)) {
      onUpdate(rec);
      return;
    }
    if (polls.has(rec.id)) {
      polls.get(rec.id).add(onUpdate);
      return;
    }
    const subs = new Set([onUpdate]);
    polls.set(rec.id, subs);
    let failures = 0;
    const step = async () => {
      let r;
      try {
        r = await api("GET", `/api/v1/exports/${encodeURIComponent(rec.id)}`);
        failures = 0;
      } catch (err) {
        failures++;
        if (err.status === 401 || err.status === 404 || failures >= 20) {
          polls.delete(rec.id);
          showError(err, "poll");
          return;
        }
        setTimeout(step, POLL_MS * 2);
        return;
      }
      for (const f of subs) f(r);
      if (FINAL.has(r.status)) {
        polls.delete(rec.id);
        return;
      }
      setTimeout(step, POLL_MS);
    };
    setTimeout(step, POLL_MS);
  }

  // ---- downloads ----

  function safeURL(u) {
    try {
      const parsed = new URL(u, location.href);
      return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed : null;
    } catch {
      return null;
    }
  }

  // download asks for a signed URL of the export and downloads it.
  async function download(rec, button) {
    if (button) button.disabled = true;
    try {
      const signed = await api("GET", `/api/v1/exports/${encodeURIComponent(rec.id)}/url`);
      const u = safeURL(signed.url);
      if (!u) throw new Error(`export ${rec.id}: the service gave no usable download link`);
      if (button) button.dataset.url = u.href;
      const a = el("a", { href: u.href, class: "visually-hidden" });
      if (u.origin === location.origin) {
        a.download = downloadName(rec);
      } else {
        // Another origin ignores "download": open it beside the page.
        a.target = "_blank";
        a.rel = "noopener";
      }
      document.body.append(a);
      a.click();
      a.remove();
      const expires = signed.expires_at ? new Date(signed.expires_at) : null;
      notice(
        `Downloading export ${rec.id} (${downloadName(rec)}). `,
        el("a", { href: u.href, "data-testid": "download-link", dataset: { exportId: String(rec.id) }, download: u.origin === location.origin ? downloadName(rec) : null }, "Download link"),
        expires && !isNaN(expires) ? ` valid until ${expires.toLocaleString()}.` : "",
      );
      clearError("download");
    } catch (err) {
      showError(err, "download");
    } finally {
      if (button) button.disabled = !downloadable(rec);
    }
  }

  // ---- definitions ----

  let definitions = [];
  const rows = new Map(); // name -> row handles
  let rowSeq = 0; // element ids of the rows
  const generated = new Map(); // name -> the newest record this page asked for

  function currentRecord(name) {
    const d = definitions.find((x) => x.name === name);
    // A definition with no export yet shows its skipped attempt (and why).
    const latest = d ? d.latest || d.skipped || null : null;
    const mine = generated.get(name);
    if (mine && (!latest || mine.id > latest.id || (mine.id === latest.id && !FINAL.has(latest.status)))) return mine;
    return latest;
  }

  function buildRow(d) {
    rowSeq++;
    const headerID = `definition-${rowSeq}`;
    const historyID = `history-${rowSeq}`;
    const cells = {
      name: el("div", { class: "def-name" }),
      meta: el("div", { class: "def-meta" }),
      skipped: el("div", { class: "status-text warn-text", dataset: { field: "skipped-reason" }, hidden: true }),
      id: el("td", { dataset: { field: "id" } }),
      status: el("td", { class: "status-cell" }),
      files: el("td", { class: "num", dataset: { field: "files" } }),
      instances: el("td", { class: "num", dataset: { field: "instances" } }),
      bytes: el("td", { class: "num", dataset: { field: "bytes" } }),
      time: el("td", { dataset: { field: "time" } }),
    };
    const buttons = {
      generate: el("button", { type: "button", dataset: { action: "generate" }, "aria-describedby": headerID }, "Generate"),
      download: el("button", { type: "button", dataset: { action: "download" }, "aria-describedby": headerID, disabled: true }, "Download"),
      history: el("button", { type: "button", class: "secondary", dataset: { action: "history" }, "aria-describedby": headerID,
        "aria-expanded": "false", "aria-controls": historyID }, "History"),
    };
    const tr = el("tr", { class: "definition", dataset: { definition: d.name } },
      el("th", { scope: "row", id: headerID }, cells.name, cells.meta, cells.skipped),
      cells.id, cells.status, cells.files, cells.instances, cells.bytes, cells.time,
      el("td", { class: "actions" }, buttons.generate, buttons.download, buttons.history));
    const historyBody = el("div", { class: "history", "data-testid": "history" });
    const historyTr = el("tr", { class: "history-row", id: historyID, dataset: { historyFor: d.name }, hidden: true },
      el("td", { colspan: "8" }, historyBody));
    const row = { name: d.name, tr, historyTr, historyBody, cells, buttons, open: false, historySig: "" };
    buttons.generate.addEventListener("click", () => generate(row));
    buttons.download.addEventListener("click", () => {
      const rec = currentRecord(row.name);
      if (rec) download(rec, buttons.download);
    });
    buttons.history.addEventListener("click", () => toggleHistory(row));
    return row;
  }

  function updateRow(row) {
    const d = definitions.find((x) => x.name === row.name);
    if (!d) return;
    row.cells.name.textContent = d.name;
    const meta = [d.project, describeSource(d.source, d.ref), d.completion === "all" ? "all files" : `${d.completion} files`];
    if (d.include_removed_instances) meta.push("with removed instances");
    meta.push(`${d.connection}: ${d.path}`);
    row.cells.meta.textContent = meta.filter(Boolean).join(" · ");
    row.cells.meta.title = `quiet ${d.quiet}, max delay ${d.max_delay}` + (d.keep_last ? `, keeps the last ${d.keep_last}` : "");

    // The newest attempt found the source empty while an older export is
    // still the latest: say so under the definition's name.
    const skippedSince = Boolean(d.skipped && d.latest);
    row.cells.skipped.hidden = !skippedSince;
    row.cells.skipped.textContent = skippedSince
      ? `Export ${d.skipped.id} wrote nothing (${new Date(recordTime(d.skipped)).toLocaleString()}): ${d.skipped.status_text}`
      : "";

    const rec = currentRecord(row.name);
    row.tr.dataset.exportId = rec ? String(rec.id) : "";
    row.tr.dataset.status = rec ? rec.status : "";
    row.cells.id.textContent = rec ? String(rec.id) : "–";
    fillStatus(row.cells.status, rec);
    row.cells.files.textContent = rec ? formatCount(rec.file_list_length) : "–";
    row.cells.instances.textContent = rec ? formatCount(rec.instance_count) : "–";
    row.cells.bytes.textContent = rec ? formatBytes(rec.bytes) : "–";
    for (const [cell, v] of [[row.cells.files, rec && rec.file_list_length], [row.cells.instances, rec && rec.instance_count],
      [row.cells.bytes, rec && rec.bytes]]) {
      cell.dataset.value = typeof v === "number" ? String(v) : "";
    }
    row.cells.bytes.title = rec ? `${formatCount(rec.bytes)} bytes` : "";
    row.cells.time.replaceChildren(rec ? timeElement(recordTime(rec)) : el("span", { class: "muted", text: "–" }));

    const mine = generated.get(row.name);
    const busy = Boolean(mine && !FINAL.has(mine.status));
    row.buttons.generate.disabled = busy || row.requesting === true;
    row.buttons.generate.textContent = busy ? "Generating…" : "Generate";
    row.buttons.download.disabled = !downloadable(rec);
  }

  function renderDefinitions() {
    const body = $("definition-rows");
    const names = new Set(definitions.map((d) => d.name));
    for (const [name, row] of rows) {
      if (!names.has(name)) {
        row.tr.remove();
        row.historyTr.remove();
        rows.delete(name);
      }
    }
    // Rows keep their elements (and the focus in them); a row moves only
    // when the API's order changed.
    let next = body.firstElementChild;
    for (const d of definitions) {
      let row = rows.get(d.name);
      if (!row) {
        row = buildRow(d);
        rows.set(d.name, row);
      }
      for (const tr of [row.tr, row.historyTr]) {
        if (next === tr) next = next.nextElementSibling;
        else body.insertBefore(tr, next);
      }
      updateRow(row);
      // An export already running (its schedule, or another user): follow it.
      if (d.latest && !FINAL.has(d.latest.status)) {
        follow(d.latest, (r) => {
          const cur = definitions.find((x) => x.name === d.name);
          if (cur && cur.latest && cur.latest.id === r.id) cur.latest = r;
          updateRow(row);
          if (FINAL.has(r.status) && row.open) loadHistory(row);
        });
      }
    }
    $("definitions-empty").hidden = definitions.length > 0;
    fillConnections();
    fillProject();
  }

  async function refreshDefinitions() {
    const data = await api("GET", "/api/v1/definitions");
    definitions = Array.isArray(data && data.definitions) ? data.definitions : [];
    renderDefinitions();
  }

  async function generate(row) {
    row.requesting = true;
    updateRow(row);
    try {
      const rec = await api("POST", "/api/v1/exports", { definition: row.name });
      generated.set(row.name, rec);
      notice(`Export ${rec.id} of ${row.name} requested.`);
      clearError("generate");
      follow(rec, (r) => {
        generated.set(row.name, r);
        updateRow(row);
        if (FINAL.has(r.status)) {
          notice(r.status === "complete" ? `Export ${r.id} of ${row.name} is complete.` : `Export ${r.id} of ${row.name} failed.`);
          if (row.open) loadHistory(row);
          refreshDefinitions().catch((err) => showError(err, "refresh"));
        }
      });
    } catch (err) {
      showError(err, "generate");
    } finally {
      row.requesting = false;
      updateRow(row);
    }
  }

  // ---- history ----

  function toggleHistory(row) {
    row.open = !row.open;
    row.buttons.history.setAttribute("aria-expanded", String(row.open));
    row.buttons.history.textContent = row.open ? "Hide history" : "History";
    row.historyTr.hidden = !row.open;
    if (row.open) {
      if (!row.historySig) row.historyBody.replaceChildren(el("p", { class: "muted", text: "Loading…" }));
      loadHistory(row);
    }
  }

  async function loadHistory(row) {
    let page;
    try {
      page = await api("GET", `/api/v1/exports?definition=${encodeURIComponent(row.name)}&limit=${HISTORY_LIMIT}`);
    } catch (err) {
      showError(err, "history");
      return;
    }
    const exports = Array.isArray(page && page.exports) ? page.exports : [];
    const sig = JSON.stringify([page.total, exports.map((r) => [r.id, r.status, r.percent_complete, r.deleted_time])]);
    if (sig === row.historySig) return; // nothing new: leave it as the user sees it
    row.historySig = sig;
    if (exports.length === 0) {
      row.historyBody.replaceChildren(el("p", { class: "muted", text: "No exports yet." }));
      return;
    }
    const tbody = el("tbody");
    for (const r of exports) {
      const status = el("td");
      fillStatus(status, r);
      const dl = el("button", { type: "button", class: "small", dataset: { action: "download", exportId: String(r.id) },
        disabled: !downloadable(r), "aria-label": `Download export ${r.id}` }, "Download");
      dl.addEventListener("click", () => download(r, dl));
      tbody.append(el("tr", { dataset: { exportId: String(r.id), status: r.status } },
        el("td", { dataset: { field: "id" } }, String(r.id)),
        status,
        el("td", { dataset: { field: "trigger" } }, r.trigger || "–"),
        el("td", { class: "num", dataset: { field: "files", value: String(r.file_list_length) } }, formatCount(r.file_list_length)),
        el("td", { class: "num", dataset: { field: "instances", value: String(r.instance_count) } }, formatCount(r.instance_count)),
        el("td", { class: "num", dataset: { field: "bytes", value: String(r.bytes) }, title: `${formatCount(r.bytes)} bytes` }, formatBytes(r.bytes)),
        el("td", { dataset: { field: "time" } }, timeElement(recordTime(r))),
        el("td", { class: "actions" }, dl)));
    }
    row.historyBody.replaceChildren(
      el("p", { class: "history-title" }, `Exports of ${row.name}, newest first: ${exports.length} of ${page.total}`),
      el("table", { class: "history-table" },
        el("thead", {}, el("tr", {},
          el("th", { scope: "col" }, "Export"), el("th", { scope: "col" }, "Status"), el("th", { scope: "col" }, "Trigger"),
          el("th", { scope: "col", class: "num" }, "Files"), el("th", { scope: "col", class: "num" }, "Instances"),
          el("th", { scope: "col", class: "num" }, "Size"), el("th", { scope: "col" }, "Time"),
          el("th", { scope: "col" }, el("span", { class: "visually-hidden" }, "Actions")))),
        tbody));
  }

  // ---- the ad-hoc form ----

  let projectTouched = false;
  $("adhoc-project").addEventListener("input", () => {
    projectTouched = true;
  });

  function fillProject() {
    const input = $("adhoc-project");
    if (projectTouched || input.value || document.activeElement === input || definitions.length === 0) return;
    input.value = definitions[0].project;
  }

  function fillConnections() {
    const sel = $("adhoc-connection");
    const names = [...new Set(definitions.map((d) => d.connection).filter(Boolean))].sort();
    const have = [...sel.options].map((o) => o.value);
    if (names.length === have.length && names.every((n, i) => n === have[i])) return;
    const keep = sel.value;
    sel.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
    if (names.includes(keep)) sel.value = keep;
  }

  const NUMERIC_SOURCES = new Set(["directory_id", "job_id", "task_id"]);

  function updateSourceValue() {
    const kind = $("adhoc-source-kind").value;
    const input = $("adhoc-source-value");
    input.disabled = kind === "project";
    input.required = kind !== "project";
    input.inputMode = NUMERIC_SOURCES.has(kind) ? "numeric" : "text";
    input.placeholder = kind === "project" ? "" : NUMERIC_SOURCES.has(kind) ? "id, e.g. 42" : "name, e.g. train";
  }
  $("adhoc-source-kind").addEventListener("change", updateSourceValue);
  updateSourceValue();

  function adhocRequest() {
    const kind = $("adhoc-source-kind").value;
    const raw = $("adhoc-source-value").value.trim();
    const source = {};
    if (kind === "project") {
      source.project = true;
    } else if (NUMERIC_SOURCES.has(kind)) {
      if (!/^[1-9][0-9]*$/.test(raw)) throw new Error(`The ${kind.replace("_", " ")} must be a positive whole number.`);
      source[kind] = Number(raw);
    } else {
      if (!raw) throw new Error(`Give the ${kind} name.`);
      source[kind] = raw;
    }
    return {
      project: $("adhoc-project").value.trim(),
      source,
      completion: $("adhoc-complete-only").checked ? "complete" : "all",
      include_removed_instances: $("adhoc-include-removed").checked,
      connection: $("adhoc-connection").value,
    };
  }

  function renderAdhoc(rec) {
    const box = $("adhoc-result");
    const status = el("div", { class: "status-cell" });
    fillStatus(status, rec);
    const dl = el("button", { type: "button", dataset: { action: "download", exportId: String(rec.id) }, disabled: !downloadable(rec) }, "Download");
    dl.addEventListener("click", () => download(rec, dl));
    box.dataset.exportId = String(rec.id);
    box.dataset.status = rec.status;
    box.replaceChildren(
      el("h3", {}, "Export ", el("span", { dataset: { field: "id" } }, String(rec.id))),
      el("dl", { class: "facts" },
        el("dt", {}, "Status"), el("dd", {}, status),
        el("dt", {}, "Source"), el("dd", { dataset: { field: "source" } }, `${rec.project} · ${describeSource(rec.source, rec.ref)}`),
        el("dt", {}, "Files"), el("dd", { dataset: { field: "completion" } },
          `${rec.completion === "all" ? "all files" : `${rec.completion} files`}${rec.include_removed_instances ? ", with removed instances" : ""}`),
        el("dt", {}, "Counts"), el("dd", {},
          el("span", { dataset: { field: "files", value: String(rec.file_list_length) } }, formatCount(rec.file_list_length)), " files, ",
          el("span", { dataset: { field: "instances", value: String(rec.instance_count) } }, formatCount(rec.instance_count)), " instances"),
        el("dt", {}, "Size"), el("dd", { dataset: { field: "bytes", value: String(rec.bytes) } }, formatBytes(rec.bytes)),
        el("dt", {}, "Time"), el("dd", { dataset: { field: "time" } }, timeElement(recordTime(rec)))),
      dl);
    box.hidden = false;
  }

  $("adhoc-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const submit = $("adhoc-submit");
    let body;
    try {
      body = adhocRequest();
    } catch (err) {
      showError(err, "adhoc");
      return;
    }
    submit.disabled = true;
    try {
      const rec = await api("POST", "/api/v1/exports", body);
      clearError("adhoc");
      renderAdhoc(rec);
      follow(rec, (r) => {
        if ($("adhoc-result").dataset.exportId === String(r.id)) renderAdhoc(r);
      });
    } catch (err) {
      showError(err, "adhoc");
    } finally {
      submit.disabled = false;
    }
  });

  // ---- dead letters ----

  let deadLetterSig = "";

  async function refreshDeadLetters() {
    const dl = await api("GET", `/api/v1/deadletters?limit=${DEADLETTER_LIMIT}`);
    const entries = Array.isArray(dl && dl.entries) ? dl.entries : [];
    $("deadletter-count").textContent = String(dl.count || 0);
    $("deadletter-count").dataset.count = String(dl.count || 0);
    $("deadletter-stream").textContent = dl.stream ? ` (stream ${dl.stream})` : "";
    const sig = JSON.stringify(entries.map((e) => e.sequence));
    if (sig === deadLetterSig) return; // keeps what the user opened
    deadLetterSig = sig;
    const list = $("deadletter-list");
    if (entries.length === 0) {
      list.replaceChildren(el("li", { class: "muted empty" }, "None: every event was applied."));
      return;
    }
    list.replaceChildren(...entries.map((e) => el("li", { dataset: { sequence: String(e.sequence) } },
      el("div", { class: "dl-head" },
        el("span", { class: "dl-seq" }, `#${e.sequence}`), " ",
        timeElement(e.time), " ",
        el("code", { class: "dl-subject" }, e.original_subject || "(no subject)")),
      el("div", { class: "dl-reason", dataset: { field: "reason" } }, e.reason || "(no reason recorded)"),
      el("details", {},
        el("summary", {}, `Event body, ${formatCount(e.bytes)} bytes${e.body_truncated ? " (first 4 KiB)" : ""}`),
        el("pre", { class: "dl-body" }, e.body || "")))));
  }

  // ---- refreshing ----

  let refreshing = null;

  // refreshAll reloads the definitions, the dead letters and the open
  // histories; a call while one runs shares it.
  function refreshAll(source) {
    if (refreshing) return refreshing;
    refreshing = (async () => {
      const results = await Promise.allSettled([
        refreshDefinitions(),
        refreshDeadLetters(),
        ...[...rows.values()].filter((r) => r.open).map(loadHistory),
      ]);
      const failed = results.find((r) => r.status === "rejected");
      if (failed) {
        showError(failed.reason, "refresh");
      } else {
        clearError("refresh");
        if (source === "auth") clearError();
        $("updated").textContent = `Updated ${new Date().toLocaleTimeString()}`;
      }
      if (!needToken && memoryToken) $("forget-token").hidden = false;
    })().finally(() => {
      refreshing = null;
    });
    return refreshing;
  }

  $("refresh").addEventListener("click", () => refreshAll("button"));
  $("message").addEventListener("click", (ev) => {
    if (ev.target instanceof HTMLElement && ev.target.dataset.action === "dismiss") clearError();
  });

  setInterval(() => {
    if (!$("auto-refresh").checked || document.hidden || needToken || refreshing) return;
    refreshAll("auto");
  }, AUTO_REFRESH_MS);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && $("auto-refresh").checked && !needToken) refreshAll("auto");
  });

  refreshAll("load");
})();
