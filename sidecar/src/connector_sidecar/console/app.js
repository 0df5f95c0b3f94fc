// The pairing console: a static page that talks to the sidecar's API with the operator's token.
//
// Rules: the token lives in sessionStorage only (gone when the tab closes; never a cookie, so
// no other site can make the browser use it). Every text that comes from the API is put in the
// page with textContent, never as HTML: last errors quote vendors and hosts. API paths are
// relative to the page ("connectors" from /console is /connectors), so the console also works
// behind a reverse proxy that adds a path prefix. No library, no build step, no network but
// the sidecar.
"use strict";

const TOKEN_KEY = "connector-sidecar.token";
const SESSION_POLL_MS = 1500;
const REFRESH_MS = 4000;
const TERMINAL = new Set(["connected", "expired", "cancelled", "error"]);

const state = {
  session: null, // the pairing session shown, as the API last returned it
  sessionTimer: null,
  deliveryStatus: "dead",
};

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "className") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  }
  return node;
}

function notice(text, isError = false) {
  const box = $("notice");
  box.textContent = text;
  box.classList.toggle("error", isError);
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.code = problem.code || "error";
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${token()}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
  });
  const text = await response.text();
  let value = null;
  try {
    value = text ? JSON.parse(text) : null;
  } catch {
    value = { detail: text.slice(0, 200) };
  }
  if (!response.ok) {
    if (response.status === 401) notice("The API token was refused: type the sidecar's EXTERNAL_CONNECTOR_TOKEN.", true);
    throw new ApiError(response.status, value || {});
  }
  return value;
}

function statusCell(status) {
  return el("span", { className: `status status-${status}` }, status);
}

// -- connectors -----------------------------------------------------------------------------

async function loadConnectors() {
  const connectors = await api("GET", "connectors");
  const list = $("connectors");
  const kinds = $("pair-kind");
  list.replaceChildren();
  kinds.replaceChildren();
  for (const c of connectors) {
    list.append(
      el("li", { className: c.enabled ? "" : "disabled" },
        el("strong", {}, c.displayName), ` (${c.kind}) · pairing: ${c.pairing}`,
        c.enabled ? "" : " · not enabled here"),
    );
    if (c.enabled) kinds.append(el("option", { value: c.kind }, `${c.displayName} (${c.kind})`));
  }
}

// -- pairing --------------------------------------------------------------------------------

async function startPairing(event) {
  event.preventDefault();
  const body = {
    kind: $("pair-kind").value,
    connectionId: $("pair-connection").value.trim(),
    channelId: $("pair-channel").value.trim(),
  };
  const displayName = $("pair-display").value.trim();
  if (displayName) body.displayName = displayName;
  const options = $("pair-options").value.trim();
  if (options) {
    try {
      body.options = JSON.parse(options);
    } catch {
      notice("Options must be a JSON object, such as {\"autoConfirm\": true}.", true);
      return;
    }
  }
  try {
    showSession(await api("POST", "connector-sessions", body));
    notice(`Pairing ${body.connectionId}: scan the QR code.`);
  } catch (error) {
    notice(`Could not start the pairing: ${error.message}`, true);
  }
}

function showSession(session) {
  const previous = state.session;
  state.session = session;
  $("session").hidden = false;
  $("session-id").textContent = session.sessionId;
  $("session-status").replaceChildren(statusCell(session.status));
  const who = session.displayName || session.accountId;
  $("session-account").textContent = session.status === "connected" && who ? `as ${who}` : "";
  $("session-error").textContent = session.error || "";
  const qr = $("session-qr");
  const showQr = Boolean(session.qrImage) && !TERMINAL.has(session.status);
  // A new src only when the vendor refreshed the code: no flicker on every poll.
  if (showQr && (!previous || previous.qrImage !== session.qrImage || qr.hidden)) qr.src = session.qrImage;
  qr.hidden = !showQr;
  $("verify-form").hidden = session.status !== "verify_code_required";
  $("session-cancel").hidden = TERMINAL.has(session.status);
  clearTimeout(state.sessionTimer);
  if (!TERMINAL.has(session.status)) {
    state.sessionTimer = setTimeout(pollSession, SESSION_POLL_MS);
  } else {
    if (session.status === "connected") notice(`${session.connectionId} is connected.`);
    refresh();
  }
}

async function pollSession() {
  if (!state.session) return;
  try {
    showSession(await api("GET", `connector-sessions/${encodeURIComponent(state.session.sessionId)}`));
  } catch (error) {
    notice(`Could not read the pairing session: ${error.message}`, true);
    state.sessionTimer = setTimeout(pollSession, SESSION_POLL_MS * 2);
  }
}

async function sendVerifyCode(event) {
  event.preventDefault();
  const code = $("verify-code").value.trim();
  if (!code || !state.session) return;
  try {
    showSession(await api("POST", `connector-sessions/${encodeURIComponent(state.session.sessionId)}/verify-code`, { code }));
    $("verify-code").value = "";
  } catch (error) {
    notice(`The code was not accepted: ${error.message}`, true);
  }
}

async function cancelPairing() {
  if (!state.session) return;
  try {
    showSession(await api("POST", `connector-sessions/${encodeURIComponent(state.session.sessionId)}/cancel`, {}));
  } catch (error) {
    notice(`Could not cancel: ${error.message}`, true);
  }
}

// -- connections ----------------------------------------------------------------------------

