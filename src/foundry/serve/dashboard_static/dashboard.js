// The foundry dashboard page: asks for the admin token, keeps it in this tab's
// sessionStorage, and shows the HTML fragment GET /admin/dashboard/view renders on the
// server (every value escaped there). Nothing here is secret; nothing is fetched from
// another origin.
"use strict";

const TOKEN = "foundry.dashboard.token";
const $ = (id) => document.getElementById(id);

function token() {
  return sessionStorage.getItem(TOKEN);
}

function authHeaders() {
  return { Authorization: "Bearer " + token() };
}

function showLogin(message) {
  $("login").hidden = false;
  $("controls").hidden = true;
  $("content").replaceChildren();
  $("status").textContent = "";
  const error = $("login-error");
  error.hidden = !message;
  error.textContent = message || "";
  $("token").focus();
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    return body.error.message;
  } catch (e) {
    return "HTTP " + response.status;
  }
}

let loading = false;
let timer = null;

function openVersions() {
  // which version panels the reader opened or closed, so a refresh keeps them so
  const state = new Map();
  for (const el of $("content").querySelectorAll("details[data-key]")) {
    state.set(el.dataset.key, el.open);
  }
  return state;
}

function restoreVersions(state) {
  for (const el of $("content").querySelectorAll("details[data-key]")) {
    if (state.has(el.dataset.key)) el.open = state.get(el.dataset.key);
  }
}

function scheduleRefresh() {
  // Usage and revenue move while the server answers: reload on the chosen interval,
  // only while the tab is visible, logged in, and no load is already under way.
  clearInterval(timer);
  const seconds = Number($("auto").value);
  if (seconds > 0) {
    timer = setInterval(() => {
      if (token() && !loading && document.visibilityState === "visible") load(true);
    }, seconds * 1000);
  }
}

let latest = 0; // the newest load's number: an older answer arriving late is dropped

async function load(background = false) {
  if (background && loading) return;
  const mine = ++latest;
  loading = true;
  try {
    await fetchView(background, mine);
  } finally {
    if (mine === latest) loading = false;
  }
}

async function fetchView(background, mine) {
  if (!token()) {
    showLogin("");
    return;
  }
  if (!background) $("status").textContent = "Loading…";
  const params = new URLSearchParams({ days: $("days").value });
  if ($("period").value) params.set("period", $("period").value);
  let response;
  try {
    response = await fetch("/admin/dashboard/view?" + params, {
      headers: authHeaders(),
      cache: "no-store",
      credentials: "omit",
    });
  } catch (e) {
    $("status").textContent = "The server did not answer: " + e;
    return;
  }
  if (response.status === 401 || response.status === 403) {
    sessionStorage.removeItem(TOKEN);
    showLogin(await errorMessage(response));
    return;
  }
  if (!response.ok) {
    $("status").textContent = await errorMessage(response);
    return;
  }
  // The fragment is rendered by the server with Jinja2 autoescape; the page's CSP runs
  // no inline script, so it is shown as it comes.
  const html = await response.text();
  if (mine !== latest) return;
  const opened = openVersions();
  $("content").innerHTML = html;
  restoreVersions(opened);
  $("login").hidden = true;
  $("controls").hidden = false;
  $("status").textContent = "Updated " + new Date().toLocaleTimeString();
}

async function downloadReport(link) {
  // The report route needs the Bearer header, which a plain link cannot send: fetch it
  // and save the answer as a file.
  const note = link.parentElement.querySelector(".report-note");
  if (note) note.textContent = "rendering…";
  const response = await fetch(link.getAttribute("href"), {
    headers: authHeaders(),
    cache: "no-store",
    credentials: "omit",
  });
  if (!response.ok) {
    if (note) note.textContent = await errorMessage(response);
    return;
  }
  const url = URL.createObjectURL(await response.blob());
  const save = document.createElement("a");
  save.href = url;
  save.download = link.dataset.filename || "report.html";
  document.body.appendChild(save);
  save.click();
  save.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  if (note) note.textContent = "saved " + save.download;
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    $("token").value = "";
    if (!value) return;
    sessionStorage.setItem(TOKEN, value);
    load();
  });
  $("controls").addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  $("days").addEventListener("change", () => load());
  $("period").addEventListener("change", () => load());
  $("auto").addEventListener("change", scheduleRefresh);
  $("logout").addEventListener("click", () => {
    latest++; // a load still under way must not show the page again
    sessionStorage.removeItem(TOKEN);
    showLogin("Logged out.");
  });
  $("content").addEventListener("click", (event) => {
    const link = event.target.closest("a[data-report]");
    if (!link) return;
    event.preventDefault();
    downloadReport(link);
  });
  load();
  scheduleRefresh();
});
