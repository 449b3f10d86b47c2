// The operator's page: lists records, their secured status and deliveries per output,
// with redeliver and retract. Plain JS, no framework. Data goes into the page through
// textContent only, never parsed as HTML: titles and errors come from outside.
"use strict";

(() => {
  const TOKEN_KEY = "publisher.ops.token";
  const PAGE_SIZE = pageSize(new URLSearchParams(window.location.search).get("limit"));
  const RETRACTABLE = new Set(["published", "embargoed", "expired"]);
  const REDELIVERABLE = new Set(["dead", "failed"]);

  const $ = (id) => document.getElementById(id);
  const api = {
    records: document.body.dataset.records,
    deliveries: document.body.dataset.deliveries,
  };
  const view = { filter: "all", state: "", cursor: null, history: [], next: null };
  let busy = 0;
  let generation = 0;

  class ApiError extends Error {
    constructor(status, message, code) {
      super(message);
      this.status = status;
      this.code = code;
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
    if (!bearer) {
      throw new ApiError(0, "no token", "no_token");
    }
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
      try {
        data = await response.json();
      } catch (_) {
        data = null;
      }
      if (!response.ok) {
        const message = (data && data.message) || response.statusText || "error";
        throw new ApiError(response.status, message, data && data.code);
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
    box.hidden = !text;
  }

  function explain(error, doing) {
    if (!(error instanceof ApiError)) {
      return `Could not ${doing}: ${error.message || error}`;
    }
    if (error.status === 0) {
      return "Paste an API token above to start (scope read to look; submit to retract; admin to redeliver).";
    }
    if (error.status === 401) {
      return `Not signed in: the API token was not accepted (401: ${error.message}). Paste a valid token above.`;
    }
    if (error.status === 403) {
      return `Not allowed to ${doing}: this token lacks the scope for it (403: ${error.message}).`;
    }
    if (error.status === -1) {
      return `Could not ${doing}: ${error.message}.`;
    }
    return `Could not ${doing}: ${error.status} ${error.message}`;
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

  function badge(text, extra) {
    const value = text === undefined || text === null || text === "" ? "none" : String(text);
    const node = el("span", value, `badge s-${value.replace(/[^a-z0-9_-]/gi, "_")}`);
    if (extra) node.classList.add(extra);
    return node;
  }

  function when(iso) {
    if (!iso) return "";
    return String(iso).replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC");
  }

  const enc = encodeURIComponent;

  function pageSize(given) {
    // ``/ops/?limit=N`` changes the page size (1-500, as the API allows); 20 otherwise
    const value = Number.parseInt(given || "", 10);
    return value >= 1 && value <= 500 ? value : 20;
  }

  // -- loading ----------------------------------------------------------------------------

  async function load() {
    const mine = ++generation;
    const list = $("records");
    if (!token()) {
      list.replaceChildren();
      $("controls").hidden = true;
      $("pager").hidden = true;
      report(new ApiError(0, "no token", "no_token"), "list records");
      return;
    }
    $("controls").hidden = false;
    say("Loading…", "info");
    let ids;
    let summaries = new Map();
    try {
      if (view.filter === "failed") {
        const data = await call("GET", `${api.deliveries}?status=dead`);
        ids = [...new Set(data.items.map((d) => d.record_id))];
        view.next = null;
      } else {
        const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
        if (view.state) query.set("state", view.state);
        if (view.cursor) query.set("cursor", view.cursor);
        const data = await call("GET", `${api.records}?${query}`);
        ids = data.items.map((r) => r.id);
        summaries = new Map(data.items.map((r) => [r.id, r]));
        view.next = data.next_cursor || null;
      }
    } catch (error) {
      if (mine !== generation) return;
      list.replaceChildren();
      $("pager").hidden = true;
      report(error, "list records");
      return;
    }
    if (mine !== generation) return;
    const cards = ids.map((id) => placeholder(id, summaries.get(id)));
    list.replaceChildren(...cards);
    if (!ids.length) {
      list.append(
        el(
          "p",
          view.filter === "failed" ? "No failed deliveries." : "No records.",
          "empty muted",
        ),
      );
    }
    updatePager();
    const failures = [];
    await Promise.all(
      ids.map((id, index) =>
        fill(cards[index], id).catch((error) => failures.push([id, error])),
      ),
    );
    if (mine !== generation) return;
    if (failures.length) {
      report(failures[0][1], `read record ${failures[0][0]}`);
    } else {
      const what = view.filter === "failed" ? "record(s) with failed deliveries" : "record(s)";
      say(`${ids.length} ${what} shown.`, "ok");
    }
  }

  function updatePager() {
    const pager = $("pager");
    pager.hidden = view.filter === "failed";
    $("state").disabled = view.filter === "failed";
    $("prev-page").disabled = view.history.length === 0;
    $("first-page").disabled = view.history.length === 0;
    $("next-page").disabled = !view.next;
    $("page-info").textContent = `page ${view.history.length + 1}`;
  }

  function placeholder(id, summary) {
    const card = el("article", null, "record loading");
    card.dataset.recordId = id;
    const title = summary && summary.title;
    card.append(el("h2", title === undefined || title === null ? id : title, "title"));
    card.append(el("p", "loading…", "muted"));
    return card;
  }

  async function fill(card, id) {
    const base = `${api.records}/${enc(id)}`;
    const [detail, deliveries] = await Promise.all([
      call("GET", base),
      call("GET", `${base}/deliveries`),
    ]);
    const fresh = render(detail, deliveries.items || []);
    card.replaceWith(fresh);
    return fresh;
  }

  async function reload(id) {
    const card = document.querySelector(`article.record[data-record-id="${CSS.escape(id)}"]`);
    if (card) await fill(card, id);
  }

  // -- rendering --------------------------------------------------------------------------

  function render(detail, deliveries) {
    const card = $("record-template").content.firstElementChild.cloneNode(true);
    const fields = detail.record || {};
    card.dataset.recordId = detail.id;
    card.dataset.state = detail.state;

    const title = card.querySelector(".title");
    if (typeof fields.title === "string" && fields.title !== "") {
      title.textContent = fields.title;
    } else {
      title.textContent = "(untitled)";
      title.classList.add("muted");
    }
    card.querySelector(".record-id").textContent = detail.id;
    card.querySelector(".state").replaceWith(badge(detail.state, "state"));
    const secured = (detail.secured && detail.secured.status) || "none";
    card.querySelector(".secured").replaceWith(badge(secured, "secured"));
    card.querySelector(".revision").textContent = detail.revision;
    card.querySelector(".updated").textContent = when(detail.updated_at);

    const retract = card.querySelector(".retract");
    if (RETRACTABLE.has(detail.state)) {
      retract.hidden = false;
      retract.addEventListener("click", () => retractRecord(detail.id, fields.title));
    }

    const placements = detail.outputs || {};
    const byOutput = new Map();
    for (const name of Object.keys(placements)) byOutput.set(name, []);
    for (const delivery of deliveries) {
      if (!byOutput.has(delivery.output)) byOutput.set(delivery.output, []);
      byOutput.get(delivery.output).push(delivery);
    }
    const rows = card.querySelector(".outputs tbody");
    const names = [...byOutput.keys()].sort();
    for (const name of names) {
      rows.append(outputRow(detail.id, name, placements[name], byOutput.get(name)));
    }
    if (!names.length) {
      const row = el("tr");
      const cell = el("td", "no deliveries: not published to any output yet", "muted");
      cell.colSpan = 3;
      row.append(cell);
      rows.append(row);
    }
    return card;
  }

  function outputRow(recordId, name, placement, deliveries) {
    const row = el("tr", null, "output");
    row.dataset.output = name;
    row.append(el("th", name, "output-name"));
    const status = el("td");
    status.append(badge(placement || "none", "placement"));
    row.append(status);
    const cell = el("td");
    const list = el("ul", null, "deliveries");
    for (const delivery of deliveries) {
      list.append(deliveryItem(recordId, delivery));
    }
    if (!deliveries.length) list.append(el("li", "no deliveries", "muted"));
    cell.append(list);
    row.append(cell);
    return row;
  }

  function deliveryItem(recordId, delivery) {
    const item = el("li", null, "delivery");
    item.dataset.deliveryId = delivery.id;
    item.dataset.status = delivery.status;
    item.append(el("span", delivery.event, "event"));
    item.append(badge(delivery.status, "delivery-status"));
    const attempts = Number(delivery.attempts) || 0;
    item.append(el("span", `${attempts} attempt${attempts === 1 ? "" : "s"}`, "attempts muted"));
    if (REDELIVERABLE.has(delivery.status)) {
      const button = el("button", "Redeliver", "redeliver");
      button.type = "button";
      button.addEventListener("click", () => redeliver(recordId, delivery, button));
      item.append(button);
    }
    if (delivery.error) {
      item.append(el("div", delivery.error, "error-text"));
    }
    return item;
  }

  // -- actions ----------------------------------------------------------------------------

  async function redeliver(recordId, delivery, button) {
    button.disabled = true;
    try {
      await call("POST", `${api.deliveries}/${enc(delivery.id)}/redeliver`);
      say(`Delivery to ${delivery.output} queued again.`, "ok");
      await reload(recordId);
    } catch (error) {
      button.disabled = false;
      report(error, "redeliver");
    }
  }

  async function retractRecord(id, title) {
    const name = typeof title === "string" && title ? `“${title}”` : id;
    if (!window.confirm(`Retract ${name} from every output?`)) return;
    try {
      const answer = await call("DELETE", `${api.records}/${enc(id)}`);
      say(`Retraction of ${name}: ${answer.status}.`, "ok");
      await reload(id);
    } catch (error) {
      report(error, "retract");
    }
  }

  // -- wiring -----------------------------------------------------------------------------

  function start() {
    document.body.dataset.busy = "0";
    $("login").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("token").value.trim();
      if (!value) {
        say("Paste an API token first.", "prompt");
        return;
      }
      sessionStorage.setItem(TOKEN_KEY, value);
      $("token").value = "";
      showSignedIn();
      view.cursor = null;
      view.history = [];
      load();
    });
    $("forget-token").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      showSignedIn();
      load();
    });
    $("filter").addEventListener("change", (event) => {
      view.filter = event.target.value;
      view.cursor = null;
      view.history = [];
      load();
    });
    $("state").addEventListener("change", (event) => {
      view.state = event.target.value;
      view.cursor = null;
      view.history = [];
      load();
    });
    $("refresh").addEventListener("click", () => load());
    $("next-page").addEventListener("click", () => {
      if (!view.next) return;
      view.history.push(view.cursor);
      view.cursor = view.next;
      load();
    });
    $("prev-page").addEventListener("click", () => {
      if (!view.history.length) return;
      view.cursor = view.history.pop();
      load();
    });
    $("first-page").addEventListener("click", () => {
      view.cursor = null;
      view.history = [];
      load();
    });
    showSignedIn();
    load();
  }

  function showSignedIn() {
    const has = Boolean(token());
    $("token").placeholder = has ? "token kept for this tab" : "paste a bearer token";
    $("forget-token").hidden = !has;
  }

  start();
})();