async function loadConnections() {
  const { items } = await api("GET", "connections");
  const body = $("connections").tBodies[0];
  body.replaceChildren();
  if (!items.length) body.append(el("tr", {}, el("td", { colspan: "8", className: "empty" }, "No connections yet.")));
  for (const c of items) {
    const actions = el("td", {});
    if (c.status !== "logged_out") {
      actions.append(el("button", { type: "button", className: "small", onclick: () => logout(c.connectionId) }, "Logout"));
    }
    if (c.status === "connected" || c.status === "reconnecting") {
      actions.append(el("button", { type: "button", className: "small", onclick: () => operate(c.connectionId, "pause") }, "Pause"));
    } else if (c.status === "paused") {
      actions.append(el("button", { type: "button", className: "small", onclick: () => operate(c.connectionId, "resume") }, "Resume"));
    }
    actions.append(el("button", { type: "button", className: "small", onclick: () => removeConnection(c.connectionId) }, "Delete"));
    body.append(
      el("tr", { dataset: { connectionId: c.connectionId } },
        el("td", {}, el("code", {}, c.connectionId)),
        el("td", {}, c.kind),
        el("td", {}, statusCell(c.status)),
        el("td", {}, c.displayName || c.accountId || ""),
        el("td", {}, String(c.pendingDeliveries)),
        el("td", {}, String(c.deadDeliveries)),
        el("td", { className: "error" }, c.lastError || ""),
        actions,
      ),
    );
  }
}

async function logout(connectionId) {
  if (!confirm(`Log ${connectionId} out? It stops receiving; accepted events are still delivered.`)) return;
  try {
    await api("POST", `connections/${encodeURIComponent(connectionId)}/logout`, {});
    notice(`${connectionId} logged out.`);
  } catch (error) {
    notice(`Could not log out ${connectionId}: ${error.message}`, true);
  }
  refresh();
}

async function operate(connectionId, action) {
  try {
    const view = await api("POST", `connections/${encodeURIComponent(connectionId)}/${action}`, {});
    notice(`${connectionId} is ${view.status}.`);
  } catch (error) {
    notice(`Could not ${action} ${connectionId}: ${error.message}`, true);
  }
  refresh();
}

async function removeConnection(connectionId) {
  if (!confirm(`Delete ${connectionId}? It is logged out and forgotten; accepted events are still delivered.`)) return;
  try {
    await api("DELETE", `connections/${encodeURIComponent(connectionId)}`);
    notice(`${connectionId} deleted.`);
  } catch (error) {
    notice(`Could not delete ${connectionId}: ${error.message}`, true);
  }
  refresh();
}

// -- deliveries -----------------------------------------------------------------------------

async function loadDeliveries() {
  const status = state.deliveryStatus;
  const page = await api("GET", `deliveries?status=${status}&limit=50`);
  const body = $("deliveries").tBodies[0];
  body.replaceChildren();
  if (!page.items.length) body.append(el("tr", {}, el("td", { colspan: "8", className: "empty" }, `No ${status} deliveries.`)));
  for (const d of page.items) {
    const actions = el("td", {});
    if (d.status !== "pending") {
      actions.append(el("button", { type: "button", className: "small", onclick: () => replay(d.eventId) }, "Replay"));
    }
    body.append(
      el("tr", { dataset: { eventId: d.eventId } },
        el("td", {}, el("code", {}, d.eventId)),
        el("td", {}, d.connectionId),
        el("td", {}, statusCell(d.status)),
        el("td", {}, String(d.attempts)),
        el("td", {}, d.lastStatusCode == null ? "" : String(d.lastStatusCode)),
        el("td", {}, d.createdAt),
        el("td", { className: "error" }, d.lastError || ""),
        actions,
      ),
    );
  }
}

async function replay(eventId) {
  try {
    const row = await api("POST", `deliveries/${encodeURIComponent(eventId)}/replay`, {});
    notice(`Replayed ${eventId}: ${row.status}.`);
  } catch (error) {
    notice(`Could not replay ${eventId}: ${error.message}`, true);
  }
  refresh();
}

async function replayAllDead() {
  try {
    const result = await api("POST", "deliveries/replay", { status: "dead" });
    notice(`Replayed ${result.replayed} dead event(s).`);
  } catch (error) {
    notice(`Could not replay: ${error.message}`, true);
  }
  refresh();
}

function selectTab(status) {
  state.deliveryStatus = status;
  for (const tab of document.querySelectorAll(".tabs [role=tab]")) {
    tab.setAttribute("aria-selected", String(tab.dataset.status === status));
  }
  refresh();
}

// -- wiring ---------------------------------------------------------------------------------

let refreshing = false;

async function refresh() {
  if (!token() || refreshing) return;
  refreshing = true;
  try {
    await Promise.all([loadConnections(), loadDeliveries()]);
  } catch (error) {
    if (error.status !== 401) notice(`Could not refresh: ${error.message}`, true);
  } finally {
    refreshing = false;
  }
}

async function useToken(event) {
  event.preventDefault();
  const value = $("token").value.trim();
  if (!value) return;
  sessionStorage.setItem(TOKEN_KEY, value);
  $("token").value = "";
  await start();
}

async function start() {
  if (!token()) {
    notice("Type the sidecar's API token (EXTERNAL_CONNECTOR_TOKEN) to begin.");
    return;
  }
  try {
    await loadConnectors();
    notice("Token accepted.");
  } catch (error) {
    if (error.status !== 401) notice(`Could not reach the sidecar: ${error.message}`, true);
    return;
  }
  await refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", useToken);
  $("forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  });
  $("pair-form").addEventListener("submit", startPairing);
  $("verify-form").addEventListener("submit", sendVerifyCode);
  $("session-cancel").addEventListener("click", cancelPairing);
  $("refresh").addEventListener("click", refresh);
  $("replay-all").addEventListener("click", replayAllDead);
  for (const tab of document.querySelectorAll(".tabs [role=tab]")) {
    tab.addEventListener("click", () => selectTab(tab.dataset.status));
  }
  setInterval(() => {
    if (!document.hidden) refresh();
  }, REFRESH_MS);
  start();
});
