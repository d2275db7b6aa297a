// The viewer page: watch one session (WHEP's shape: POST a recvonly offer, get the answer).
// It starts by itself and reconnects by itself, because in OBS nobody is there to click.
"use strict";

const RETRY_MS = 3000;
const GATHER_TIMEOUT_MS = 3000;
const STATUS_EVERY_MS = 2000; // how soon a viewer notices the session ended
const REQUEST_TIMEOUT_MS = 5000; // unanswered by then: a frozen server, taken as unreachable
const REFUSED = [401, 403]; // a token retrying will not make valid (a restarted server drew a new secret)

const video = document.getElementById("video");
const overlay = document.getElementById("overlay");
const message = document.getElementById("message");
const sessionId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
const token = new URLSearchParams(location.search).get("token");

// Exposed for tests: the current peer connection.
const viewer = window.lipstreamViewer = { pc: null, location: null, wantsClick: false, ended: null, refused: null };
const sessionUrl = `/v1/sessions/${encodeURIComponent(sessionId)}`;

function say(text, clickable) {
  message.textContent = text;
  overlay.hidden = !text;
  overlay.style.pointerEvents = clickable ? "auto" : "none";
}

function headers(extra) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    });
    setTimeout(resolve, GATHER_TIMEOUT_MS);
  });
}

// Sound first; if the browser refuses autoplay with sound (no click yet), play muted and ask
// for a click. OBS (with "Control audio via OBS") and kiosk browsers allow sound at once.
async function play() {
  video.muted = false;
  try {
    await video.play();
    say("");
  } catch (_) {
    video.muted = true;
    viewer.wantsClick = true;
    say("Click for sound", true);
    await video.play().catch(() => {});
  }
}

async function errorOf(response) {
  try {
    return (await response.json()).error || `${response.status}`;
  } catch (_) {
    return `${response.status} ${response.statusText}`;
  }
}

// The session's status from the server: {ended: reason} once it has ended, {refused: reason} when
// this link's token is not accepted, else whatever it says (null when the server cannot be asked).
async function sessionStatus() {
  try {
    const response = await fetch(sessionUrl, { headers: headers({}), cache: "no-store",
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
    const body = await response.json();
    if (response.status === 404) return { ended: body.reason || "the server no longer knows it" };
    if (REFUSED.includes(response.status)) return { refused: body.error || `${response.status}` };
    return response.ok ? body : { error: body.error };
  } catch (_) {
    return null;
  }
}

// A session does not come back once ended (a new one has a new address), nor does a refused token
// become valid: say so and stop.
function stopWatching(text) {
  viewer.location = null;
  if (viewer.pc) viewer.pc.close();
  viewer.pc = null;
  video.srcObject = null;
  say(text, false);
}

function finished() {
  return viewer.ended !== null || viewer.refused !== null;
}

// Acts on a status that ends the watching; true if it did.
function settled(status) {
  if (status && status.ended) {
    viewer.ended = status.ended;
    stopWatching(`The session has ended: ${status.ended}.`);
  } else if (status && status.refused) {
    viewer.refused = status.refused;
    stopWatching(`This viewer link is not accepted: ${status.refused}. Copy a new link from the session's page.`);
  }
  return finished();
}

async function watchStatus() {
  if (finished()) return;
  if (!settled(await sessionStatus())) setTimeout(watchStatus, STATUS_EVERY_MS);
}

async function retryLater(reason) {
  const status = await sessionStatus();
  if (settled(status)) return;
  const why = status ? reason : "The server is not reachable";
  say(`${why}. Retrying…`, false);
  setTimeout(connect, RETRY_MS);
}

function lowestPlayoutDelay(receiver) {
  try {
    if ("jitterBufferTarget" in receiver) receiver.jitterBufferTarget = 0; // ms; Chromium >= 114
    else if ("playoutDelayHint" in receiver) receiver.playoutDelayHint = 0; // s; Chromium 79-113
  } catch (_) { /* not settable here: the browser's default delay */ }
}

async function connect() {
  if (finished()) return;
  const pc = new RTCPeerConnection({ iceServers: [] });
  viewer.pc = pc;
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  const stream = new MediaStream();
  pc.addEventListener("track", (event) => {
    lowestPlayoutDelay(event.receiver);
    stream.addTrack(event.track);
    if (video.srcObject !== stream) {
      video.srcObject = stream;
      play();
    }
  });
  const giveUp = () => {
    if (viewer.pc !== pc || pc.connectionState === "connected") return;
    viewer.pc = null;
    pc.close();
    retryLater("The session's stream stopped");
  };
  pc.addEventListener("connectionstatechange", () => {
    if (pc.connectionState === "failed" || pc.connectionState === "closed") giveUp();
    // "disconnected" may heal by itself (a network blip); if it has not within RETRY_MS, reconnect
    if (pc.connectionState === "disconnected") setTimeout(giveUp, RETRY_MS);
  });
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const response = await fetch(`${sessionUrl}/viewers`, {
      method: "POST", headers: headers({ "Content-Type": "application/sdp" }), body: pc.localDescription.sdp,
    });
    if (!response.ok) throw new Error(await errorOf(response));
    viewer.location = response.headers.get("Location");
    await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
  } catch (err) {
    viewer.pc = null;
    pc.close();
    retryLater(err.message || String(err));
  }
}

overlay.addEventListener("click", () => {
  if (!viewer.wantsClick) return;
  viewer.wantsClick = false;
  video.muted = false;
  video.play().catch(() => {});
  say("");
});
window.addEventListener("pagehide", () => {
  if (viewer.location) fetch(viewer.location, { method: "DELETE", headers: headers({}), keepalive: true });
});

if (sessionId) {
  connect();
  setTimeout(watchStatus, STATUS_EVERY_MS);
}
else say("No session in the address: open /view/SESSION_ID", false);
