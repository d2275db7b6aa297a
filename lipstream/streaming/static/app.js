// The lipstream page: microphone -> WebRTC -> the server's talking face, shown and played back.
// Signalling is one HTTP exchange (WHIP's shape): POST the complete offer, get the answer and
// the session's URL in Location; DELETE that URL to end. Plain JS, no build step.
"use strict";

const GATHER_TIMEOUT_MS = 3000; // send the offer with what ICE gathered by then
const STATUS_EVERY_MS = 1000; // how soon the page notices the server ended the session
const VIEWER_TOKEN_HEADER = "Lipstream-Viewer-Token";

const ui = {
  photo: $("photo"), useDefault: $("use-default"), sound: $("sound"),
  start: $("start"), stop: $("stop"), mute: $("mute"),
  error: $("error"), status: $("status"), video: $("avatar"), sessionId: $("session-id"),
};

function showError(message) {
  ui.error.textContent = message;
  ui.error.hidden = !message;
}

function setStatus(text) {
  ui.status.textContent = text;
}

// Start needs a usable face: not while a photo is being analysed, nor one the server refused.
function refreshButtons() {
  const live = Boolean(state.pc);
  ui.start.disabled = live || state.uploading || Boolean(state.photoProblem);
  ui.stop.disabled = !live;
  ui.mute.disabled = !live;
  ui.photo.disabled = ui.useDefault.disabled = live;
  document.body.classList.toggle("is-live", live); // the face cannot change while live
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
  pc.addEventListener("connectionstatechange", () => onConnectionState(pc));
  return pc;
}

function onConnectionState(pc) {
  if (pc !== state.pc) return;
  if (pc.connectionState === "connected") setStatus("Live: talk, and the face talks with you.");
  if (pc.connectionState === "disconnected") {
    setStatus("Connection interrupted; reconnecting…");
    checkSession();
  }
  if (pc.connectionState === "failed") checkSession();
}

// Ask the browser to play received media as soon as it can: jitterBufferTarget (ms; Chromium
// >= 114), else the older playoutDelayHint (s; Chromium 79-113); a browser with neither keeps its
// default delay.
function lowestPlayoutDelay(receiver) {
  try {
    if ("jitterBufferTarget" in receiver) receiver.jitterBufferTarget = 0;
    else if ("playoutDelayHint" in receiver) receiver.playoutDelayHint = 0;
  } catch (_) { /* not settable here: the browser's default delay */ }
}

// The session as the server sees it: {state, ...} while it runs, {ended: reason} once it ended,
// or null when the server could not be asked.
async function sessionStatus(url) {
  try {
    const response = await fetch(url, { headers: authHeaders(), cache: "no-store",
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
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
    showError(`The server ended the session: ${status.ended}.`);
    teardown();
    setStatus("Press Start to talk again.");
  } else if (pc.connectionState === "failed") {
    showError(status ? "the media connection failed while the server still runs the session: "
      + "likely a network or firewall between you and the server (UDP blocked)"
      : "the server is not reachable: it stopped, or the network to it is down");
    await stop();
  }
}

// Stop is live from the moment the peer connection exists: every step after an await checks
// that `pc` is still the page's, and a start the user stopped ends quietly.
async function start() {
  showError("");
  ui.start.disabled = true;
  let pc = null;
  try {
    setStatus("Opening the microphone…");
    state.mic = await openMicrophone();
    setMuted(false);
    pc = state.pc = newPeerConnection(state.mic);
    refreshButtons();
    await pc.setLocalDescription(await pc.createOffer());
    await iceGatheringComplete(pc);
    if (pc !== state.pc) return;
    setStatus("Connecting…");
    if (!await postOffer(pc)) return;
    if (!state.previewShown) showPreview(state.avatarId); // the token is known now
    ui.video.play().catch(() => { /* it plays once media arrives; Start was the user's gesture */ });
  } catch (err) {
    if (pc !== state.pc) return; // stopped meanwhile: the error belongs to an abandoned start
    showError(err.message || String(err));
    await stop();
  }
}

// POST the offer; false if the user stopped meanwhile (the session the server made is ended).
async function postOffer(pc) {
  const avatar = state.avatarId ? `?avatar=${encodeURIComponent(state.avatarId)}` : "";
  const response = await authorizedFetch(`/v1/sessions${avatar}`, {
    method: "POST", headers: { "Content-Type": "application/sdp" }, body: pc.localDescription.sdp,
  });
  const answer = response.ok ? await response.text() : "";
  if (pc !== state.pc) {
    endAbandoned(response);
    return false;
  }
  if (!response.ok) throw new Error(await errorOf(response));
  state.location = response.headers.get("Location"); // from here on, Stop's teardown ends it
  state.viewerToken = response.headers.get(VIEWER_TOKEN_HEADER);
  await pc.setRemoteDescription({ type: "answer", sdp: answer });
  if (pc !== state.pc) return false;
  state.sessionId = state.location.split("/").pop();
  ui.sessionId.textContent = state.sessionId;
  startStatusLine();
  showObsPanel(state.sessionId, state.viewerToken);
  state.statusTimer = setInterval(checkSession, STATUS_EVERY_MS);
  return true;
}

// A session made for a start the user stopped before its answer came: end it on the server.
function endAbandoned(response) {
  const made = response.ok && response.headers.get("Location");
  if (made) authorizedFetch(made, { method: "DELETE", headers: {} }).catch(() => { /* ends when media stops */ });
}

// Close everything on this side; returns the session's URL if the server may still run it.
function teardown() {
  const { pc, mic, location: sessionUrl } = state;
  stopStatusLine();
  hideObsPanel();
  clearInterval(state.statusTimer);
  Object.assign(state, { pc: null, mic: null, location: null, viewerToken: null, statusTimer: null });
  if (pc) pc.close();
  if (mic) mic.getTracks().forEach((track) => track.stop());
  ui.video.srcObject = null; // transparent again: the preview shows through
  setMuted(false);
  refreshButtons();
  return sessionUrl;
}

// Stop: end the session on the server (DELETE) and say whether it did.
async function stop() {
  const sessionUrl = teardown();
  if (!sessionUrl) {
    setStatus("Press Start to talk again.");
    return;
  }
  setStatus("Stopping…");
  try {
    const response = await authorizedFetch(sessionUrl, {
      method: "DELETE", headers: {}, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
    const gone = response.status === 204 || response.status === 404;
    setStatus(gone ? `Stopped: session ${state.sessionId} has ended on the server. Press Start to talk again.`
      : `Stopped here; the server said: ${await errorOf(response)}. It ends the session when the media stops.`);
  } catch (_) {
    setStatus("Stopped here; the server could not be reached. It ends the session when the media stops.");
  }
}

// Hearing your own voice ~0.1 s late makes talking hard (delayed auditory feedback): let the user
// watch in silence, or use headphones.
ui.sound.addEventListener("change", () => { ui.video.muted = !ui.sound.checked; });
ui.start.addEventListener("click", start);
ui.stop.addEventListener("click", stop);
window.addEventListener("pagehide", () => {
  // keepalive lets the DELETE outlive the page, so the server frees the session at once
  if (state.location) fetch(state.location, { method: "DELETE", headers: authHeaders(), keepalive: true });
});
showPreview(null);
