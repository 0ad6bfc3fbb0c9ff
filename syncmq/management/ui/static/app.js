/* syncmq dashboard: a single page over the management API (/api/...). The entry module:
 * the router, the refresh loop, the header's virtual-host selector, login and logout.
 *
 * Hand-written ES modules, no framework, no build step, nothing loaded from outside syncmq
 * (the page's Content-Security-Policy allows scripts from 'self' only, none inline).
 * - Login: the credentials are checked with GET /api/whoami and kept in sessionStorage
 *   (this tab only) as a basic-auth token sent with every API call.
 * - Pages are hash routes (#/overview, #/queues, #/queue/<vhost>/<name>, #/connection/<name>,
 *   #/channels, #/channel/<name>, #/policies, #/shovels, ...). Each page builds its forms once (mount) and then only
 *   replaces its data regions on every refresh, so a refresh never loses what the operator
 *   is typing.
 * - The virtual-host selector (remembered in localStorage) narrows every list page to one
 *   vhost through RabbitMQ's vhost-scoped endpoints (/api/queues/<vhost>, ...).
 */
import { S, MGMT_TAGS, h, fill, $, api, ApiError, banner, clearBanner, isAdmin } from "./core.js";
import { overview } from "./overview.js";
import { queues, queue } from "./queues.js";
import { exchanges, exchange } from "./exchanges.js";
import { connections, connection, channels, channel } from "./connections.js";
import { admin, definitions } from "./admin.js";
import { policies } from "./policies.js";
import { shovels } from "./shovels.js";

const views = { overview, queues, queue, exchanges, exchange, connections, connection, channels,
                channel, admin, definitions, policies, shovels };

function parseRoute(rest) { return rest.map(decodeURIComponent); }

// ---------------------------------------------------------------- router, refresh loop

function refreshSeconds() { return Number($("#refresh").value); }

function schedule() {
  clearTimeout(S.timer);
  const secs = refreshSeconds();
  if (!secs || !S.view || !S.view.refresh) return;
  const seq = S.seq;
  S.timer = setTimeout(async () => {
    if (seq !== S.seq) return;
    await runRefresh(seq);
    if (seq === S.seq) schedule();
  }, secs * 1000);
}

async function runRefresh(seq) {
  try {
    await S.view.refresh();
    if (seq === S.seq && $("#banner").dataset.refresh === "1") clearBanner();
  } catch (err) {
    if (seq !== S.seq) return;
    if (err instanceof ApiError && err.status === 401 && !S.view.keepOn401) {
      // the credentials stopped working (user deleted or password changed)
      logout("Your login is no longer accepted: " + err.message);
      return;
    }
    banner("Refresh failed: " + err.message, "error", true);
  }
}

function route() {
  if (!S.token) { showLogin(); return; }
  const hash = location.hash.replace(/^#\/?/, "") || "overview";
  const [page, ...rest] = hash.split("/");
  const make = views[page] || views.overview;
  S.seq++;
  clearTimeout(S.timer);
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === page ||
    a.dataset.page === page + "s");
  let view;
  try { view = make(...parseRoute(rest)); } catch (err) { banner(err.message); return; }
  S.view = view;
  fill($("#view"), view.el);
  document.title = `syncmq — ${page}`;
  if (view.refresh) runRefresh(S.seq).then(schedule);
}

// ---------------------------------------------------------------- virtual-host selector

/** Fill the header's selector with the vhosts the user sees; a remembered vhost that is
 * gone (or not visible) falls back to all. */
async function loadVhosts() {
  const sel = $("#vhost-select");
  let vhosts;
  try { vhosts = await api("GET", "/vhosts"); } catch (e) { return; }
  const names = vhosts.map(v => v.name);
  if (S.vhost && !names.includes(S.vhost)) { S.vhost = ""; localStorage.removeItem("syncmq.vhost"); route(); }
  fill(sel, h("option", { value: "" }, "All"),
    names.map(n => h("option", { value: n, selected: n === S.vhost }, n)));
}

function selectVhost() {
  S.vhost = $("#vhost-select").value;
  if (S.vhost) localStorage.setItem("syncmq.vhost", S.vhost); else localStorage.removeItem("syncmq.vhost");
  route();
}

// ---------------------------------------------------------------- login

function b64(text) {
  const bytes = new TextEncoder().encode(text);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

function showLogin(message) {
  $("#nav").hidden = true; $("#session").hidden = true;
  fill($("#view"));
  $("#login").hidden = false;
  const e = $("#login-error");
  e.hidden = !message; e.textContent = message || "";
  $("#login-user").focus();
}

function startSession() {
  $("#login").hidden = true;
  $("#nav").hidden = false; $("#session").hidden = false;
  $("#whoami").textContent = `${S.user} (${S.tags.join(", ")})`;
  for (const a of document.querySelectorAll(".admin-only")) a.hidden = !isAdmin();
  loadVhosts();
  api("GET", "/overview").then(ov => {
    $("#node-info").textContent = `${ov.product_name || "syncmq"} ${ov.product_version || ""} · ${ov.node} · cluster ${ov.cluster_name}`;
  }).catch(() => {});
  route();
}

async function login(ev) {
  ev.preventDefault();
  const user = $("#login-user").value, pass = $("#login-pass").value;
  S.token = b64(user + ":" + pass);
  try {
    const me = await api("GET", "/whoami");
    S.user = me.name; S.tags = me.tags || [];
    if (!S.tags.some(t => MGMT_TAGS.includes(t))) throw new ApiError(401, null, "Not management user");
    sessionStorage.setItem("syncmq.session", JSON.stringify({ token: S.token, user: S.user, tags: S.tags }));
    $("#login-pass").value = "";
    clearBanner();
    startSession();
  } catch (err) {
    S.token = null;
    showLogin(err instanceof ApiError && err.status === 401 ? `Login refused: ${err.message}` : `Login failed: ${err.message}`);
  }
}

function logout(message) {
  sessionStorage.removeItem("syncmq.session");
  S.token = null; S.user = null; S.tags = []; S.view = null; S.seq++;
  S.history = []; S.last = null;
  clearTimeout(S.timer);
  clearBanner();
  showLogin(message);
}

function init() {
  $("#login").addEventListener("submit", login);
  $("#logout").addEventListener("click", () => logout());
  $("#vhost-select").addEventListener("change", selectVhost);
  document.addEventListener("syncmq:vhosts", loadVhosts);
  S.vhost = localStorage.getItem("syncmq.vhost") || "";
  const saved = localStorage.getItem("syncmq.refresh");
  if (saved !== null && [...$("#refresh").options].some(o => o.value === saved)) $("#refresh").value = saved;
  $("#refresh").addEventListener("change", () => {
    localStorage.setItem("syncmq.refresh", $("#refresh").value);
    schedule();
  });
  window.addEventListener("hashchange", route);
  try {
    const s = JSON.parse(sessionStorage.getItem("syncmq.session") || "null");
    if (s && s.token) { S.token = s.token; S.user = s.user; S.tags = s.tags || []; }
  } catch (e) { /* a damaged entry: log in again */ }
  if (S.token) startSession(); else showLogin();
}

document.addEventListener("DOMContentLoaded", init);
