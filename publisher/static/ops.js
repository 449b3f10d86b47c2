// The operator's page: find records, see where they stand at every output, act on them.
// Plain JS, no framework. Every view is one or a few calls to the management API, never one
// per record. Data goes into the page through textContent only, never parsed as HTML:
// titles, errors and reasons come from outside.
"use strict";

(() => {
  const TOKEN_KEY = "publisher.ops.token";
  const API = document.body.dataset.api || "/api/v1";
  const PAGE_SIZE = pageSize(new URLSearchParams(window.location.search).get("limit"));
  const RETRACTABLE = new Set(["published", "embargoed", "expired"]);
  const FILTERS = ["q", "state", "delivery", "output", "topic", "source", "since", "until", "order"];
  const VIEWS = ["records", "record", "quarantine", "outputs"];
  const OPERATOR_REASON = "disabled by an operator";

  const $ = (id) => document.getElementById(id);
  const enc = encodeURIComponent;
  let me = null; // what the token may do: {scopes: Set}
  let busy = 0;
  let generation = 0;
  const cursors = { records: [], quarantine: [] }; // the cursors of the pages behind us

  class ApiError extends Error {
    constructor(status, message, code, errors) {
      super(message);
      this.status = status;
      this.code = code;
      this.errors = errors || {};
    }
  }

  // -- plumbing ---------------------------------------------------------------------------

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  function setBusy(delta) {
    busy += delta;
    document.body.dataset.busy = busy > 0 ? "1" : "0";
  }

  async function call(method, url) {
    const bearer = token();
    if (!bearer) throw new ApiError(0, "no token", "no_token");
    setBusy(1);
    try {
      let response;
      try {
        response = await fetch(url, {
          method,
          headers: { Authorization: `Bearer ${bearer}`, Accept: "application/json" },
          credentials: "omit",
          cache: "no-store",
        });
      } catch (error) {
        throw new ApiError(-1, `the service did not answer (${error.message})`, "network");
      }
      let data = null;
      if (response.status !== 204) {
        try {
          data = await response.json();
        } catch (_) {
          data = null;
        }
      }
      if (!response.ok) {
        const message = (data && data.message) || response.statusText || "error";
        throw new ApiError(response.status, message, data && data.code, data && data.errors);
      }
      return data;
    } finally {
      setBusy(-1);
    }
  }

  function say(text, kind = "info") {
    const box = $("message");
    box.textContent = text;
    box.className = `message ${kind}`;
  }

  function explain(error, doing) {
    if (!(error instanceof ApiError)) return `Could not ${doing}: ${error.message || error}`;
    if (error.status === 0) {
      return "Paste an API token above to start (scope read to look; submit to retract; admin to redeliver, replay and turn outputs on or off).";
    }
    if (error.status === 401) {
      return `Not signed in: the API token was not accepted (401: ${error.message}). Paste a valid token above.`;
    }
    if (error.status === 403) {
      return `Not allowed to ${doing}: this token lacks the scope for it (403: ${error.message}).`;
    }
    if (error.status === -1) return `Could not ${doing}: ${error.message}.`;
    const details = Object.entries(error.errors || {})
      .map(([path, messages]) => `${path}: ${[].concat(messages).join("; ")}`)
      .join(" · ");
    return `Could not ${doing}: ${error.status} ${error.message}${details ? ` (${details})` : ""}`;
  }

  function report(error, doing) {
    const kind = error instanceof ApiError && error.status === 0 ? "prompt" : "error";
    say(explain(error, doing), kind);
  }

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function badge(text, tone) {
    const value = text === undefined || text === null || text === "" ? "none" : String(text);
    const key = String(tone || value).replace(/[^a-z0-9_-]/gi, "_");
    return el("span", value, `badge s-${key}`);
  }

  function button(text, className, action) {
    const node = el("button", text, className);
    node.type = "button";
    node.addEventListener("click", () => action(node));
    return node;
  }

  function link(text, href, className) {
    const node = el("a", text, className);
    node.href = href;
    return node;
  }

  function cell(label, className) {
    const node = el("td", null, className);
    node.dataset.label = label;
    return node;
  }

  function when(iso) {
    if (!iso) return "";
    return String(iso).replace("T", " ").replace(/\.\d+/, "").replace(/(Z|\+00:00)$/, " UTC");
  }

  function isFuture(iso) {
    return Boolean(iso) && Date.parse(iso) > Date.now();
  }

  function plural(count, word, many) {
    return `${count} ${count === 1 ? word : many || `${word}s`}`;
  }

  function pageSize(given) {
    // ``/ops/?limit=N`` changes the page size (1-500, as the API allows); 50 otherwise
    const value = Number.parseInt(given || "", 10);
    return value >= 1 && value <= 500 ? value : 50;
  }

  function may(scope) {
    return Boolean(me && me.scopes.has(scope));
  }

  function confirmed(question) {
    return window.confirm(question);
  }

  // -- routing: the view is in the URL's fragment (never the token) -----------------------

  function route() {
    const hash = window.location.hash.replace(/^#/, "") || "/records";
    const mark = hash.indexOf("?");
    const path = mark < 0 ? hash : hash.slice(0, mark);
    const params = new URLSearchParams(mark < 0 ? "" : hash.slice(mark + 1));
    const parts = path.split("/").filter(Boolean);
    if (parts[0] === "record" && parts.length > 1) {
      return { name: "record", id: decodeURIComponent(parts.slice(1).join("/")), params };
    }
    if (parts[0] === "quarantine" || parts[0] === "outputs") return { name: parts[0], params };
    return { name: "records", params };
  }

  function go(hash) {
    if (window.location.hash === hash) show();
    else window.location.hash = hash;
  }

  function showOnly(name, params) {
    for (const view of VIEWS) $(`view-${view}`).hidden = view !== name;
    const delivery = params ? params.get("delivery") : null;
    const current =
      name === "records" && delivery === "dead"
        ? "failing"
        : name === "records" && delivery === "scheduled"
          ? "scheduled"
          : name === "record"
            ? "records"
            : name;
    for (const anchor of $("views").querySelectorAll("a")) {
      if (anchor.dataset.view === current) anchor.setAttribute("aria-current", "page");
      else anchor.removeAttribute("aria-current");
    }
  }

  // -- the page as a whole ----------------------------------------------------------------

  async function show(note) {
    const mine = ++generation;
    if (!token()) {
      signedOut(new ApiError(0, "no token", "no_token"));
      return;
    }
    if (!me) {
      try {
        const answer = await call("GET", `${API}/whoami`);
        me = { scopes: new Set(answer.scopes || []) };
      } catch (error) {
        if (mine === generation) signedOut(error);
        return;
      }
    }
    if (mine !== generation) return;
    signedIn();
    const where = route();
    showOnly(where.name, where.params);
    if (!note) say("Loading…", "info");
    const counts = call("GET", `${API}/overview/counts`);
    const strip = counts.then(
      (data) => mine === generation && renderStrip(data),
      (error) => mine === generation && report(error, "read the counts"),
    );
    try {
      const summary = await VIEW_LOADERS[where.name](where, mine, counts);
      if (mine === generation) say(note || summary || "", note ? "ok" : "info");
    } catch (error) {
      if (mine === generation) report(error, DOING[where.name]);
    }
    await strip;
  }

  const DOING = {
    records: "list records",
    record: "read the record",
    quarantine: "list the quarantine",
    outputs: "list the outputs",
  };

  function signedOut(error) {
    me = null;
    for (const view of VIEWS) $(`view-${view}`).hidden = true;
    $("views").hidden = true;
    $("strip").hidden = true;
    $("strip").replaceChildren();
    $("whoami").hidden = true;
    $("records-table").querySelector("tbody").replaceChildren();
    showTokenState();
    report(error, "sign in");
  }

  function signedIn() {
    $("views").hidden = false;
    $("strip").hidden = false;
    const scopes = [...me.scopes];
    $("whoami").textContent = `token: ${scopes.length ? scopes.join(", ") : "no scopes"}`;
    $("whoami").hidden = false;
    document.body.dataset.scopes = scopes.join(" ");
    showTokenState();
  }

  function showTokenState() {
    const has = Boolean(token());
    $("token").placeholder = has ? "token kept for this tab" : "paste a bearer token";
    $("forget-token").hidden = !has;
  }

  // -- the strip: is anything wrong? ------------------------------------------------------

  function renderStrip(counts) {
    const plus = counts.capped ? "+" : "";
    const chips = [];
    const dead = counts.totals.dead;
    chips.push(
      chip(
        "failing",
        dead ? `${dead}${plus} failing` : "nothing failing",
        "#/records?delivery=dead",
        dead ? "bad" : "ok",
      ),
    );
    for (const row of counts.outputs) {
      if (!row.dead) continue;
      const href = `#/records?delivery=dead&output=${enc(row.output)}`;
      const node = chip("failing-output", `${row.output}: ${row.dead}${plus} failing`, href, "bad");
      node.dataset.output = row.output;
      chips.push(node);
    }
    const due = counts.totals.due;
    const oldest = counts.oldest_due_at ? ` · oldest due ${when(counts.oldest_due_at)}` : "";
    chips.push(chip("due", `${due}${plus} due now${oldest}`, "#/records?delivery=due", due ? "warn" : "quiet"));
    const later = counts.totals.scheduled;
    chips.push(chip("scheduled", `${later}${plus} scheduled`, "#/records?delivery=scheduled", "quiet"));
    const held = counts.quarantine.held;
    const heldPlus = counts.quarantine.capped ? "+" : "";
    chips.push(chip("quarantine", `${held}${heldPlus} quarantined`, "#/quarantine", held ? "warn" : "quiet"));
    for (const off of counts.disabled) {
      const paused = off.reason !== OPERATOR_REASON;
      const node = chip("disabled", `${off.name} ${paused ? "paused" : "off"}`, "#/outputs", "bad");
      node.dataset.output = off.name;
      if (off.reason) node.title = off.reason;
      chips.push(node);
    }
    $("strip").replaceChildren(...chips);
  }

  function chip(kind, text, href, tone) {
    const node = link(text, href, `chip k-${tone}`);
    node.dataset.chip = kind;
    return node;
  }

  // -- records: the table -----------------------------------------------------------------

  async function loadRecords(where, mine) {
    const params = where.params;
    fillFilters(params);
    const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
    for (const name of FILTERS) {
      const value = params.get(name);
      if (value) query.set(name, name === "since" || name === "until" ? asUtc(value) : value);
    }
    if (params.get("cursor")) query.set("cursor", params.get("cursor"));
    const data = await call("GET", `${API}/overview/records?${query}`);
    if (mine !== generation) return "";
    fillOutputChoice(data.outputs, params.get("output") || "");
    renderRecords(data);
    updatePager(params, data.next_cursor);
    const filtered = FILTERS.some((name) => params.get(name) && name !== "order");
    if (!data.items.length) return filtered ? "No record matches." : "No records yet.";
    return `${plural(data.items.length, "record")} shown${filtered ? " (filtered)" : ""}.`;
  }

  function asUtc(local) {
    // a datetime-local value is read as UTC, as every time on the page is shown
    return /Z$|[+-]\d\d:\d\d$/.test(local) ? local : `${local}${local.length === 16 ? ":00" : ""}Z`;
  }

  function fillFilters(params) {
    const narrowed = FILTERS.some((name) => name !== "q" && params.get(name));
    if (narrowed) $("more-filters").open = true;
    for (const name of FILTERS) {
      const field = $(`f-${name}`);
      if (name === "output") continue; // filled with the answer's output names
      field.value = params.get(name) || (name === "order" ? "newest" : "");
    }
  }

  function fillOutputChoice(names, chosen) {
    const select = $("f-output");
    const options = [el("option", "any")];
    options[0].value = "";
    for (const name of names) {
      const option = el("option", name);
      option.value = name;
      options.push(option);
    }
    select.replaceChildren(...options);
    select.value = names.includes(chosen) ? chosen : "";
  }

  function renderRecords(data) {
    const table = $("records-table");
    const head = el("tr");
    for (const name of ["record", "state", "secured", ...data.outputs, "updated"]) {
      const th = el("th", name);
      th.scope = "col";
      if (data.outputs.includes(name)) th.className = "output-col";
      head.append(th);
    }
    table.querySelector("thead").replaceChildren(head);
    const rows = data.items.map((item) => recordRow(item, data.outputs));
    if (!rows.length) {
      const row = el("tr", null, "empty-row");
      const td = el("td", "Nothing to show.", "muted empty");
      td.colSpan = data.outputs.length + 4;
      row.append(td);
      rows.push(row);
    }
    table.querySelector("tbody").replaceChildren(...rows);
  }

  function recordRow(item, outputs) {
    const row = el("tr", null, "record-row");
    row.dataset.recordId = item.id;
    row.dataset.state = item.state;
    const title = cell("record", "title-cell");
    const name = typeof item.title === "string" && item.title !== "" ? item.title : "(untitled)";
    title.append(link(name, `#/record/${enc(item.id)}`, "title"), el("code", item.id, "record-id"));
    row.append(title);
    const state = cell("state", "state-cell");
    state.append(badge(item.state));
    for (const line of schedule(item.state, item.published_at, item.expires_at)) {
      state.append(el("span", line, "schedule"));
    }
    row.append(state);
    const secured = cell("secured", "secured-cell");
    secured.append(badge((item.secured && item.secured.status) || "none"));
    row.append(secured);
    for (const output of outputs) row.append(outputCell(item, output));
    row.append(cell("updated", "updated").appendChild(el("span", when(item.updated_at))).parentNode);
    return row;
  }

  function schedule(state, publishedAt, expiresAt) {
    const lines = [];
    if (state === "embargoed" && publishedAt) lines.push(`goes live ${when(publishedAt)}`);
    if (expiresAt && state !== "retracted") {
      lines.push(`${isFuture(expiresAt) ? "expires" : "expired"} ${when(expiresAt)}`);
    }
    return lines;
  }

  function describe(summary) {
    // one status per output: what a person on call needs to read at a glance
    const status = summary.status;
    if (status === "pending" && isFuture(summary.due_at)) {
      return { text: `due ${when(summary.due_at)}`, tone: "scheduled" };
    }
    if (status === "pending") {
      const tries = Number(summary.attempts) || 0;
      return { text: tries ? `retrying (${plural(tries, "attempt")})` : "pending", tone: "pending" };
    }
    if (status === "dead") return { text: "failed", tone: "failed" };
    const placement = summary.placement || status || "none";
    return { text: placement, tone: placement };
  }

  function outputCell(item, output) {
    const td = cell(output, "output-cell");
    td.dataset.output = output;
    const summary = item.outputs[output];
    if (!summary) {
      td.append(el("span", "—", "muted not-routed"));
      td.dataset.status = "none";
      return td;
    }
    const { text, tone } = describe(summary);
    const mark = badge(text, tone);
    mark.classList.add("cell-status");
    if (summary.error) mark.title = summary.error;
    td.dataset.status = summary.status || summary.placement || "none";
    td.append(mark);
    if (summary.status === "dead" && summary.can_redeliver && may("admin")) {
      td.append(
        button("Redeliver", "redeliver small", (node) =>
          redeliver(summary.delivery_id, output, node),
        ),
      );
    }
    return td;
  }

  function updatePager(params, next) {
    const current = params.get("cursor") || "";
    const behind = cursors.records;
    $("prev-page").disabled = behind.length === 0;
    $("first-page").disabled = !current;
    $("next-page").disabled = !next;
    $("next-page").dataset.cursor = next || "";
    $("page-info").textContent = `page ${behind.length + 1}`;
  }

  function recordsHash(params) {
    const clean = new URLSearchParams();
    for (const [name, value] of params) if (value && !(name === "order" && value === "newest")) clean.set(name, value);
    const text = clean.toString();
    return text ? `#/records?${text}` : "#/records";
  }

  function turnPage(cursor, back) {
    const params = route().params;
    if (back) {
      cursor = cursors.records.pop() || "";
    } else {
      cursors.records.push(params.get("cursor") || "");
    }
    if (cursor) params.set("cursor", cursor);
    else params.delete("cursor");
    go(recordsHash(params));
  }

  function applyFilters(event) {
    event.preventDefault();
    const params = new URLSearchParams();
    for (const name of FILTERS) {
      const value = $(`f-${name}`).value.trim();
      if (value) params.set(name, value);
    }
    cursors.records = [];
    go(recordsHash(params));
  }

  // -- one record -------------------------------------------------------------------------

  async function loadRecord(where, mine) {
    const base = `${API}/records/${enc(where.id)}`;
    const [detail, deliveries, revisions] = await Promise.all([
      call("GET", base),
      call("GET", `${base}/deliveries`),
      call("GET", `${base}/revisions`),
    ]);
    if (mine !== generation) return "";
    renderRecord(detail, deliveries.items || [], revisions.items || []);
    const count = (deliveries.items || []).length;
    return `Record ${detail.id}: ${plural(count, "delivery", "deliveries")}.`;
  }

  function renderRecord(detail, deliveries, revisions) {
    const fields = detail.record || {};
    const section = $("view-record");
    section.dataset.recordId = detail.id;
    section.dataset.state = detail.state;
    const title = $("record-title");
    const named = typeof fields.title === "string" && fields.title !== "";
    title.textContent = named ? fields.title : "(untitled)";
    title.classList.toggle("muted", !named);
    renderFacts(detail, fields);
    const retract = $("retract");
    retract.hidden = !(may("submit") && RETRACTABLE.has(detail.state));
    retract.onclick = () => retractRecord(detail.id, fields.title);
    const rows = deliveries
      .slice()
      .reverse()
      .map((delivery) => deliveryRow(detail, delivery));
    if (!rows.length) rows.push(emptyRow("No deliveries: not published to any output yet.", 9));
    $("deliveries-table").querySelector("tbody").replaceChildren(...rows);
    const kept = revisions.map(revisionRow);
    if (!kept.length) kept.push(emptyRow("No revisions kept.", 4));
    $("revisions-table").querySelector("tbody").replaceChildren(...kept);
  }

  function renderFacts(detail, fields) {
    const facts = [
      ["state", badge(detail.state)],
      ["secured", badge((detail.secured && detail.secured.status) || "none")],
      ["revision", String(detail.revision)],
      ["id", el("code", detail.id, "record-id")],
      ["source", detail.source],
      ["received", when(detail.created_at)],
      ["updated", when(detail.updated_at)],
    ];
    const goesLive = fields.publishedDateTime;
    if (goesLive) {
      const label = detail.state === "embargoed" ? "goes live" : "published";
      facts.push([label, el("span", when(goesLive), "schedule")]);
    }
    if (fields.expiresAt) {
      facts.push([isFuture(fields.expiresAt) ? "expires" : "expired", el("span", when(fields.expiresAt), "schedule")]);
    }
    for (const warning of detail.warnings || []) facts.push(["warning", warning]);
    const list = $("record-facts");
    list.replaceChildren();
    for (const [name, value] of facts) {
      const dd = el("dd");
      dd.dataset.fact = name;
      if (value instanceof Node) dd.append(value);
      else dd.textContent = value || "";
      list.append(el("dt", name), dd);
    }
  }

  function canRedeliver(delivery, detail) {
    // the service says so where it knows; else: finished, and of the current revision
    const own = ["dead", "done"].includes(delivery.status) && delivery.revision === detail.revision;
    return delivery.can_redeliver !== undefined ? Boolean(delivery.can_redeliver) : own;
  }

  function deliveryRow(detail, delivery) {
    const row = el("tr", null, "delivery-row");
    row.dataset.deliveryId = delivery.id;
    row.dataset.output = delivery.output;
    row.dataset.status = delivery.status;
    row.append(cell("output", "output-name").appendChild(el("code", delivery.output)).parentNode);
    const where = cell("where");
    where.append(badge((detail.outputs || {})[delivery.output] || "none"));
    row.append(where);
    row.append(textCell("event", delivery.event, "event"));
    const status = cell("status", "status-cell");
    const scheduled = delivery.status === "pending" && isFuture(delivery.next_attempt_at);
    status.append(badge(delivery.status, scheduled ? "scheduled" : delivery.status));
    if (delivery.status === "pending" && delivery.next_attempt_at) {
      const label = scheduled ? `due ${when(delivery.next_attempt_at)}` : "due now";
      status.append(el("span", label, "schedule due"));
    }
    if (delivery.error) status.append(el("div", delivery.error, "error-text"));
    row.append(status);
    row.append(textCell("attempts", String(Number(delivery.attempts) || 0), "attempts"));
    row.append(textCell("revision", String(delivery.revision ?? ""), "revision"));
    row.append(textCell("updated", when(delivery.updated_at), "updated"));
    row.append(historyCell(delivery));
    const actions = cell("actions", "actions");
    if (may("admin") && canRedeliver(delivery, detail)) {
      // a failed one is what needs it; sending a delivered one again is the rarer repair
      const tone = delivery.status === "dead" ? "redeliver small" : "redeliver small quiet";
      actions.append(button("Redeliver", tone, (node) => redeliver(delivery.id, delivery.output, node)));
    }
    row.append(actions);
    return row;
  }

  function historyCell(delivery) {
    const td = cell("history", "history-cell");
    const history = Array.isArray(delivery.history) ? delivery.history : null;
    if (!history || !history.length) {
      td.append(el("span", history ? "no attempts yet" : "—", "muted"));
      return td;
    }
    const list = el("ol", null, "history");
    for (const attempt of history) {
      const parts = [when(attempt.at), attempt.outcome];
      if (attempt.status_code !== undefined && attempt.status_code !== null) parts.push(String(attempt.status_code));
      if (attempt.duration_ms !== undefined && attempt.duration_ms !== null) parts.push(`${attempt.duration_ms} ms`);
      const item = el("li", parts.filter(Boolean).join(" · "), "attempt");
      item.dataset.outcome = attempt.outcome || "";
      if (attempt.error) item.append(el("div", attempt.error, "error-text"));
      list.append(item);
    }
    td.append(list);
    return td;
  }

  function revisionRow(revision) {
    const row = el("tr", null, "revision-row");
    row.append(textCell("revision", String(revision.revision)));
    row.append(textCell("event", revision.event || "—"));
    row.append(textCell("title", revision.title ?? "(untitled)", "title-text"));
    row.append(textCell("kept", when(revision.created_at)));
    return row;
  }

  function textCell(label, text, className) {
    const td = cell(label, className);
    td.textContent = text;
    return td;
  }

  function emptyRow(text, span) {
    const row = el("tr", null, "empty-row");
    const td = el("td", text, "muted empty");
    td.colSpan = span;
    row.append(td);
    return row;
  }

  // -- the quarantine ---------------------------------------------------------------------

  async function loadQuarantine(where, mine) {
    const params = where.params;
    const withReplayed = params.get("replayed") === "all";
    $("q-replayed").checked = withReplayed;
    const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (!withReplayed) query.set("replayed", "false");
    if (params.get("cursor")) query.set("cursor", params.get("cursor"));
    const data = await call("GET", `${API}/quarantine?${query}`);
    if (mine !== generation) return "";
    const rows = data.items.map(quarantineRow);
    if (!rows.length) rows.push(emptyRow("Nothing in quarantine.", 7));
    $("quarantine-table").querySelector("tbody").replaceChildren(...rows);
    $("q-next").disabled = !data.next_cursor;
    $("q-next").dataset.cursor = data.next_cursor || "";
    $("q-first").disabled = !params.get("cursor");
    return `${plural(data.items.length, "item")} shown.`;
  }

  function quarantineRow(item) {
    const row = el("tr", null, "quarantine-row");
    row.dataset.itemId = String(item.id);
    row.append(textCell("item", `#${item.id}`, "item-id"));
    row.append(textCell("received", when(item.created_at)));
    row.append(textCell("source", item.source));
    const reason = cell("reason");
    reason.append(badge(item.reason, "failed"));
    if (item.replayed_at) reason.append(badge(`replayed ${when(item.replayed_at)}`, "replayed"));
    row.append(reason);
    const why = cell("why", "why");
    const list = el("ul", null, "errors");
    for (const [path, messages] of Object.entries(item.errors || {})) {
      list.append(el("li", `${path}: ${[].concat(messages).join("; ")}`, "error-text"));
    }
    why.append(list);
    row.append(why);
    const record = cell("record");
    if (item.record_id) record.append(el("code", item.record_id, "record-id"));
    row.append(record);
    const actions = cell("actions", "actions");
    if (may("admin")) {
      if (!item.replayed_at) {
        actions.append(button("Replay", "replay small", (node) => replay(item.id, node)));
      }
      actions.append(button("Delete", "delete small danger", (node) => removeItem(item.id, node)));
    }
    row.append(actions);
    return row;
  }

  // -- outputs and subscribers ------------------------------------------------------------

  async function loadOutputs(where, mine, counts) {
    const [data, numbers] = await Promise.all([call("GET", `${API}/outputs`), counts]);
    if (mine !== generation) return "";
    const byName = new Map(numbers.outputs.map((row) => [row.output, row]));
    const rows = data.items.map((output) => outputRow(output, byName.get(output.name)));
    if (!rows.length) rows.push(emptyRow("No outputs are configured.", 8));
    $("outputs-table").querySelector("tbody").replaceChildren(...rows);
    return `${plural(data.items.length, "output")}.`;
  }

  function outputRow(output, numbers) {
    const row = el("tr", null, "output-row");
    row.dataset.output = output.name;
    const paused = !output.enabled && output.reason !== OPERATOR_REASON;
    const stateName = output.enabled ? "enabled" : paused ? "paused" : "disabled";
    row.dataset.state = stateName;
    row.append(cell("output", "output-name").appendChild(el("code", output.name)).parentNode);
    const state = cell("state");
    state.append(badge(stateName, output.enabled ? "live" : paused ? "pending" : "retracted"));
    if (!output.enabled && output.reason) state.append(el("div", output.reason, "muted reason"));
    row.append(state);
    const counts = numbers || { dead: 0, due: 0, scheduled: 0 };
    row.append(countCell("failed", counts.dead, `#/records?delivery=dead&output=${enc(output.name)}`));
    row.append(countCell("due", counts.due, `#/records?delivery=due&output=${enc(output.name)}`));
    row.append(countCell("scheduled", counts.scheduled, `#/records?delivery=scheduled&output=${enc(output.name)}`));
    row.append(textCell("routing rule", output.when || "every record", output.when ? "rule" : "muted"));
    row.append(textCell("protected data", output.accepts_protected ? "accepted" : "never"));
    const actions = cell("actions", "actions");
    if (may("admin")) {
      if (output.enabled) {
        actions.append(button("Disable", "disable small danger", (node) => switchOutput(output.name, "disable", node)));
      } else {
        actions.append(button(paused ? "Resume" : "Enable", "enable small", (node) => switchOutput(output.name, "enable", node)));
      }
    }
    row.append(actions);
    return row;
  }

  function countCell(label, count, href) {
    const td = cell(label, "count");
    td.dataset.count = String(count);
    if (count) td.append(link(String(count), href));
    else td.append(el("span", "0", "muted"));
    return td;
  }

  const VIEW_LOADERS = {
    records: loadRecords,
    record: loadRecord,
    quarantine: loadQuarantine,
    outputs: loadOutputs,
  };

  // -- actions: each one, then the view and the strip again, in place ---------------------

  async function act(node, doing, work) {
    if (node) node.disabled = true;
    try {
      const note = await work();
      await show(note);
    } catch (error) {
      if (node) node.disabled = false;
      report(error, doing);
    }
  }

  function redeliver(deliveryId, output, node) {
    return act(node, "redeliver", async () => {
      await call("POST", `${API}/deliveries/${enc(deliveryId)}/redeliver`);
      return `Delivery to ${output} queued again.`;
    });
  }

  function retractRecord(id, title) {
    const name = typeof title === "string" && title ? `“${title}”` : id;
    if (!confirmed(`Retract ${name} from every output?`)) return Promise.resolve();
    return act($("retract"), "retract", async () => {
      const answer = await call("DELETE", `${API}/records/${enc(id)}`);
      return `Retraction of ${name}: ${answer.status}.`;
    });
  }

  function replay(id, node) {
    return act(node, "replay", async () => {
      const answer = await call("POST", `${API}/quarantine/${enc(id)}/replay`);
      const taken = (answer.items || []).map((item) => `${item.id || "?"} ${item.status}`);
      return `Item #${id} ${answer.status}${taken.length ? `: ${taken.join(", ")}` : ""}.`;
    });
  }

  function removeItem(id, node) {
    if (!confirmed(`Delete quarantine item #${id} for good?`)) return Promise.resolve();
    return act(node, "delete the item", async () => {
      await call("DELETE", `${API}/quarantine/${enc(id)}`);
      return `Item #${id} deleted.`;
    });
  }

  function switchOutput(name, how, node) {
    if (how === "disable" && !confirmed(`Turn ${name} off? Its deliveries wait until it is on again.`)) {
      return Promise.resolve();
    }
    return act(node, `${how} ${name}`, async () => {
      const answer = await call("POST", `${API}/outputs/${enc(name)}/${how}`);
      return `${name} is ${answer.enabled ? "on" : "off"}.`;
    });
  }

  // -- wiring -----------------------------------------------------------------------------

  function start() {
    document.body.dataset.busy = "0";
    // every filter at hand on a wide screen; on a phone the search first, the rest folded
    $("more-filters").open = window.matchMedia("(min-width: 761px)").matches;
    $("login").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("token").value.trim();
      if (!value) {
        say("Paste an API token first.", "prompt");
        return;
      }
      sessionStorage.setItem(TOKEN_KEY, value);
      $("token").value = "";
      me = null;
      cursors.records = [];
      show();
    });
    $("forget-token").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      me = null;
      show();
    });
    $("refresh").addEventListener("click", () => show());
    $("filters").addEventListener("submit", applyFilters);
    $("clear-filters").addEventListener("click", () => {
      cursors.records = [];
      go("#/records");
    });
    $("next-page").addEventListener("click", () => turnPage($("next-page").dataset.cursor, false));
    $("prev-page").addEventListener("click", () => turnPage("", true));
    $("first-page").addEventListener("click", () => {
      const params = route().params;
      params.delete("cursor");
      cursors.records = [];
      go(recordsHash(params));
    });
    $("q-replayed").addEventListener("change", (event) => {
      go(event.target.checked ? "#/quarantine?replayed=all" : "#/quarantine");
    });
    $("q-next").addEventListener("click", () => {
      const params = route().params;
      params.set("cursor", $("q-next").dataset.cursor);
      go(`#/quarantine?${params}`);
    });
    $("q-first").addEventListener("click", () => {
      const params = route().params;
      params.delete("cursor");
      const text = params.toString();
      go(text ? `#/quarantine?${text}` : "#/quarantine");
    });
    window.addEventListener("hashchange", () => {
      const where = route();
      if (where.name !== "records" || !where.params.get("cursor")) cursors.records = [];
      show();
    });
    showTokenState();
    show();
  }

  start();
})();
