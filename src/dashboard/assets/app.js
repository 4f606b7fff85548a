// The rk3s dashboard: logs in with a bearer token kept in sessionStorage
// and polls the overview, which the node reads with that token.
"use strict";
const API = "api/overview";
const $ = (id) => document.getElementById(id);
let timer = null;

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
  $("updated").textContent = "Updated " + new Date().toLocaleTimeString();
}

function showLogin(message) {
  clearTimeout(timer);
  $("board").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").hidden = !message;
  $("login-error").textContent = message || "";
}

async function refresh() {
  const token = sessionStorage.getItem("rk3s-token");
  if (!token) return showLogin();
  try {
    const resp = await fetch(API, {headers: {Authorization: "Bearer " + token}, cache: "no-store"});
    const body = await resp.json();
    if (!resp.ok) {
      sessionStorage.removeItem("rk3s-token");
      return showLogin(body.error || ("HTTP " + resp.status));
    }
    $("login").hidden = true;
    $("board").hidden = false;
    $("logout").hidden = false;
    $("board-error").hidden = true;
    render(body);
  } catch (e) {
    $("board-error").hidden = false;
    $("board-error").textContent = "Could not reach the node: " + e;
  }
  timer = setTimeout(refresh, 2000);
}

$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem("rk3s-token", $("token").value.trim());
  refresh();
});
$("logout").addEventListener("click", () => { sessionStorage.removeItem("rk3s-token"); showLogin(); });
// A token in the fragment (#token=...) logs in directly (handy for scripts; never sent to the server).
const m = location.hash.match(/token=([^&]+)/);
if (m) { sessionStorage.setItem("rk3s-token", decodeURIComponent(m[1])); history.replaceState(null, "", location.pathname); }
refresh();
