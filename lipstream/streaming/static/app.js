// The lipstream page: microphone -> WebRTC -> the server's talking face, shown and played back.
// Signalling is one HTTP exchange (WHIP's shape): POST the complete offer, get the answer and
// the session's URL in Location; DELETE that URL to end. Plain JS, no build step.
"use strict";

const GATHER_TIMEOUT_MS = 3000; // send the offer with what ICE gathered by then
const STATS_EVERY_MS = 1000;
const STATUS_EVERY_MS = 1000; // how soon the page notices the server ended the session
const VIEWER_TOKEN_HEADER = "Lipstream-Viewer-Token";

const $ = (id) => document.getElementById(id);
const ui = {
  photo: $("photo"), photoNote: $("photo-note"), sound: $("sound"), start: $("start"), stop: $("stop"),
  error: $("error"), status: $("status"), video: $("avatar"), session: $("session"),
  sessionId: $("session-id"), stats: $("stats"), viewerLink: $("viewer-link"),
};

// Exposed for tests and curious users (the console): the live peer connection and session.
const state = window.lipstream = {
  pc: null, mic: null, location: null, sessionId: null, viewerToken: null, timer: null, statusTimer: null,
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

function showError(message) {
  ui.error.textContent = message;
  ui.error.hidden = !message;
}

function setStatus(text) {
  ui.status.textContent = text;
}

async function uploadPhoto(file) {
  setStatus(`Analysing ${file.name}…`);
  const response = await authorizedFetch("/v1/avatars", {
    method: "POST", headers: { "Content-Type": file.type || "application/octet-stream" }, body: file,
  });
  if (!response.ok) throw new Error(`photo ${file.name}: ${await errorOf(response)}`);
  return (await response.json()).id;
}

function iceGatheringComplete(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { pc.removeEventListener("icegatheringstatechange", check); resolve(); };
    const check = () => { if (pc.iceGatheringState === "complete") done(); };
    pc.addEventListener("icegatheringstatechange", check);
    setTimeout(done, GATHER_TIMEOUT_MS);
  });
}

async function openMicrophone() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new Error("this browser gives no microphone access here: open the page over https or on localhost");
  }
  try {
    // echo cancellation keeps the avatar's voice from the speakers out of the microphone
    return await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
  } catch (err) {
    throw new Error(`microphone: ${err.name === "NotAllowedError" ? "permission denied" : err.message}`);
  }
}

function newPeerConnection(mic) {
  // no STUN/TURN: the server is on this machine or this network, and no public server is reachable
  const pc = new RTCPeerConnection({ iceServers: [] });
  pc.addTransceiver(mic.getAudioTracks()[0], { direction: "sendrecv", streams: [mic] });
  pc.addTransceiver("video", { direction: "recvonly" });
  const remote = new MediaStream();
  pc.addEventListener("track", (event) => {
    lowestPlayoutDelay(event.receiver);
    remote.addTrack(event.track);
    ui.video.srcObject = remote;
    ui.video.muted = !ui.sound.checked;
  });
  pc.addEventListener("connectionstatechange", () => {
    if (pc !== state.pc) return;
    if (pc.connectionState === "connected") setStatus("Live: talk, and the face talks with you.");
    if (pc.connectionState === "disconnected") {
      setStatus("Connection interrupted; reconnecting…");
      checkSession();
    }
    if (pc.connectionState === "failed") checkSession();
  });
  return pc;
}

// Ask the browser to play received media as soon as it can (Chromium's jitterBufferTarget, in
// ms); browsers without it ignore the property.
function lowestPlayoutDelay(receiver) {
  try {
    if ("jitterBufferTarget" in receiver) receiver.jitterBufferTarget = 0;
  } catch (_) { /* not settable here: the browser's default delay */ }
}

// The session as the server sees it: {state, ...} while it runs, {ended: reason} once it ended,
// or null when the server could not be asked.
async function sessionStatus(url) {
  try {
    const response = await fetch(url, { headers: authHeaders(), cache: "no-store" });
    const body = await response.json();
    if (response.status === 404) return { ended: body.reason || "the server no longer knows it" };
    return response.ok ? body : null;
  } catch (_) {
    return null;
  }
}

