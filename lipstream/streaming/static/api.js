// What every part of the page shares: the page's state, the server token, and the server's
// error messages. Plain scripts, loaded in order by index.html (no build step).
"use strict";

const $ = (id) => document.getElementById(id);
// A server that has not answered by then is taken as unreachable: a frozen process or host keeps
// its connections open and never answers, and the page must still say so and let the user go on.
const REQUEST_TIMEOUT_MS = 5000;

// Exposed for tests and curious users (the console): the live peer connection and session,
// the chosen avatar, and the last numbers of the status line.
const state = window.lipstream = {
  pc: null, mic: null, location: null, sessionId: null, viewerToken: null, timer: null, statusTimer: null,
  avatarId: null, photoProblem: null, uploading: false, previewShown: false, muted: false,
  live: { fps: null, rttMs: null, micLevel: null, sessions: null, maxSessions: null },
};

let token = new URLSearchParams(location.search).get("token") || sessionStorage.getItem("lipstream-token");

function authHeaders() {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

// fetch with the token; on 401 ask for it once and retry.
async function authorizedFetch(url, options) {
  let response = await fetch(url, { ...options, headers: { ...options.headers, ...authHeaders() } });
  if (response.status === 401) {
    const given = window.prompt("This server needs a token (printed by `lipstream serve`):", "");
    if (!given) return response;
    token = given.trim();
    sessionStorage.setItem("lipstream-token", token);
    response = await fetch(url, { ...options, headers: { ...options.headers, ...authHeaders() } });
  }
  return response;
}

// The server answers every error as JSON {"error": "..."}; say that, not a status code.
async function errorOf(response) {
  try {
    const body = await response.json();
    if (body && body.error) return body.error;
  } catch (_) { /* not JSON: fall through */ }
  return `${response.status} ${response.statusText}`;
}
