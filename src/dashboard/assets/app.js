// The rk3s dashboard: logs in with a bearer token kept in sessionStorage
// and holds one streamed response, api/watch, on which the node sends a new
// overview (one JSON document per line) whenever the watches it makes with
// that token see a change. A broken stream is reopened with back-off.
"use strict";
const API = "api/watch";
const $ = (id) => document.getElementById(id);
const BACKOFF_MIN = 1000, BACKOFF_MAX = 30000;
let timer = null;
let backoff = BACKOFF_MIN;
let current = null; // the AbortController of the open stream
let updates = 0;

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}

function table(headers, rows) {
  if (rows.length === 0) return '<p class="muted">None.</p>';
  const head = "<tr>" + headers.map((h) => "<th>" + esc(h) + "</th>").join("") + "</tr>";
  const body = rows.map((r) => "<tr>" + r.join("") + "</tr>").join("");
  return '<div class="scroll"><table>' + head + body + "</table></div>";
}

const td = (v, cls) => "<td" + (cls ? ' class="' + cls + '"' : "") + ">" + esc(v) + "</td>";

function sectionHtml(section, render) {
  if (section.error) return '<p class="error">Not allowed or failed: ' + esc(section.error) + "</p>";
  return render(section.items);
}

function render(o) {
  $("routers").innerHTML = sectionHtml(o.routers, (items) => table(
    ["Host", "Path", "TLS", "Service", "Endpoints", "Ingress"],
    items.map((r) => [
      td(r.host), td(r.path + (r.path_type === "Exact" ? " (exact)" : "")), td(r.tls ? "yes" : "no"),
      td(r.service),
      r.problem ? td(r.problem, "bad wrap") : td(r.ready_endpoints + " healthy", "ok"),
      td(r.ingress),
    ])));
  $("nodes").innerHTML = sectionHtml(o.nodes, (items) => table(
    ["Node", "Status", "Roles", "Address", "CPU", "Memory", "Pods", "Version"],
    items.map((n) => [
      td(n.name), td(n.ready ? "Ready" : "NotReady", n.ready ? "ok" : "bad"), td(n.roles.join(",") || "-"),
      td(n.address), td(n.cpu), td(n.memory), td(n.pods), td(n.version),
    ])));
  $("pods").innerHTML = sectionHtml(o.pods, (items) => {
    const byNode = {};
    items.forEach((p) => { (byNode[p.node || "(unscheduled)"] ||= []).push(p); });
    return Object.keys(byNode).sort().map((node) => '<div class="node"><strong>' + esc(node) + "</strong>" +
      table(["Namespace", "Pod", "State", "Ready", "Restarts"], byNode[node].map((p) => [
        td(p.namespace), td(p.name), td(p.phase, p.phase === "Running" ? "ok" : (p.phase === "Succeeded" ? "" : "bad")),
        td(p.ready), td(p.restarts),
      ])) + "</div>").join("") || '<p class="muted">None.</p>';
  });
  $("events").innerHTML = sectionHtml(o.events, (items) => table(
    ["Last seen", "Namespace", "Object", "Reason", "Message", "Count"],
    items.map((e) => [td(e.last_seen), td(e.namespace), td(e.object), td(e.reason), td(e.message, "wrap"), td(e.count)])));
  updates += 1;
  $("updated").textContent = "Live: updated " + new Date().toLocaleTimeString();
  $("updated").dataset.updates = String(updates);
}

function stop() {
  clearTimeout(timer);
  if (current) current.abort();
  current = null;
}

function showLogin(message) {
  stop();
  // Nothing read with a previous token stays on the page.
  ["routers", "nodes", "pods", "events", "updated"].forEach((id) => { $(id).textContent = ""; });
  $("token").value = "";
  $("board").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").hidden = !message;
  $("login-error").textContent = message || "";
}

function showBoard() {
  $("login").hidden = true;
  $("board").hidden = false;
  $("logout").hidden = false;
}

function retry(why) {
  showBoard();
  $("board-error").hidden = false;
  $("board-error").textContent = why + "; reconnecting in " + Math.round(backoff / 1000) + " s";
  timer = setTimeout(connect, backoff);
  backoff = Math.min(backoff * 2, BACKOFF_MAX);
}

// Handles one line of the stream; returns false when the stream must end.
function onLine(text) {
  if (!text.trim()) return true; // heartbeat
  const doc = JSON.parse(text);
  if (doc.unauthorized) {
    sessionStorage.removeItem("rk3s-token");
    showLogin(doc.unauthorized);
    return false;
  }
  if (doc.overview) {
    backoff = BACKOFF_MIN;
    showBoard();
    $("board-error").hidden = true;
    render(doc.overview);
  }
  return true;
}

async function connect() {
  stop();
  const token = sessionStorage.getItem("rk3s-token");
  if (!token) return showLogin();
  const ctrl = new AbortController();
  current = ctrl;
  let resp;
  try {
    resp = await fetch(API, {headers: {Authorization: "Bearer " + token}, cache: "no-store", signal: ctrl.signal});
  } catch (e) {
    if (ctrl.signal.aborted) return;
    return retry("Could not reach the node: " + e);
  }
  if (!resp.ok) {
    let body = {};
    try { body = await resp.json(); } catch (e) { /* not JSON */ }
    if (resp.status === 401 || resp.status === 400) {
      sessionStorage.removeItem("rk3s-token");
      return showLogin(body.error || ("HTTP " + resp.status));
    }
    return retry("The node answered " + resp.status + (body.error ? ": " + body.error : ""));
  }
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  try {
    for (;;) {
      const {done, value} = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, {stream: true});
      let nl;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const text = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (!onLine(text)) return;
      }
    }
  } catch (e) {
    if (ctrl.signal.aborted) return;
    return retry("The live view broke: " + e);
  }
  if (!ctrl.signal.aborted) retry("The node closed the live view");
}

$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem("rk3s-token", $("token").value.trim());
  connect();
});
$("logout").addEventListener("click", () => { sessionStorage.removeItem("rk3s-token"); showLogin(); });
// A token in the fragment (#token=...) logs in directly (handy for scripts; never sent to the server).
const m = location.hash.match(/token=([^&]+)/);
if (m) { sessionStorage.setItem("rk3s-token", decodeURIComponent(m[1])); history.replaceState(null, "", location.pathname); }
connect();
