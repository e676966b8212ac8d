// The export page: how current the exports are, export definitions with
// their latest export and a chart of their exports over time, exports on
// demand (by definition or ad hoc) followed live, downloads by signed URL,
// the history page by page, and the dead letters, which can be redriven.
// Plain JavaScript against the JSON API under /api/v1; no build step,
// nothing loaded from elsewhere. Charts are SVG built here (the page's
// security policy allows no inline script or style).
//
// Every value from the API is untrusted text: it reaches the page through
// textContent and attributes only, never as HTML.
"use strict";

(() => {
  const POLL_MS = 500; // an export in progress
  const AUTO_REFRESH_MS = 5000; // definitions, dead letters, open histories
  const HISTORY_LIMIT = 20;
  const CHART_LIMIT = 30; // exports per chart, the newest
  const DEADLETTER_LIMIT = 10;
  const NOTICE_MS = 10000; // a notice clears itself after this
  const TOKEN_KEY = "exportstream.token";
  const SVG_NS = "http://www.w3.org/2000/svg";

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

  let noticeTimer = 0;

  // notice shows a passing message (or clears it, given nothing); it
  // clears itself after NOTICE_MS.
  function notice(...parts) {
    const box = $("notice");
    clearTimeout(noticeTimer);
    if (parts.length === 0) {
      box.replaceChildren();
      box.hidden = true;
      return;
    }
    box.replaceChildren(el("span", { class: "notice-text" }, ...parts),
      el("button", { type: "button", class: "link", "aria-label": "Dismiss the notice", dataset: { action: "dismiss-notice" } }, "Dismiss"));
    box.hidden = false;
    noticeTimer = setTimeout(() => notice(), NOTICE_MS);
  }

  $("notice").addEventListener("click", (ev) => {
    if (ev.target instanceof HTMLElement && ev.target.dataset.action === "dismiss-notice") notice();
  });

  // ---- the token ----

  let needToken = false;

  // askForToken shows the token form alone: nothing of the page's data
  // (empty until a token is accepted) stands behind it.
  function askForToken(apiMessage) {
    const first = !needToken;
    needToken = true;
    $("auth").hidden = false;
    $("content").hidden = true;
    $("loading").hidden = true;
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
    $("loading").hidden = false;
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

  // The service's clock minus this one's (GET /api/v1/status says its
  // time), so that "x ago" is right when the two disagree.
  let clockSkew = 0;

  const TIME_FORMAT = {
    year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short",
  };

  // formatTime is a time in the browser's time zone, which it names.
  function formatTime(d) {
    return d.toLocaleString(undefined, TIME_FORMAT);
  }

  // formatAgo says how long ago a time was: "12 s ago", "5 min ago",
  // "3 h ago", "2 d ago" ("in 4 s" ahead of the clock).
  function formatAgo(d) {
    const ms = Date.now() + clockSkew - d.getTime();
    const s = Math.round(Math.abs(ms) / 1000);
    let text;
    if (s < 60) text = `${s} s`;
    else if (s < 3600) text = `${Math.floor(s / 60)} min`;
    else if (s < 86400) text = `${Math.floor(s / 3600)} h`;
    else text = `${Math.floor(s / 86400)} d`;
    return ms < -1000 ? `in ${text}` : `${text} ago`;
  }

  // timeElement shows a time with its zone, and how long ago it was
  // (kept current by updateAgo).
  function timeElement(iso) {
    if (!iso) return el("span", { class: "muted", text: "–" });
    const d = new Date(iso);
    if (isNaN(d)) return el("span", { text: iso });
    return el("span", { class: "when" },
      el("time", { datetime: iso, title: d.toISOString() }, formatTime(d)), " ",
      el("span", { class: "ago", dataset: { agoOf: iso } }, formatAgo(d)));
  }

  function updateAgo() {
    for (const e of document.querySelectorAll("[data-ago-of]")) {
      const d = new Date(e.dataset.agoOf);
      if (!isNaN(d)) e.textContent = formatAgo(d);
    }
  }
  setInterval(updateAgo, 1000);

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
      const at = new Date(rec.deleted_time);
      parts.push(" ", el("span", { class: "badge status-deleted", dataset: { field: "deleted" }, title: isNaN(at) ? "" : `deleted ${formatTime(at)}` }, "deleted"));
      parts.push(el("div", { class: "status-text muted" }, "removed from the bucket by retention (keep_last)"));
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
        expires && !isNaN(expires) ? ` valid until ${formatTime(expires)}.` : "",
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
      freshness: el("div", { class: "freshness", dataset: { field: "freshness" } }),
      links: el("div", { class: "links", dataset: { field: "media-links" }, hidden: true }),
      id: el("td", { dataset: { field: "id", label: "Latest export" } }),
      status: el("td", { class: "status-cell", dataset: { label: "Status" } }),
      files: el("td", { class: "num", dataset: { field: "files", label: "Files" } }),
      instances: el("td", { class: "num", dataset: { field: "instances", label: "Instances" } }),
      bytes: el("td", { class: "num", dataset: { field: "bytes", label: "Size" } }),
      time: el("td", { dataset: { field: "time", label: "Time" } }),
      chart: el("td", { class: "chart-cell", dataset: { field: "chart", label: "Over time" } }),
    };
    const buttons = {
      generate: el("button", { type: "button", dataset: { action: "generate" }, "aria-describedby": headerID }, "Generate"),
      download: el("button", { type: "button", dataset: { action: "download" }, "aria-describedby": headerID, disabled: true }, "Download"),
      history: el("button", { type: "button", class: "secondary", dataset: { action: "history" }, "aria-describedby": headerID,
        "aria-expanded": "false", "aria-controls": historyID }, "History"),
    };
    const tr = el("tr", { class: "definition", dataset: { definition: d.name } },
      el("th", { scope: "row", id: headerID }, cells.name, cells.meta, cells.freshness, cells.links, cells.skipped),
      cells.id, cells.status, cells.files, cells.instances, cells.bytes, cells.time, cells.chart,
      el("td", { class: "actions" }, buttons.generate, buttons.download, buttons.history));
    const historyBody = el("div", { class: "history", "data-testid": "history" });
    const historyTr = el("tr", { class: "history-row", id: historyID, dataset: { historyFor: d.name }, hidden: true },
      el("td", { colspan: "9" }, historyBody));
    const row = {
      name: d.name, tr, historyTr, historyBody, cells, buttons, open: false, historySig: "",
      // The history page shown: before is the API's cursor (0: the
      // newest), offset how many newer records come before it; back
      // holds the pages before it, for "Newer".
      page: { before: 0, offset: 0 }, back: [],
      chartKey: null, // the newest export the chart shows
    };
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
      ? `Export ${d.skipped.id} wrote nothing (${formatTime(new Date(recordTime(d.skipped)))}): ${d.skipped.status_text}`
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

    updateLinks(row, d);

    const mine = generated.get(row.name);
    // The definitions' refresh can show this page's export final before
    // the page's own follow of it has: then it is not busy either.
    const done = rec && mine && rec.id === mine.id && FINAL.has(rec.status);
    const busy = Boolean(mine && !FINAL.has(mine.status) && !done);
    row.buttons.generate.disabled = busy || row.requesting === true;
    row.buttons.generate.textContent = busy ? "Generating…" : "Generate";
    row.buttons.download.disabled = !downloadable(rec);
    updateFreshness(row);
  }

  // updateLinks says under a definition's name how its media links are
  // made (signed by its media connection, or copied as received) and when
  // those of its newest export expire: in warning colours within a day.
  function updateLinks(row, d) {
    const box = row.cells.links;
    const expires = d.latest ? d.latest.media_links_expire_at : null;
    box.hidden = !expires && !d.media;
    box.dataset.expiresAt = expires || "";
    if (box.hidden) {
      box.replaceChildren();
      return;
    }
    const how = d.media
      ? `Media links signed by ${d.media.connection}, valid ${d.media.expiry}`
      : "Media links copied as received";
    const left = expires ? new Date(expires).getTime() - (Date.now() + clockSkew) : Infinity;
    box.classList.toggle("warn-text", left < 86400000);
    if (!expires) {
      box.replaceChildren(how);
      return;
    }
    box.replaceChildren(`${how}; the newest export's ${left <= 0 ? "expired" : "expire"} `, timeElement(expires));
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
    showContent();
    await Promise.all([...rows.values()].map(loadChart));
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

  // ---- how current the exports are ----

  let status = null; // the newest answer of GET /api/v1/status
  const freshnessByName = new Map();

  async function refreshStatus() {
    const st = await api("GET", "/api/v1/status");
    status = st && typeof st === "object" ? st : {};
    const server = new Date(status.time);
    if (!isNaN(server)) {
      const skew = server.getTime() - Date.now();
      clockSkew = Math.abs(skew) > 2000 ? skew : 0; // ignore the request's own delay
    }
    freshnessByName.clear();
    for (const f of Array.isArray(status.definitions) ? status.definitions : []) freshnessByName.set(f.name, f);
    renderEvents();
    for (const row of rows.values()) updateFreshness(row);
  }

  function backlogOf() {
    const ev = status && status.events;
    return ev && typeof ev.backlog === "number" ? ev.backlog : null;
  }

  function renderEvents() {
    const ev = (status && status.events) || {};
    const last = $("events-last");
    if (ev.last_applied_sequence) {
      last.replaceChildren(
        el("span", { class: "seq", dataset: { field: "sequence", value: String(ev.last_applied_sequence) } }, `#${ev.last_applied_sequence}`),
        " ", timeElement(ev.last_applied_time));
      last.title = `${formatCount(ev.applied_since_start)} events applied since the service started` +
        (ev.stream ? `, from stream ${ev.stream}` : "");
    } else if (ev.acked_through) {
      last.replaceChildren("every event up to ",
        el("span", { class: "seq", dataset: { field: "sequence", value: String(ev.acked_through) } }, `#${ev.acked_through}`),
        el("span", { class: "muted" }, " (none since the service started)"));
      last.title = "";
    } else {
      last.replaceChildren(el("span", { class: "muted" }, "none yet"));
      last.title = "";
    }
    const backlog = $("events-backlog");
    const n = backlogOf();
    backlog.dataset.value = n === null ? "" : String(n);
    if (n === null) {
      backlog.replaceChildren(el("span", { class: "muted" }, "unknown"),
        ev.consumer_error ? el("div", { class: "status-text error-text" }, ev.consumer_error) : "");
    } else if (n === 0) {
      backlog.replaceChildren(el("span", { class: "fresh fresh-current" }, "none"), " ",
        el("span", { class: "muted" }, "every event in the stream is applied"));
    } else {
      backlog.replaceChildren(el("span", { class: "fresh fresh-pending" }, `${formatCount(n)} event${n === 1 ? "" : "s"} to apply`), " ",
        el("span", { class: "muted" }, `${formatCount(ev.waiting)} waiting, ${formatCount(ev.in_flight)} being applied`));
    }
    const defs = Array.isArray(status && status.definitions) ? status.definitions : [];
    const current = defs.filter((f) => f.up_to_date).length;
    const summary = $("events-summary");
    summary.dataset.upToDate = String(current);
    summary.dataset.total = String(defs.length);
    if (defs.length === 0) summary.textContent = "no definitions";
    else if (current === defs.length) summary.textContent = defs.length === 1 ? "up to date" : `all ${defs.length} up to date`;
    else summary.textContent = `${current} of ${defs.length} up to date, ${defs.length - current} with events pending`;
    renderConnections();
  }

  // renderConnections shows each connection's health (its latest write),
  // and this replica's own checks when one fails (what /readyz says).
  function renderConnections() {
    const box = $("events-connections");
    const conns = Array.isArray(status && status.connections) ? status.connections : [];
    const checks = Array.isArray(status && status.checks) ? status.checks : [];
    const items = conns.map((c) => el("div", { class: "connection", dataset: { connection: c.name, ok: String(Boolean(c.ok)) } },
      el("span", { class: `fresh ${c.ok ? "fresh-current" : "fresh-pending"}` }, c.ok ? "ok" : "unhealthy"), " ", c.name,
      c.ok ? "" : el("div", { class: "status-text error-text", text: c.error || "" })));
    for (const c of checks.filter((c) => !c.ok)) {
      items.push(el("div", { class: "connection", dataset: { check: c.name, ok: "false" } },
        el("span", { class: "fresh fresh-pending" }, "not ready"), " ", c.name,
        el("div", { class: "status-text error-text", text: c.error || "" })));
    }
    if (items.length === 0) box.replaceChildren(el("span", { class: "muted" }, "none"));
    else box.replaceChildren(...items);
  }

  // updateFreshness says under a definition's name whether its export
  // holds every event applied, or how many wait for it.
  function updateFreshness(row) {
    const box = row.cells.freshness;
    const f = freshnessByName.get(row.name);
    if (!f) {
      box.replaceChildren();
      box.dataset.state = "";
      delete box.dataset.newestEvent;
      return;
    }
    box.dataset.pending = String(f.pending_events || 0);
    if (f.up_to_date) {
      const backlog = backlogOf();
      box.dataset.state = "current";
      delete box.dataset.newestEvent; // from when it was pending
      box.title = backlog ? `${formatCount(backlog)} events in the stream are not applied yet; they may change this export` : "";
      box.replaceChildren(el("span", { class: "fresh fresh-current" }, backlog ? "up to date with the events applied" : "up to date"));
      return;
    }
    box.dataset.state = "pending";
    box.dataset.newestEvent = String(f.newest_event || 0);
    const n = f.pending_events || 0;
    box.title = "Events were applied since its newest export; the next export (after the quiet period) will hold them." +
      (n ? " Counted as the changes of its project in the batches that touched it." : " Applied by another replica, or before a restart.");
    const parts = [el("span", { class: "fresh fresh-pending" }, n ? `${formatCount(n)} event${n === 1 ? "" : "s"} pending` : "events pending")];
    if (f.newest_event) parts.push(" ", el("span", { class: "muted" }, `newest #${f.newest_event}`));
    if (f.marked_time) parts.push(" ", timeElement(f.marked_time));
    box.replaceChildren(...parts);
  }

  // ---- charts: each definition's exports over time ----

  const SERIES = [
    { key: "file_list_length", name: "files", format: formatCount },
    { key: "instance_count", name: "instances", format: formatCount },
    { key: "bytes", name: "size", format: formatBytes },
  ];
  const CHART_W = 190;
  const CHART_ROW = 18;
  const CHART_LABEL = 52;

  function svg(tag, attrs, ...children) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null) e.setAttribute(k, String(v));
    }
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  }

  // loadChart draws the definition's complete exports, the newest
  // CHART_LIMIT, when its newest export changed since the last drawing.
  async function loadChart(row) {
    const d = definitions.find((x) => x.name === row.name);
    const key = d && d.latest ? d.latest.id : 0;
    if (row.chartKey === key || row.chartLoading === key) return;
    if (!key) {
      row.chartKey = key;
      row.cells.chart.replaceChildren(el("span", { class: "muted", text: "no exports yet" }));
      return;
    }
    row.chartLoading = key;
    try {
      const page = await api("GET", `/api/v1/exports?definition=${encodeURIComponent(row.name)}&status=complete&limit=${CHART_LIMIT}`);
      const recs = (Array.isArray(page && page.exports) ? page.exports : []).slice().reverse(); // oldest first
      row.chartKey = key;
      row.cells.chart.replaceChildren(recs.length ? drawChart(row.name, recs, page.total) : el("span", { class: "muted", text: "no exports yet" }));
    } finally {
      row.chartLoading = null;
    }
  }

  // drawChart is an SVG of files, instances and size, one line each
  // (each on its own scale), by time of the exports (recs, oldest first).
  function drawChart(name, recs, total) {
    const height = CHART_ROW * SERIES.length;
    const times = recs.map((r) => new Date(recordTime(r)).getTime());
    const t0 = Math.min(...times);
    const t1 = Math.max(...times);
    const byTime = times.every((t) => !isNaN(t)) && t1 > t0;
    const left = CHART_LABEL + 3;
    const width = CHART_W - left - 4;
    const x = (i) => left + width * (recs.length === 1 ? 1 : byTime ? (times[i] - t0) / (t1 - t0) : i / (recs.length - 1));
    const first = new Date(recordTime(recs[0]));
    const last = new Date(recordTime(recs[recs.length - 1]));
    const about = `${name}: ${recs.length === 1 ? "1 export" : `the newest ${recs.length} exports`}` +
      (total > recs.length ? ` of ${total}` : "") +
      (isNaN(first) || isNaN(last) ? "" : `, ${formatTime(first)} to ${formatTime(last)}`);
    const chart = svg("svg", {
      class: "chart", viewBox: `0 0 ${CHART_W} ${height}`, width: CHART_W, height, role: "img",
      "aria-label": about, "data-exports": recs.length,
    }, svg("title", {}, about));
    SERIES.forEach((s, k) => {
      const vals = recs.map((r) => (typeof r[s.key] === "number" ? r[s.key] : 0));
      const lo = Math.min(...vals);
      const hi = Math.max(...vals);
      const top = k * CHART_ROW + 3;
      const bottom = (k + 1) * CHART_ROW - 3;
      const y = (v) => (hi === lo ? (top + bottom) / 2 : bottom - ((v - lo) / (hi - lo)) * (bottom - top));
      const points = vals.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
      const change = `${s.name}: ${s.format(vals[0])} → ${s.format(vals[vals.length - 1])}` +
        (hi !== lo ? ` (lowest ${s.format(lo)}, highest ${s.format(hi)})` : "");
      chart.append(svg("g", { class: `series series-${s.name}`, "data-series": s.name, "data-values": vals.join(",") },
        svg("title", {}, change),
        svg("text", { class: "chart-label", x: 0, y: bottom - 1 }, s.name),
        svg("line", { class: "chart-base", x1: left, x2: left + width, y1: bottom + 1.5, y2: bottom + 1.5 }),
        svg("polyline", { class: "chart-line", points }),
        svg("circle", { class: "chart-dot", cx: x(vals.length - 1).toFixed(1), cy: y(vals[vals.length - 1]).toFixed(1), r: 2.2 })));
    });
    return chart;
  }

  // ---- history ----

  function toggleHistory(row) {
    row.open = !row.open;
    row.buttons.history.setAttribute("aria-expanded", String(row.open));
    row.buttons.history.textContent = row.open ? "Hide history" : "History";
    row.historyTr.hidden = !row.open;
    if (row.open) {
      // Opening starts at the newest exports.
      if (row.page.before) {
        row.page = { before: 0, offset: 0 };
        row.back = [];
        row.historySig = "";
      }
      if (!row.historySig) row.historyBody.replaceChildren(el("p", { class: "muted", text: "Loading…" }));
      loadHistory(row);
    }
  }

  // historyPage moves the open history to the older (next) or newer page.
  function historyPage(row, older, nextBefore, shown) {
    if (older) {
      row.back.push(row.page);
      row.page = { before: nextBefore, offset: row.page.offset + shown };
    } else {
      row.page = row.back.pop() || { before: 0, offset: 0 };
    }
    row.focusPager = older ? "history-older" : "history-newer";
    loadHistory(row);
  }

  async function loadHistory(row) {
    const at = row.page;
    let page;
    try {
      page = await api("GET", `/api/v1/exports?definition=${encodeURIComponent(row.name)}&limit=${HISTORY_LIMIT}` +
        (at.before ? `&before=${encodeURIComponent(at.before)}` : ""));
    } catch (err) {
      showError(err, "history");
      return;
    }
    if (row.page !== at) return; // paged meanwhile
    const exports = Array.isArray(page && page.exports) ? page.exports : [];
    if (exports.length === 0 && at.before) {
      // This page's exports are gone (records retention): start again.
      row.page = { before: 0, offset: 0 };
      row.back = [];
      return loadHistory(row);
    }
    const sig = JSON.stringify([at.before, page.total, page.next_before || 0,
      exports.map((r) => [r.id, r.status, r.percent_complete, r.deleted_time])]);
    if (sig === row.historySig) return; // nothing new: leave it as the user sees it
    row.historySig = sig;
    if (exports.length === 0) {
      row.historyBody.replaceChildren(el("p", { class: "muted", text: "No exports yet." }));
      return;
    }
    const tbody = el("tbody");
    let deleted = 0;
    for (const r of exports) {
      const status = el("td", { dataset: { label: "Status" } });
      fillStatus(status, r);
      if (r.deleted_time) deleted++;
      const dl = el("button", { type: "button", class: "small", dataset: { action: "download", exportId: String(r.id) },
        disabled: !downloadable(r), "aria-label": `Download export ${r.id}` }, "Download");
      dl.addEventListener("click", () => download(r, dl));
      tbody.append(el("tr", { class: r.deleted_time ? "deleted" : null, dataset: { exportId: String(r.id), status: r.status, deleted: r.deleted_time ? "true" : null } },
        el("td", { dataset: { field: "id", label: "Export" } }, String(r.id)),
        status,
        el("td", { dataset: { field: "trigger", label: "Trigger" } }, r.trigger || "–"),
        el("td", { class: "num", dataset: { field: "files", value: String(r.file_list_length), label: "Files" } }, formatCount(r.file_list_length)),
        el("td", { class: "num", dataset: { field: "instances", value: String(r.instance_count), label: "Instances" } }, formatCount(r.instance_count)),
        el("td", { class: "num", dataset: { field: "bytes", value: String(r.bytes), label: "Size" }, title: `${formatCount(r.bytes)} bytes` }, formatBytes(r.bytes)),
        el("td", { dataset: { field: "time", label: "Time" } }, timeElement(recordTime(r))),
        el("td", { class: "actions" }, dl)));
    }
    const from = at.offset + 1;
    const to = at.offset + exports.length;
    const newer = el("button", { type: "button", class: "small secondary", dataset: { action: "history-newer" },
      disabled: row.back.length === 0, "aria-label": `Newer exports of ${row.name}` }, "‹ Newer");
    const older = el("button", { type: "button", class: "small secondary", dataset: { action: "history-older" },
      disabled: !page.next_before, "aria-label": `Older exports of ${row.name}` }, "Older ›");
    newer.addEventListener("click", () => historyPage(row, false));
    older.addEventListener("click", () => historyPage(row, true, page.next_before, exports.length));
    row.historyBody.replaceChildren(
      el("div", { class: "history-head" },
        el("p", { class: "history-title" }, `Exports of ${row.name}, newest first: `,
          el("span", { dataset: { field: "range", from: String(from), to: String(to), total: String(page.total) } },
            `${from}–${to} of ${page.total}`),
          deleted ? el("span", { class: "muted" }, ` (${deleted} on this page deleted by retention)`) : ""),
        el("div", { class: "pager" }, newer, older)),
      el("table", { class: "history-table cards" },
        el("thead", {}, el("tr", {},
          el("th", { scope: "col" }, "Export"), el("th", { scope: "col" }, "Status"), el("th", { scope: "col" }, "Trigger"),
          el("th", { scope: "col", class: "num" }, "Files"), el("th", { scope: "col", class: "num" }, "Instances"),
          el("th", { scope: "col", class: "num" }, "Size"), el("th", { scope: "col" }, "Time"),
          el("th", { scope: "col" }, el("span", { class: "visually-hidden" }, "Actions")))),
        tbody));
    if (row.focusPager) {
      const want = row.historyBody.querySelector(`[data-action=${row.focusPager}]`);
      const other = row.historyBody.querySelector(`[data-action=${row.focusPager === "history-older" ? "history-newer" : "history-older"}]`);
      (want && !want.disabled ? want : other).focus();
      row.focusPager = "";
    }
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
      completion: $("adhoc-completion").value,
      include_removed_instances: $("adhoc-include-removed").checked,
      connection: $("adhoc-connection").value,
      formats: [...document.querySelectorAll('#adhoc-formats input[name="format"]:checked')].map((c) => c.value),
      ...asOfField(),
    };
  }

  // asOfField is the request's as_of (a stream sequence or an RFC 3339
  // time), absent when the field is empty: the state now. The server
  // checks it again and says what is wrong.
  function asOfField() {
    const raw = $("adhoc-as-of").value.trim();
    if (!raw) return {};
    if (/^[0-9]+$/.test(raw)) {
      if (/^0+$/.test(raw)) throw new Error("As of: stream sequences start at 1.");
      return { as_of: raw };
    }
    if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/.test(raw)) {
      throw new Error("As of: give a stream sequence (a positive whole number) or an RFC 3339 time such as 2026-03-01T12:00:00Z.");
    }
    return { as_of: raw };
  }

  // describeFormats names an export's formats, each with its size once written.
  function describeFormats(formats) {
    const order = ["diffgram", "coco", "yolo", "jsonl"];
    const names = Object.keys(formats || { diffgram: {} }).sort((a, b) => order.indexOf(a) - order.indexOf(b));
    return names.map((f) => (formats && formats[f] && formats[f].sha256) ? `${f} (${formatBytes(formats[f].bytes)})` : f).join(", ");
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
        el("dt", {}, "Formats"), el("dd", { dataset: { field: "formats" } }, describeFormats(rec.formats)),
        ...(rec.as_of ? [el("dt", {}, "As of"), el("dd", { dataset: { field: "as-of", value: String(rec.watermark) } },
          `${rec.as_of} (stream sequence ${rec.watermark})`)] : []),
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
      el("div", { class: "dl-foot" },
        el("details", {},
          el("summary", {}, `Event body, ${formatCount(e.bytes)} bytes${e.body_truncated ? " (first 4 KiB)" : ""}`),
          el("pre", { class: "dl-body" }, e.body || "")),
        el("button", { type: "button", class: "small secondary", dataset: { action: "redrive", sequence: String(e.sequence) },
          "aria-label": `Redrive dead letter ${e.sequence}: publish the event again` }, "Redrive")))));
  }

  // Redrive: the dead letter's event is published again on its original
  // subject and leaves the dead letters (a still bad one comes back under
  // a new number).
  $("deadletter-list").addEventListener("click", async (ev) => {
    const b = ev.target instanceof Element ? ev.target.closest("button[data-action=redrive]") : null;
    if (!b) return;
    const seq = Number(b.dataset.sequence);
    b.disabled = true;
    try {
      const res = await api("POST", "/api/v1/deadletters/redrive", { sequences: [seq] });
      const failed = (Array.isArray(res && res.failed) ? res.failed : []).find((f) => f.sequence === seq);
      if (failed) throw new Error(`Dead letter ${seq} was not redriven: ${failed.error}`);
      const done = (Array.isArray(res && res.redriven) ? res.redriven : []).find((r) => r.sequence === seq);
      if (!done) throw new Error(`Dead letter ${seq}: the service did not say what became of it`);
      clearError("redrive");
      notice(el("span", { dataset: { field: "redriven", sequence: String(seq), streamSequence: String(done.stream_sequence) } },
        `Dead letter #${seq} published again on ${done.subject} as event #${done.stream_sequence}.`));
      deadLetterSig = "";
      await Promise.allSettled([refreshDeadLetters(), refreshStatus()]);
    } catch (err) {
      showError(err, "redrive");
      b.disabled = false;
      // It may be gone already (redriven elsewhere): show the list as it is.
      deadLetterSig = "";
      refreshDeadLetters().catch((e) => showError(e, "refresh"));
    }
  });

  // ---- refreshing ----

  // showContent shows the page's data once there is some (not while the
  // token is asked for).
  function showContent() {
    if (needToken) return;
    $("content").hidden = false;
    $("loading").hidden = true;
    if (memoryToken) $("forget-token").hidden = false;
  }

  let refreshing = null;

  // refreshAll reloads the definitions, the dead letters and the open
  // histories; a call while one runs shares it.
  function refreshAll(source) {
    if (refreshing) return refreshing;
    refreshing = (async () => {
      const results = await Promise.allSettled([
        refreshDefinitions(),
        refreshStatus(),
        refreshDeadLetters(),
        ...[...rows.values()].filter((r) => r.open).map(loadHistory),
      ]);
      const failed = results.find((r) => r.status === "rejected");
      if (failed) {
        showError(failed.reason, "refresh");
      } else {
        clearError("refresh");
        if (source === "auth") clearError();
        $("updated").textContent = `Updated ${new Date().toLocaleTimeString(undefined, { timeZoneName: "short" })}`;
      }
      showContent();
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
