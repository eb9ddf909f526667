// The responder console: polls the admin API every 2 s and drives it with the admin key kept in
// session storage. Everything it shows is set as text (textContent), never parsed as HTML: reasons,
// actors and names are user text. No cookies, no inline code, no eval; the page's CSP forbids them.
"use strict";

(function () {
  const POLL_MS = 2000;
  const STALE_MS = 6000;
  const AUDIT_LIMIT = 25;
  const KEY_SLOT = "gateway.adminKey";
  const MAX_TTL_S = 7 * 86400;
  const UNITS = { "": 1, s: 1, m: 60, h: 3600, d: 86400 };

  const $ = (id) => document.getElementById(id);
  const state = { timer: null, generation: 0, lastOk: 0, scopes: "", signedIn: false };

  // -- small helpers

  function el(tag, opts, ...children) {
    const node = document.createElement(tag);
    if (opts) {
      if (opts.cls) node.className = opts.cls;
      if (opts.data) for (const [k, v] of Object.entries(opts.data)) node.dataset[k] = v;
      if (opts.attrs) for (const [k, v] of Object.entries(opts.attrs)) node.setAttribute(k, v);
      if (opts.title) node.title = opts.title;
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function rowHeader(text) {
    return el("th", { attrs: { scope: "row" } }, text);
  }

  function badge(value) {
    return el("span", { cls: "badge is-" + String(value).replace(/[^a-z_]/g, "") }, value);
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + String(s % 60).padStart(2, "0") + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
    return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
  }

  function clock(unixSeconds) {
    const d = new Date(unixSeconds * 1000);
    const pad = (n) => String(n).padStart(2, "0");
    const text = d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
    return el("time", { attrs: { datetime: d.toISOString() } }, text);
  }

  function num(x, digits) {
    return x === null || x === undefined ? "—" : Number(x).toPrecision(digits || 3).replace(/\.?0+$/, "");
  }

  function pct(x) {
    return x === null || x === undefined ? "—" : (Number(x) * 100).toFixed(1) + "%";
  }

  function parseTtl(text) {
    const m = /^(\d+(?:\.\d+)?)([smhd]?)$/.exec(text.trim());
    if (!m) return null;
    const seconds = parseFloat(m[1]) * UNITS[m[2]];
    return seconds > 0 && seconds <= MAX_TTL_S ? seconds : null;
  }

  // Replace a table body's rows, keeping keyboard focus on the same control across refreshes.
  function fill(tbody, rows, emptyText, columns) {
    const active = document.activeElement;
    const focusKey = active && tbody.contains(active) ? active.dataset.focus : null;
    if (!rows.length) {
      const cell = el("td", { cls: "empty", attrs: { colspan: String(columns) } }, emptyText);
      rows = [el("tr", null, cell)];
    }
    tbody.replaceChildren(...rows);
    if (tbody.parentElement.classList.contains("stack")) label(tbody);
    if (focusKey) {
      const again = tbody.querySelector('[data-focus="' + CSS.escape(focusKey) + '"]');
      if (again) again.focus();
    }
  }

  // On a phone, .stack tables show each row as a block of "header: value" lines (see console.css);
  // the labels come from the column headers, and explicit roles keep the table semantics.
  function label(tbody) {
    const heads = [...tbody.parentElement.tHead.rows[0].cells].map((th) => th.textContent.trim());
    for (const row of tbody.rows) {
      row.setAttribute("role", "row");
      [...row.cells].forEach((c, i) => {
        c.setAttribute("role", c.tagName === "TH" ? "rowheader" : "cell");
        if (!c.colSpan || c.colSpan === 1) c.dataset.label = heads[i] || "";
      });
    }
  }

  function stackRoles(table) {
    table.setAttribute("role", "table");
    for (const group of [table.tHead, ...table.tBodies]) group.setAttribute("role", "rowgroup");
    for (const row of table.tHead.rows) {
      row.setAttribute("role", "row");
      for (const th of row.cells) th.setAttribute("role", "columnheader");
    }
  }
  document.querySelectorAll("table.stack").forEach(stackRoles);

  // -- the admin API

  function adminKey() {
    return sessionStorage.getItem(KEY_SLOT);
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    const key = adminKey();
    if (key) headers.Authorization = "Bearer " + key;
    const init = { method, headers, credentials: "omit", cache: "no-store", redirect: "error" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(path, init);
    let data = null;
    try {
      data = await resp.json();
    } catch (e) {
      data = null;
    }
    return { status: resp.status, ok: resp.ok, statusText: resp.statusText, data };
  }

  function errorMessage(r) {
    const err = r.data && r.data.error;
    return (err && err.message) || r.statusText || "HTTP " + r.status;
  }

  // -- signing in and out

  function clearData() {
    $("data").hidden = true;
    for (const tbody of document.querySelectorAll("#data tbody, #data tfoot")) tbody.replaceChildren();
    $("models").replaceChildren();
    for (const id of ["summary", "health-note", "dead-letters"]) $(id).textContent = "";
    state.scopes = "";
  }

  function showLogin(message) {
    stopPolling();
    state.signedIn = false;
    clearData();
    $("login").hidden = false;
    $("signout").hidden = true;
    $("login-error").textContent = message || "";
    $("freshness").textContent = message ? "Not signed in: " + message : "Not signed in";
    $("freshness").className = "freshness is-error";
    $("admin-key").focus();
  }

  function showData() {
    const first = !state.signedIn;
    state.signedIn = true;
    $("login").hidden = true;
    $("login-error").textContent = "";
    $("data").hidden = false;
    $("signout").hidden = !adminKey();
    if (first && document.activeElement && document.activeElement.id === "admin-key") $("modes-title").focus();
  }

  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = $("admin-key").value.trim();
    if (!key) {
      $("login-error").textContent = "Enter the admin key.";
      return;
    }
    sessionStorage.setItem(KEY_SLOT, key);
    $("admin-key").value = "";
    refreshNow();
  });

  $("signout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_SLOT);
    showLogin("");
  });

  // -- polling

  function stopPolling() {
    state.generation += 1;
    if (state.timer !== null) clearTimeout(state.timer);
    state.timer = null;
  }

  function refreshNow() {
    stopPolling();
    refresh(state.generation);
  }

  async function refresh(generation) {
    let status, audit;
    try {
      [status, audit] = await Promise.all([api("GET", "/admin/status"), api("GET", "/admin/audit?limit=" + AUDIT_LIMIT)]);
    } catch (e) {
      if (generation === state.generation) {
        markStale("cannot reach the gateway");
        state.timer = setTimeout(() => refresh(generation), POLL_MS);
      }
      return;
    }
    if (generation !== state.generation) return; // signed out or restarted meanwhile
    if (status.status === 401 || audit.status === 401) {
      const r = status.status === 401 ? status : audit;
      const hadKey = Boolean(adminKey());
      sessionStorage.removeItem(KEY_SLOT);
      showLogin(hadKey ? errorMessage(r) : "");
      return;
    }
    if (status.ok) {
      showData();
      renderStatus(status.data);
      state.lastOk = Date.now();
      $("freshness").textContent = "Live; updated " + new Date().toLocaleTimeString();
      $("freshness").className = "freshness";
    } else {
      markStale(errorMessage(status));
    }
    if (audit.ok) renderAudit(audit.data.data || []);
    state.timer = setTimeout(() => refresh(generation), POLL_MS);
  }

  function markStale(why) {
    const age = state.lastOk ? " (last update " + duration((Date.now() - state.lastOk) / 1000) + " ago)" : "";
    $("freshness").textContent = "Stale: " + why + age;
    $("freshness").className = Date.now() - state.lastOk > STALE_MS ? "freshness is-error" : "freshness";
  }

  // -- rendering

  function renderStatus(s) {
    const c = s.controller || {};
    $("summary").textContent = "v" + s.version + " · up " + duration(s.uptime_s) + " · Redis " + s.redis +
      " · " + (c.leader ? "leader" : "follower") + " · automatic control " + (c.automatic ? "on" : "off") +
      (s.draining ? " · draining" : "");
    renderScopes(s.modes || {});
    renderModes(s.modes || {});
    renderModels(s.models || {});
    renderHealth(s.health || {}, s.thresholds || {});
    renderCircuits(s.circuits || {});
    renderAdmission(s.admission || {}, Object.keys(s.queue || {}));
    renderQueue(s.queue || {}, s.dead_letters);
    renderBatches(s.provider_batches || []);
  }

  function scopeLabel(scope) {
    return scope === "global" ? "global" : "provider " + scope;
  }

  function renderScopes(modes) {
    const names = Object.keys(modes);
    const sig = names.join("\n");
    if (sig === state.scopes) return; // keep the user's selection between refreshes
    state.scopes = sig;
    for (const select of document.querySelectorAll(".scope-select")) {
      const chosen = select.value;
      select.replaceChildren(...names.map((n) => el("option", { attrs: { value: n } }, scopeLabel(n))));
      if (names.includes(chosen)) select.value = chosen;
    }
  }

  function renderModes(modes) {
    const rows = Object.entries(modes).map(([scope, item]) => {
      const o = item.override;
      const auto = item.auto || {};
      const source = el("td", null, item.source);
      if (o && auto.mode && auto.mode !== item.mode) source.append(el("span", { cls: "hint" }, " (auto: " + auto.mode + ")"));
      const ttl = o ? (o.ttl_remaining_s === null ? "no expiry" : duration(o.ttl_remaining_s)) : "—";
      const actions = el("td", { cls: "actions" });
      if (o) {
        const button = el("button", {
          cls: "quiet small", data: { focus: "clear-" + scope },
          attrs: { type: "button", "aria-label": "Clear the override on " + scopeLabel(scope) },
        }, "Clear");
        button.addEventListener("click", () => clearOverride(scope, ""));
        actions.append(button);
      }
      return el("tr", { data: { scope } },
        rowHeader(scope),
        el("td", { cls: "mode" }, badge(item.mode)),
        source,
        el("td", { cls: "reason" }, (o ? o.reason : auto.reason) || "—"),
        el("td", { cls: "actor" }, o ? o.actor || "—" : "—"),
        el("td", { cls: "ttl" }, ttl),
        actions);
    });
    fill($("modes").tBodies[0], rows, "No scopes.", 7);
  }

  function renderModels(models) {
    const items = Object.entries(models).map(([model, mode]) =>
      el("li", { data: { model } }, el("span", { cls: "chip-name" }, model), " ", badge(mode)));
    $("models").replaceChildren(...items);
  }

  // Where a figure stands against the thresholds: over enter (bad), still over exit (holding), or fine.
  function standing(value, enter, exit, shed, enough) {
    if (!enough || value === null || value === undefined) return { cls: "", text: "" };
    if (shed !== undefined && shed !== null && value > shed) return { cls: "is-bad", text: "over shed" };
    if (value > enter) return { cls: "is-bad", text: "over enter" };
    if (value > exit) return { cls: "is-warn", text: "over exit" };
    return { cls: "is-ok", text: "ok" };
  }

  function figureCell(value, show, enter, exit, shed, enough) {
    const where = standing(value, enter, exit, shed, enough);
    const td = el("td", { cls: "figure " + where.cls }, show(value));
    if (where.text) td.append(" ", el("span", { cls: "tag" }, where.text));
    return td;
  }

  function renderHealth(health, t) {
    const enter = t.enter || {};
    const exit = t.exit || {};
    const shed = t.shed || {};
    const min = t.min_samples || 0;
    $("health-note").textContent = "Window " + duration(t.window_s) + ", at least " + min +
      " samples; leaving degraded needs every figure under exit for " + duration(exit.hold_s) + ".";
    const rows = Object.entries(health).map(([provider, h]) => {
      const shared = h.window && h.window.samples ? h.window : null;
      const f = shared || h.local || {};
      const enough = (f.samples || 0) >= min;
      return el("tr", { data: { provider } },
        rowHeader(provider),
        el("td", null, String(f.samples || 0), el("span", { cls: "hint" }, shared ? " shared" : " this replica"),
          enough ? null : el("span", { cls: "tag" }, " too few")),
        figureCell(f.p95_latency_s, (v) => (v === null || v === undefined ? "—" : num(v) + " s"),
          enter.p95_latency_s, exit.p95_latency_s, shed.p95_latency_s, enough),
        figureCell(f.rate_limited_ratio, pct, enter.rate_limited_ratio, exit.rate_limited_ratio,
          shed.rate_limited_ratio, enough),
        figureCell(f.error_ratio, pct, enter.error_ratio, exit.error_ratio, shed.error_ratio, enough));
    });
    fill($("health").tBodies[0], rows, "No providers.", 5);
    const foot = [
      el("tr", { cls: "threshold" }, rowHeader("enter above"), el("td", null, "≥ " + min),
        el("td", null, num(enter.p95_latency_s) + " s"), el("td", null, pct(enter.rate_limited_ratio)),
        el("td", null, pct(enter.error_ratio))),
      el("tr", { cls: "threshold" }, rowHeader("exit below"), el("td", null, "hold " + duration(exit.hold_s)),
        el("td", null, num(exit.p95_latency_s) + " s"), el("td", null, pct(exit.rate_limited_ratio)),
        el("td", null, pct(exit.error_ratio))),
    ];
    if (t.shed) {
      foot.push(el("tr", { cls: "threshold" }, rowHeader("shed above"), el("td", null, ""),
        el("td", null, num(shed.p95_latency_s) + " s"), el("td", null, pct(shed.rate_limited_ratio)),
        el("td", null, pct(shed.error_ratio))));
    }
    $("health").tFoot.replaceChildren(...foot);
  }

  function renderCircuits(circuits) {
    const rows = Object.entries(circuits).sort().map(([target, st]) =>
      el("tr", { data: { target } }, rowHeader(target), el("td", null, badge(st))));
    fill($("circuits").tBodies[0], rows, "No target called yet.", 2);
  }

  function renderAdmission(admission, tierOrder) {
    const rank = (t) => (tierOrder.includes(t) ? tierOrder.indexOf(t) : tierOrder.length);
    const rows = [];
    for (const [provider, a] of Object.entries(admission)) {
      const tiers = [...new Set([...Object.keys(a.reserved || {}), ...Object.keys(a.inflight || {})])];
      tiers.sort((x, y) => rank(x) - rank(y) || (x < y ? -1 : 1));
      for (const tier of tiers) {
        const n = (a.inflight || {})[tier] || 0;
        const reserved = (a.reserved || {})[tier] || 0;
        const meter = el("meter", {
          attrs: { min: "0", max: String(Math.max(a.capacity, 1)), value: String(n), low: String(reserved),
            high: String(Math.max(a.capacity - 1, reserved)), optimum: "0",
            "aria-label": n + " of " + a.capacity + " in flight" },
        });
        const over = n > reserved ? el("span", { cls: "tag" }, " over reserve") : null;
        rows.push(el("tr", { data: { provider, tier } },
          rowHeader(provider), el("td", null, tier), el("td", { cls: "inflight" }, String(n), " ", meter, over),
          el("td", null, String(reserved)), el("td", null, String(a.capacity))));
      }
    }
    fill($("admission").tBodies[0], rows, "No providers.", 5);
  }

  function renderQueue(queue, dead) {
    if (queue.error) {
      fill($("queue").tBodies[0], [], "Queue unavailable: " + queue.error, 3);
    } else {
      const rows = Object.entries(queue).map(([tier, q]) =>
        el("tr", { data: { tier } }, rowHeader(tier), el("td", { cls: "depth" }, String(q.depth)),
          el("td", null, q.depth ? duration(q.oldest_age_s) : "—")));
      fill($("queue").tBodies[0], rows, "No tiers.", 3);
    }
    $("dead-letters").textContent = dead ? "Dead letters: " + dead : "";
  }

  function renderBatches(batches) {
    const rows = batches.map((b) =>
      el("tr", null, rowHeader(b.provider), el("td", null, b.model), el("td", null, String(b.items)),
        el("td", null, duration(b.age_s)), el("td", null, String(b.polls)),
        el("td", { cls: "mono" }, b.upstream_id || "—")));
    fill($("batches").tBodies[0], rows, "None in flight.", 6);
  }

  function renderAudit(entries) {
    const rows = entries.map((e) => {
      let what;
      if (e.action) {
        const d = e.details || {};
        what = e.action === "job.cancel" ? "cancelled job " + (d.job_id || "?") + (d.tier ? " (" + d.tier + ")" : "")
          : e.action + " " + Object.entries(d).map(([k, v]) => k + "=" + v).join(" ");
      } else {
        what = el("span", null, badge(e.from), " → ", badge(e.to));
      }
      return el("tr", null, el("td", { cls: "nowrap" }, clock(e.time)), el("td", null, what),
        el("td", null, e.scope || "—"), el("td", null, e.source || "operator"), el("td", null, e.actor || "—"),
        el("td", { cls: "reason" }, e.reason || "—"));
    });
    fill($("audit").tBodies[0], rows, "Nothing recorded yet.", 6);
  }

  // -- actions: each asks first, then shows the API's answer

  function confirmAction(text) {
    const dialog = $("confirm");
    $("confirm-text").textContent = text;
    dialog.returnValue = "";
    const back = document.activeElement;
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => {
        if (back && back.isConnected) back.focus();
        resolve(dialog.returnValue === "yes");
      }, { once: true });
      dialog.showModal();
      $("confirm-no").focus();
    });
  }
  $("confirm-yes").addEventListener("click", () => $("confirm").close("yes"));
  $("confirm-no").addEventListener("click", () => $("confirm").close("no"));

  function showResult(what, r) {
    const box = $("result");
    box.hidden = false;
    box.className = "result " + (r === null ? "is-info" : r.ok ? "is-ok" : "is-error");
    if (r === null) {
      $("result-line").textContent = what;
      $("result-body").textContent = "(nothing was sent)";
      return;
    }
    $("result-line").textContent = what + " → " + r.status + (r.ok ? " OK" : ": " + errorMessage(r));
    $("result-body").textContent = r.data === null ? "(no body)" : JSON.stringify(r.data, null, 2);
  }

  async function send(label, method, path, body) {
    let r;
    try {
      r = await api(method, path, body);
    } catch (e) {
      r = { ok: false, status: 0, statusText: "cannot reach the gateway", data: null };
    }
    showResult(label, r);
    if (r.status === 401) {
      sessionStorage.removeItem(KEY_SLOT);
      showLogin(errorMessage(r));
    } else {
      refreshNow();
    }
    return r;
  }

  function fieldError(input, errorId, message) {
    input.setAttribute("aria-invalid", message ? "true" : "false");
    $(errorId).textContent = message;
    if (message) input.focus();
    return !message;
  }

  $("set-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const scope = $("set-scope").value;
    const mode = $("set-mode").value;
    const reason = $("set-reason").value.trim();
    const ttl = parseTtl($("set-ttl").value);
    if (!fieldError($("set-ttl"), "set-ttl-error", ttl === null ? "Give a duration such as 90s, 30m or 2h (at most 7d)." : "")) return;
    if (!fieldError($("set-reason"), "set-reason-error", reason ? "" : "A reason is required.")) return;
    const label = "Set " + scopeLabel(scope) + " to " + mode + " for " + duration(ttl);
    if (!(await confirmAction(label + "? Reason: " + reason))) {
      showResult(label + ": not confirmed", null);
      return;
    }
    const body = { mode, reason, ttl_s: ttl };
    if (scope !== "global") body.provider = scope;
    const r = await send(label, "PUT", "/admin/mode", body);
    if (r.ok) $("set-reason").value = "";
  });

  async function clearOverride(scope, reason) {
    const label = "Clear the override on " + scopeLabel(scope);
    if (!(await confirmAction(label + "?"))) {
      showResult(label + ": not confirmed", null);
      return null;
    }
    const body = { provider: scope };
    if (reason) body.reason = reason;
    return send(label, "DELETE", "/admin/mode", body);
  }

  $("clear-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const r = await clearOverride($("clear-scope").value, $("clear-reason").value.trim());
    if (r && r.ok) $("clear-reason").value = "";
  });

  $("cancel-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const id = $("cancel-id").value.trim();
    if (!fieldError($("cancel-id"), "cancel-id-error", id ? "" : "Enter the job's id.")) return;
    const label = "Cancel job " + id;
    if (!(await confirmAction(label + "? Only a queued job can be cancelled."))) {
      showResult(label + ": not confirmed", null);
      return;
    }
    const reason = $("cancel-reason").value.trim();
    const r = await send(label, "DELETE", "/admin/jobs/" + encodeURIComponent(id), reason ? { reason } : {});
    if (r.ok) {
      $("cancel-id").value = "";
      $("cancel-reason").value = "";
    }
  });

  refreshNow();
})();
