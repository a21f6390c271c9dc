// The operator's console (GET /, receiver/templates/dashboard.html). Nothing is fetched before
// sign-in; then every figure comes from the API with the key as a bearer token, so that the page
// shows exactly what that key may read. Views are routes of the URL's fragment:
//   #/requests?q=&status=&path=&since=&until=&offset=   the search and its results
//   #/requests/{id}                                     one request and its timeline
//   #/charts                                            the figures over the last hour, day or week
"use strict";

(() => {
  const REFRESH_MS = Number(document.body.dataset.refreshMs);
  const PAGE_SIZE = Number(document.body.dataset.pageSize);
  const KEY_STORE = "answerback.key";
  const FILTERS = ["q", "status", "path", "since", "until"];
  const FINAL = new Set(["completed", "failed", "expired"]);
  const $ = (id) => document.getElementById(id);

  const state = {
    key: null,
    admin: false,
    tenant: false, // a key of API_KEYS (an admin key may be of no tenant: then all tenants' figures only)
    allTenants: false,
    window: "hour",
    shown: "", // what the current view last drew, so that a refresh that changes nothing redraws nothing
    bulk: null, // the bulk retry being watched: its id
    ticks: 0,
    timer: null,
  };

  // ---- the API ------------------------------------------------------------------------------

  async function api(path, options = {}) {
    const headers = { Authorization: "Bearer " + state.key };
    if (options.json !== undefined) headers["Content-Type"] = "application/json";
    let answer;
    try {
      answer = await fetch(path, {
        method: options.method || "GET",
        headers,
        body: options.json === undefined ? undefined : JSON.stringify(options.json),
      });
    } catch (error) {
      return { ok: false, status: 0, body: { error: "Answerback could not be reached" } };
    }
    let body = null;
    try {
      body = await answer.json();
    } catch (error) {
      body = { error: `HTTP ${answer.status}` };
    }
    if (answer.status === 401 && state.key && state.tenant && !options.probe) signOut("That API key was refused: sign in again.");
    return { ok: answer.ok, status: answer.status, body };
  }

  const scope = () => (state.admin && state.allTenants ? "&scope=all" : "");

  // ---- small DOM helpers --------------------------------------------------------------------

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = value;
      else if (name === "class") node.className = value;
      else node.setAttribute(name, value === true ? "" : value);
    }
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  }

  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs = {}, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // "2026-12-03T14:00:00.123Z" as "2026-12-03 14:00:00.123Z": UTC, as records and logs have it.
  const shownTime = (iso) => (iso ? iso.replace("T", " ") : "—");
  const timeEl = (iso) => el("time", { datetime: iso, text: shownTime(iso) });
  const requestLink = (id) => el("a", { href: "#/requests/" + encodeURIComponent(id), text: id });

  // A datetime-local field holds UTC here (the page says so): its value as ISO 8601 UTC.
  const fieldToIso = (value) => (value ? (value.length === 16 ? value + ":00" : value) + "Z" : "");
  const isoToField = (iso) => (iso ? iso.replace(/Z$/, "").replace(/\.\d+$/, "") : "");

  // ---- sign-in ------------------------------------------------------------------------------

  async function signIn(key, remembered) {
    state.key = key;
    // Any key of API_KEYS may list requests; a key of ADMIN_API_KEYS may list the quarantine.
    const [tenant, admin] = await Promise.all([
      api("/v1/requests?limit=1", { probe: true }),
      api("/v1/quarantine?limit=1", { probe: true }),
    ]);
    if (!tenant.ok && !admin.ok) {
      state.key = null;
      sessionStorage.removeItem(KEY_STORE);
      const said = tenant.status === 401 ? "That API key was refused." : tenant.body.error;
      $("signin-note").textContent = remembered ? "" : said;
      return;
    }
    sessionStorage.setItem(KEY_STORE, key);
    state.admin = admin.ok;
    state.tenant = tenant.ok;
    state.allTenants = !state.tenant;
    $("all-tenants").checked = state.allTenants;
    $("all-tenants").disabled = !state.tenant;
    $("key").value = "";
    $("signin-note").textContent = "";
    $("signin").hidden = true;
    $("console").hidden = false;
    $("nav").hidden = false;
    $("scope-switch").hidden = !state.admin;
    if (!location.hash || location.hash === "#") history.replaceState(null, "", "#/requests");
    await route(true);
    schedule();
  }

  function signOut(said) {
    state.key = null;
    state.admin = false;
    state.tenant = false;
    state.allTenants = false;
    state.shown = "";
    state.bulk = null;
    clearTimeout(state.timer);
    sessionStorage.removeItem(KEY_STORE);
    $("console").hidden = true;
    $("nav").hidden = true;
    $("signin").hidden = false;
    for (const holder of [$("cards"), $("problems")]) delete holder.dataset.drawn;
    // Nothing the key read stays in the page, shown or not.
    for (const id of ["cards", "problems", "fields", "timeline", "charts"]) $(id).replaceChildren();
    $("rows").tBodies[0].replaceChildren();
    for (const id of ["note", "bulk-note", "bulk-said", "action-note", "timeline-note", "charts-note"]) $(id).textContent = "";
    $("bulk-confirm").hidden = $("bulk-progress-line").hidden = true;
    $("signin-note").textContent = said || "";
    $("key").focus();
  }

  // ---- the views ----------------------------------------------------------------------------

  function parseHash() {
    const [path, query] = location.hash.replace(/^#/, "").split("?");
    const params = new URLSearchParams(query || "");
    const request = path.match(/^\/requests\/([^/]+)$/);
    if (request) return { view: "request", id: decodeURIComponent(request[1]), params };
    if (path === "/charts") return { view: "charts", params };
    return { view: "list", params };
  }

  async function route(moveFocus) {
    if (!state.key) return;
    const where = parseHash();
    state.shown = "";
    for (const view of ["list", "request", "charts"]) $("view-" + view).hidden = view !== where.view;
    for (const link of document.querySelectorAll("#nav a")) {
      if (link.dataset.view === (where.view === "request" ? "list" : where.view)) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    if (where.view === "list") fillFilters(where.params);
    if (where.view === "request") {
      $("action-note").textContent = "";
      $("request-heading").textContent = "Request " + where.id;
    }
    await Promise.all([refreshView(where), cards(), problems()]);
    if (moveFocus) {
      const heading = { list: "list-heading", request: "request-heading", charts: "charts-heading" }[where.view];
      const active = document.activeElement;
      if (!active || !$("view-" + where.view).contains(active)) $(heading).focus();
    }
  }

  function refreshView(where = parseHash()) {
    if (where.view === "request") return showRequest(where.id);
    if (where.view === "charts") return showCharts();
    return showList(where.params);
  }

  // The refresh: every REFRESH_MS the cards, the banners and the view (charts less often).
  function schedule() {
    clearTimeout(state.timer);
    state.timer = setTimeout(async () => {
      if (!state.key) return;
      state.ticks += 1;
      try {
        const where = parseHash();
        const work = [cards(), problems()];
        if (where.view !== "charts" || state.ticks % 5 === 0) work.push(refreshView(where));
        await Promise.all(work);
      } finally {
        if (state.key) schedule();
      }
    }, REFRESH_MS);
  }

  // ---- cards and banners --------------------------------------------------------------------

  const CARD_LABELS = {
    queued: "queued",
    sending: "sending",
    pending: "awaiting callback",
    outbox: "waiting to send",
    awaiting_callback: "awaiting callback",
    finished_completed: "completed",
    finished_failed: "failed",
    finished_expired: "expired",
    callbacks_duplicate: "duplicate callbacks",
    duplicate: "duplicate callbacks",
    rejected_signature: "forged callbacks refused",
    forged: "forged callbacks refused",
  };

  async function cards() {
    const asked = scope();
    const answer = await api("/v1/summary?" + asked.slice(1));
    if (asked !== scope() || !state.key) return; // switched meanwhile
    const holder = $("cards");
    if (!answer.ok) {
      holder.replaceChildren();
      return;
    }
    const counts = answer.body.counts || {};
    const names = Object.keys(counts);
    if (holder.dataset.drawn !== names.join(",")) {
      holder.dataset.drawn = names.join(",");
      holder.replaceChildren(
        ...names.map((name) =>
          el("div", { class: "card" }, el("b", { id: "count-" + name, text: "0" }), CARD_LABELS[name] || name.replaceAll("_", " "))
        )
      );
    }
    for (const name of names) $("count-" + name).textContent = String(counts[name]);
    holder.setAttribute("aria-label", answer.body.scope === "all" ? "All tenants, now" : "Your requests, now");
  }

  let rechecked = ""; // what the last re-check said, kept across the banners' refresh

  async function problems() {
    if (!state.tenant) return; // /v1/status takes a key of API_KEYS
    const answer = await api("/v1/status");
    if (!answer.ok) return;
    const banners = answer.body.problems
      .filter((problem) => state.admin || problem.code !== "quarantined") // the quarantine is an admin's
      .map((problem) => {
        const banner = el("p", { class: "problem", "data-code": problem.code, text: problem.message });
        if (problem.code === "quarantined") banner.append(" ", recheckButton());
        return banner;
      });
    const holder = $("problems");
    const drawn = JSON.stringify(answer.body.problems) + rechecked + state.admin;
    if (holder.dataset.drawn === drawn) return; // keep the Re-check button (and its focus) in place
    holder.dataset.drawn = drawn;
    holder.replaceChildren(...banners);
  }

  function recheckButton() {
    const button = el("button", { type: "button", "aria-label": "Re-check quarantined callbacks", text: "Re-check" });
    const said = el("span", { class: "recheck-result", role: "status", text: rechecked });
    button.addEventListener("click", async () => {
      const answer = await api("/v1/quarantine/recheck", { method: "POST" });
      const body = answer.body;
      rechecked = answer.ok ? ` checked ${body.checked}, applied ${body.applied}, ${body.quarantined} left` : " " + body.error;
      said.textContent = rechecked;
    });
    return el("span", {}, button, said);
  }

  // ---- the search and its results -----------------------------------------------------------

  function fillFilters(params) {
    for (const name of FILTERS) {
      const value = params.get(name) || "";
      $(name).value = name === "since" || name === "until" ? isoToField(value) : value;
    }
  }

  function filtersFromForm() {
    const params = new URLSearchParams();
    for (const name of FILTERS) {
      let value = $(name).value.trim();
      if (name === "since" || name === "until") value = fieldToIso(value);
      if (value) params.set(name, value);
    }
    return params;
  }

  async function showList(params) {
    if (!state.tenant) {
      $("note").textContent = "This admin key is no tenant's: it has no requests of its own. The cards and charts are every tenant's.";
      return;
    }
    const query = new URLSearchParams();
    query.set("limit", PAGE_SIZE);
    for (const name of [...FILTERS, "offset"]) if (params.get(name)) query.set(name, params.get(name));
    const asked = location.hash;
    const answer = await api("/v1/requests?" + query);
    if (location.hash !== asked || !state.key) return; // the search changed meanwhile: a later answer draws
    const note = $("note");
    if (!answer.ok) {
      note.textContent = answer.body.error;
      $("rows").hidden = true;
      $("more").hidden = $("previous").hidden = true;
      state.shown = "";
      return;
    }
    const drawn = JSON.stringify(answer.body);
    if (drawn === state.shown) return;
    state.shown = drawn;
    const focused = document.activeElement && document.activeElement.closest("#rows") ? document.activeElement.textContent : null;
    const tbody = $("rows").tBodies[0];
    tbody.replaceChildren(
      ...answer.body.objects.map((r) =>
        el(
          "tr",
          { "data-request-id": r.request_id },
          el("td", {}, requestLink(r.request_id)),
          el("td", { class: "status status-" + r.status, text: r.status }),
          el("td", {}, timeEl(r.submitted_at)),
          el("td", { text: r.method }),
          el("td", { text: r.path }),
          el("td", { text: r.api_id || "—" })
        )
      )
    );
    if (focused) for (const link of tbody.querySelectorAll("a")) if (link.textContent === focused) link.focus();
    const meta = answer.body.meta;
    const searched = FILTERS.some((name) => params.get(name));
    note.textContent = meta.total_count === 0 && searched ? "Nothing found" : `${meta.total_count} in all`;
    $("rows").hidden = meta.total_count === 0;
    $("more").hidden = !meta.next;
    $("previous").hidden = !meta.previous;
  }

  function page(step) {
    const { params } = parseHash();
    const offset = Math.max(0, Number(params.get("offset") || 0) + step * PAGE_SIZE);
    if (offset) params.set("offset", offset);
    else params.delete("offset");
    location.hash = "#/requests?" + params;
  }

  // ---- bulk retry: preview, confirm, progress -----------------------------------------------

  function bulkFilter() {
    const filter = {};
    const status = $("status").value;
    if (status) filter.status = status;
    for (const name of ["path", "since", "until"]) {
      let value = $(name).value.trim();
      if (name !== "path") value = fieldToIso(value);
      if (value) filter[name] = value;
    }
    return filter;
  }

  async function bulkPreview() {
    const filter = bulkFilter();
    $("bulk-confirm").hidden = true;
    if (filter.status && filter.status !== "failed" && filter.status !== "expired") {
      $("bulk-note").textContent = "Only failed or expired requests can be retried: choose one of those statuses, or any.";
      return;
    }
    const answer = await api("/v1/requests/retry", { method: "POST", json: { ...filter, preview: true } });
    if (!answer.ok) {
      $("bulk-note").textContent = answer.body.error;
      return;
    }
    const count = answer.body.count;
    $("bulk-note").textContent = count
      ? `${count} failed or expired requests match. Retry them?`
      : "No failed or expired request matches this filter.";
    if (count) {
      $("bulk-go").textContent = `Retry ${count} requests`;
      $("bulk-confirm").hidden = false;
      $("bulk-go").dataset.filter = JSON.stringify(filter);
      $("bulk-go").focus();
    }
  }

  async function bulkGo() {
    const filter = JSON.parse($("bulk-go").dataset.filter || "{}");
    $("bulk-confirm").hidden = true;
    const answer = await api("/v1/requests/retry", { method: "POST", json: { ...filter, preview: false } });
    if (!answer.ok) {
      $("bulk-note").textContent = answer.body.error;
      return;
    }
    $("bulk-note").textContent = `Retrying ${answer.body.count} requests.`;
    state.bulk = answer.body.bulk_id;
    $("bulk-progress-line").hidden = false;
    $("bulk-progress").max = Math.max(1, answer.body.count);
    $("bulk-progress").value = 0;
    watchBulk(answer.body.bulk_id);
  }

  async function watchBulk(bulkId) {
    while (state.bulk === bulkId && state.key) {
      const answer = await api("/v1/requests/retry/" + encodeURIComponent(bulkId));
      if (!answer.ok) {
        $("bulk-said").textContent = answer.body.error;
        return;
      }
      const progress = answer.body;
      $("bulk-progress").max = Math.max(1, progress.count);
      $("bulk-progress").value = progress.retried + progress.skipped;
      $("bulk-said").textContent = `${progress.retried} retried, ${progress.skipped} skipped of ${progress.count}` + (progress.status === "done" ? ": done" : "");
      if (progress.status === "done") {
        state.bulk = null;
        state.shown = "";
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }

  // ---- one request and its timeline ---------------------------------------------------------

  const RECORD_FIELDS = [
    "status", "method", "path", "api_id", "callback_method", "submitted_at", "sent_at", "completed_at",
    "deadline", "attempts", "deliveries", "late", "retry_of", "retried_as", "error", "response", "notify",
  ];

  function fieldValue(name, value) {
    if (value === null || value === undefined) return "—";
    if ((name === "retry_of" || name === "retried_as") && typeof value === "string") return requestLink(value);
    if (name.endsWith("_at") || name === "deadline") return timeEl(value);
    if (name === "status") return el("span", { class: "status status-" + value, text: value });
    if (typeof value === "object") return el("pre", { text: JSON.stringify(value, null, 2) });
    return String(value);
  }

  // What an event says beyond its name and time, as "name value" pairs.
  function eventDetails(event) {
    const parts = [];
    for (const [name, value] of Object.entries(event)) {
      if (name === "at" || name === "event" || value === null || value === undefined) continue;
      if (name === "retried_as" || name === "retry_of") parts.push(name.replace("_", " ") + " ", requestLink(value), " ");
      else if (name === "next_at") parts.push("next try ", timeEl(value), " ");
      else if (name === "latency_ms") parts.push(`in ${value} ms `);
      else if (name === "upstream_status" || name === "status_code") parts.push(`HTTP ${value} `);
      else if (name === "size") parts.push(`${value} bytes `);
      else parts.push(`${name.replaceAll("_", " ")} ${typeof value === "object" ? JSON.stringify(value) : value} `);
    }
    return parts;
  }

  const BAD = new Set(["failed", "expired"]);
  function eventIsBad(event) {
    return BAD.has(event.event) || event.outcome === "failed" || event.outcome === "retry" || event.verdict === "refused" || event.error;
  }

  async function showRequest(id) {
    const path = "/v1/requests/" + encodeURIComponent(id);
    const [record, events] = await Promise.all([api(path), api(path + "/events")]);
    if (parseHash().id !== id || !state.key) return;
    if (!record.ok) {
      state.shown = "";
      $("fields").replaceChildren(el("dt", { text: "error" }), el("dd", { text: record.body.error }));
      $("timeline").replaceChildren();
      $("retry").hidden = $("resend").hidden = true;
      return;
    }
    const drawn = JSON.stringify([record.body, events.body]);
    if (drawn === state.shown) return;
    state.shown = drawn;
    const r = record.body;
    $("fields").replaceChildren(
      ...RECORD_FIELDS.filter((name) => name in r).flatMap((name) => [el("dt", { text: name.replaceAll("_", " ") }), el("dd", {}, fieldValue(name, r[name]))])
    );
    $("retry").hidden = !(r.status === "failed" || r.status === "expired") || Boolean(r.retried_as);
    $("resend").hidden = !r.notify || !FINAL.has(r.status);
    const list = events.ok ? events.body.events : [];
    $("timeline").replaceChildren(
      ...list.map((event) =>
        el("li", { class: eventIsBad(event) ? "bad" : null, "data-event": event.event }, timeEl(event.at), el("span", { class: "event", text: event.event }), ...eventDetails(event))
      )
    );
    $("timeline-note").textContent = !events.ok
      ? "The timeline could not be read: " + events.body.error
      : events.body.dropped
        ? `${events.body.dropped} earlier events beyond the last ones kept are not shown.`
        : "";
  }

  async function retry() {
    const { id } = parseHash();
    const answer = await api("/v1/requests/" + encodeURIComponent(id) + "/retry", { method: "POST" });
    const note = $("action-note");
    if (answer.ok) {
      note.replaceChildren("Retried as ", requestLink(answer.body.request_id));
      $("retry").hidden = true;
      note.querySelector("a").focus();
    } else if (answer.body.retried_as) {
      note.replaceChildren(answer.body.error + ": ", requestLink(answer.body.retried_as));
    } else {
      note.textContent = answer.body.error;
    }
    state.shown = "";
    await showRequest(id);
  }

  async function resend() {
    const { id } = parseHash();
    const answer = await api("/v1/requests/" + encodeURIComponent(id) + "/notify", { method: "POST" });
    $("action-note").textContent = answer.ok ? "The notification is sent again." : answer.body.error;
    state.shown = "";
    await showRequest(id);
  }

  // ---- charts -------------------------------------------------------------------------------

  const COLOURS = ["#2563eb", "#16a34a", "#dc2626", "#d97706"];
  const CHARTS = [
    { id: "requests", title: "Requests", plots: "requests submitted, completed, failed and expired", figures: ["submitted", "completed", "failed", "expired"], unit: "" },
    { id: "time-to-result", title: "Time to result", plots: "time to result, p50 and p99 in milliseconds", figures: ["time_to_result_p50_ms", "time_to_result_p99_ms"], unit: " ms" },
    { id: "webhook-latency", title: "Webhook latency", plots: "webhook latency, p50 and p99 in milliseconds", figures: ["webhook_latency_p50_ms", "webhook_latency_p99_ms"], unit: " ms" },
    { id: "refusals", title: "Refused callbacks and failed notifications", plots: "callbacks refused and notifications failed", figures: ["callbacks_refused", "notifications_failed"], unit: "" },
  ];
  const WINDOW_NAMES = { hour: "the last hour", day: "the last day", week: "the last week" };

  function stepName(seconds) {
    if (seconds % 3600 === 0) return seconds === 3600 ? "hour" : `${seconds / 3600} hours`;
    if (seconds % 60 === 0) return seconds === 60 ? "minute" : `${seconds / 60} minutes`;
    return `${seconds} seconds`;
  }

  const figureName = (name) => name.replace(/_ms$/, "").replace(/^(time_to_result|webhook_latency)_/, "").replaceAll("_", " ");

  function niceMax(value) {
    if (value <= 0) return 1;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 2.5, 5, 10]) if (value <= step * power) return step * power;
    return 10 * power;
  }

  function axisTime(iso, window) {
    const text = iso.replace("T", " ").replace(/\.\d+Z$|Z$/, "");
    return window === "hour" ? text.slice(11, 16) : text.slice(5, 16);
  }

  function drawChart(spec, answer) {
    const series = answer.series;
    const count = Math.max(...spec.figures.map((name) => (series[name] || []).length), 0);
    const values = spec.figures.flatMap((name) => (series[name] || []).filter((v) => v !== null));
    const top = niceMax(Math.max(spec.unit ? 0 : 2, ...values)); // counts: whole numbers on the axis
    const W = 600, H = 190, left = 64, right = 10, upper = 10, lower = 26;
    const x = (i) => left + (count <= 1 ? 0 : (i * (W - left - right)) / (count - 1));
    const y = (v) => upper + (H - upper - lower) * (1 - v / top);
    const scopeName = answer.scope === "all" ? "all tenants" : "your requests";
    const name = `${spec.title}: ${spec.plots} per ${stepName(answer.step_s)} over ${WINDOW_NAMES[answer.window] || answer.window}, ${scopeName}`;
    const totals = spec.figures.map((figure) => {
      const kept = (series[figure] || []).filter((v) => v !== null);
      if (spec.unit) return `${figureName(figure)} highest ${kept.length ? Math.round(Math.max(...kept)) + spec.unit : "none"}`;
      return `${figureName(figure)} ${kept.reduce((a, b) => a + b, 0)} in all`;
    });
    const chart = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": name, id: "chart-" + spec.id });
    chart.append(svg("title", {}, name), svg("desc", {}, totals.join("; ")));
    for (const v of [0, top / 2, top]) {
      chart.append(svg("line", { class: "grid", x1: left, x2: W - right, y1: y(v), y2: y(v) }));
      chart.append(svg("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" }, `${+v.toFixed(2)}${spec.unit}`));
    }
    if (answer.start && answer.end) {
      chart.append(svg("text", { x: left, y: H - 8 }, axisTime(answer.start, answer.window)));
      chart.append(svg("text", { x: W - right, y: H - 8, "text-anchor": "end" }, axisTime(answer.end, answer.window)));
    }
    spec.figures.forEach((figure, n) => {
      // A step without observations (null) breaks the line rather than reading as zero.
      let run = [];
      const flush = () => {
        if (run.length === 1) chart.append(svg("circle", { cx: run[0][0], cy: run[0][1], r: 3.5, fill: COLOURS[n] }));
        if (run.length > 1) chart.append(svg("polyline", { points: run.map((p) => p.join(",")).join(" "), fill: "none", stroke: COLOURS[n], "stroke-width": 2, "stroke-linejoin": "round" }));
        run = [];
      };
      (series[figure] || []).forEach((v, i) => (v === null ? flush() : run.push([x(i).toFixed(1), y(v).toFixed(1)])));
      flush();
    });
    const legend = el(
      "ul",
      { class: "legend" },
      ...spec.figures.map((figure, n) => {
        const swatch = el("i");
        swatch.style.background = COLOURS[n]; // not a style attribute: the page's policy refuses those
        return el("li", {}, swatch, totals[n]);
      })
    );
    return el("figure", { "data-chart": spec.id }, el("figcaption", { text: spec.title }), chart, legend);
  }

  async function showCharts() {
    for (const button of document.querySelectorAll("[data-window]")) button.setAttribute("aria-pressed", String(button.dataset.window === state.window));
    const asked = state.window + scope();
    const answer = await api(`/v1/series?window=${state.window}${scope()}`);
    if (asked !== state.window + scope() || !state.key) return; // switched meanwhile
    if (!answer.ok) {
      $("charts-note").textContent = answer.body.error;
      $("charts").replaceChildren();
      return;
    }
    $("charts-note").textContent = "";
    $("charts").replaceChildren(...CHARTS.map((spec) => drawChart(spec, answer.body)));
  }

  // ---- wiring -------------------------------------------------------------------------------

  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("key").value.trim(), false);
  });
  $("sign-out").addEventListener("click", () => signOut(""));
  $("search").addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = "#/requests?" + filtersFromForm();
  });
  $("more").addEventListener("click", () => page(1));
  $("previous").addEventListener("click", () => page(-1));
  $("bulk-preview").addEventListener("click", bulkPreview);
  $("bulk-go").addEventListener("click", bulkGo);
  $("bulk-cancel").addEventListener("click", () => {
    $("bulk-confirm").hidden = true;
    $("bulk-note").textContent = "Nothing was retried.";
    $("bulk-preview").focus();
  });
  $("retry").addEventListener("click", retry);
  $("resend").addEventListener("click", resend);
  $("all-tenants").addEventListener("change", (event) => {
    state.allTenants = event.target.checked;
    route(false);
  });
  for (const button of document.querySelectorAll("[data-window]")) {
    button.addEventListener("click", () => {
      state.window = button.dataset.window;
      showCharts();
    });
  }
  window.addEventListener("hashchange", () => route(true));

  const remembered = sessionStorage.getItem(KEY_STORE);
  if (remembered) signIn(remembered, true);
  else $("key").focus();
})();