// Say truthfully what happened: ended by the server, or a connection failure and its likely cause.
async function checkSession() {
  const { pc, location: sessionUrl } = state;
  if (!pc || !sessionUrl) return;
  const status = await sessionStatus(sessionUrl);
  if (pc !== state.pc) return;
  if (status && status.ended) {
    state.location = null; // nothing to DELETE
    showError(`The server ended the session: ${status.ended}.`);
    stop();
  } else if (pc.connectionState === "failed") {
    showError(status ? "the media connection failed while the server still runs the session: "
      + "likely a network or firewall between you and the server (UDP blocked)"
      : "the server is not reachable: it stopped, or the network to it is down");
    stop();
  }
}

async function start() {
  showError("");
  ui.start.disabled = true;
  try {
    const file = ui.photo.files[0];
    const avatarId = file ? await uploadPhoto(file) : null;
    setStatus("Opening the microphone…");
    state.mic = await openMicrophone();
    state.pc = newPeerConnection(state.mic);
    await state.pc.setLocalDescription(await state.pc.createOffer());
    await iceGatheringComplete(state.pc);
    setStatus("Connecting…");
    const url = "/v1/sessions" + (avatarId ? `?avatar=${encodeURIComponent(avatarId)}` : "");
    const response = await authorizedFetch(url, {
      method: "POST", headers: { "Content-Type": "application/sdp" }, body: state.pc.localDescription.sdp,
    });
    if (!response.ok) throw new Error(await errorOf(response));
    state.location = response.headers.get("Location");
    state.viewerToken = response.headers.get(VIEWER_TOKEN_HEADER);
    await state.pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
    showSession(state.location.split("/").pop());
    ui.stop.disabled = false;
    ui.video.play().catch(() => { /* it plays once media arrives; Start was the user's gesture */ });
  } catch (err) {
    showError(err.message || String(err));
    await stop();
  }
}

function showSession(id) {
  state.sessionId = id;
  ui.sessionId.textContent = id;
  const viewer = new URL(`/view/${encodeURIComponent(id)}`, location.href);
  // the viewer token watches this session only: the link can go to OBS or another person
  if (state.viewerToken) viewer.searchParams.set("token", state.viewerToken);
  ui.viewerLink.href = ui.viewerLink.textContent = viewer.href;
  ui.session.hidden = false;
  state.timer = setInterval(showStats, STATS_EVERY_MS);
  state.statusTimer = setInterval(checkSession, STATUS_EVERY_MS);
}

async function stop() {
  const { pc, mic, location: sessionUrl } = state;
  clearInterval(state.timer);
  clearInterval(state.statusTimer);
  Object.assign(state, { pc: null, mic: null, location: null, viewerToken: null, timer: null, statusTimer: null });
  if (sessionUrl) {
    authorizedFetch(sessionUrl, { method: "DELETE", headers: {} }).catch(() => { /* the server ends it on idle */ });
  }
  if (pc) pc.close();
  if (mic) mic.getTracks().forEach((track) => track.stop());
  ui.video.srcObject = null;
  ui.start.disabled = false;
  ui.stop.disabled = true;
  setStatus(ui.error.hidden ? "Stopped. Press Start to talk again." : "Press Start to talk again.");
}

// Receive-side numbers a user can judge the stream by: frame rate and what was lost.
async function showStats() {
  if (!state.pc) return;
  const report = await state.pc.getStats();
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") {
      const fps = s.framesPerSecond === undefined ? "–" : s.framesPerSecond.toFixed(0);
      ui.stats.textContent = `${fps} fps, ${s.framesDecoded || 0} frames, ${s.framesDropped || 0} dropped`;
    }
  });
}

ui.photo.addEventListener("change", () => {
  const file = ui.photo.files[0];
  ui.photoNote.textContent = file ? `${file.name}: used when you press Start` : "none chosen: the default avatar is used";
});
// Hearing your own voice ~0.1 s late makes talking hard (delayed auditory feedback): let the user
// watch in silence, or use headphones.
ui.sound.addEventListener("change", () => { ui.video.muted = !ui.sound.checked; });
ui.start.addEventListener("click", start);
ui.stop.addEventListener("click", stop);
window.addEventListener("pagehide", () => {
  // keepalive lets the DELETE outlive the page, so the server frees the session at once
  if (state.location) fetch(state.location, { method: "DELETE", headers: authHeaders(), keepalive: true });
});
