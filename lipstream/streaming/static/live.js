// While live: the microphone (which one, muted or not) and a status line of how the stream runs,
// from the browser's own WebRTC statistics and the server's /healthz.
"use strict";

const STATS_EVERY_MS = 1000;
const FPS_WINDOW_SAMPLES = 4; // frame rate over the last 3 s: steady enough to read
const HEALTH_EVERY_TICKS = 2; // ask the server for its load every other second
const liveUi = { mic: $("mic"), mute: $("mute"), live: $("live"), stats: $("stats"), level: $("level") };
let fpsSamples = []; // [{at: ms, frames}] of the received video
let ticks = 0;

// Echo cancellation keeps the avatar's voice from the speakers out of the microphone.
function micConstraints() {
  const audio = { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true };
  if (liveUi.mic.value) audio.deviceId = { exact: liveUi.mic.value };
  return { audio };
}

async function openMicrophone() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new Error("this browser gives no microphone access here: open the page over https or on localhost");
  }
  try {
    const mic = await navigator.mediaDevices.getUserMedia(micConstraints());
    listMicrophones(); // names are known only after permission
    return mic;
  } catch (err) {
    throw new Error(`microphone: ${err.name === "NotAllowedError" ? "permission denied" : err.message}`);
  }
}

async function listMicrophones() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
  const devices = await navigator.mediaDevices.enumerateDevices();
  const inputs = devices.filter((d) => d.kind === "audioinput" && d.label);
  if (!inputs.length) return; // no permission yet: the names are hidden
  const chosen = liveUi.mic.value;
  liveUi.mic.replaceChildren(...inputs.map((d) => new Option(d.label, d.deviceId)));
  if (inputs.some((d) => d.deviceId === chosen)) liveUi.mic.value = chosen;
}

// Another microphone while live: the same session, its audio track replaced.
async function switchMicrophone() {
  if (!state.pc || !state.mic) return;
  const mic = await openMicrophone();
  const sender = state.pc.getSenders().find((s) => s.track && s.track.kind === "audio");
  mic.getAudioTracks()[0].enabled = !state.muted;
  if (sender) await sender.replaceTrack(mic.getAudioTracks()[0]);
  state.mic.getTracks().forEach((track) => track.stop());
  state.mic = mic;
}

// Muted, the browser sends silence: the session and its face stay live.
function setMuted(muted) {
  state.muted = muted;
  if (state.mic) state.mic.getAudioTracks().forEach((track) => { track.enabled = !muted; });
  liveUi.mute.setAttribute("aria-pressed", String(muted));
  liveUi.mute.textContent = muted ? "Unmute" : "Mute";
}

function startStatusLine() {
  fpsSamples = [];
  ticks = 0;
  state.live = { fps: null, rttMs: null, micLevel: null, sessions: null, maxSessions: null };
  liveUi.stats.textContent = "measuring…";
  liveUi.live.hidden = false;
  state.timer = setInterval(updateStatusLine, STATS_EVERY_MS);
}

function stopStatusLine() {
  clearInterval(state.timer);
  state.timer = null;
  liveUi.live.hidden = true;
  liveUi.level.value = 0;
}

async function updateStatusLine() {
  const pc = state.pc;
  if (!pc) return;
  readStats(await pc.getStats());
  if (ticks++ % HEALTH_EVERY_TICKS === 0) await readServerLoad();
  if (pc === state.pc) showStatusLine();
}

function readStats(report) {
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") addFpsSample(s.timestamp, s.framesDecoded || 0);
    if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded"
        && s.currentRoundTripTime !== undefined) state.live.rttMs = s.currentRoundTripTime * 1000;
    if (s.type === "media-source" && s.kind === "audio" && s.audioLevel !== undefined) {
      state.live.micLevel = state.muted ? 0 : s.audioLevel;
    }
  });
}

function addFpsSample(at, frames) {
  fpsSamples = [...fpsSamples, { at, frames }].slice(-FPS_WINDOW_SAMPLES);
  const first = fpsSamples[0], last = fpsSamples[fpsSamples.length - 1];
  if (last.at > first.at) state.live.fps = ((last.frames - first.frames) * 1000) / (last.at - first.at);
}

async function readServerLoad() {
  try {
    const health = await (await fetch("/healthz", { cache: "no-store" })).json();
    Object.assign(state.live, { sessions: health.sessions, maxSessions: health.max_sessions });
  } catch (_) { /* the status line keeps its last figure; checkSession reports a gone server */ }
}

function showStatusLine() {
  const { fps, rttMs, micLevel, sessions, maxSessions } = state.live;
  const parts = [
    fps === null ? "– fps" : `${fps.toFixed(1)} fps`,
    rttMs === null ? "round trip –" : `round trip ${rttMs.toFixed(0)} ms`,
    sessions === null ? "server load –" : `server ${sessions} of ${maxSessions} sessions`,
  ];
  if (state.muted) parts.push("muted");
  liveUi.stats.textContent = parts.join(" · ");
  liveUi.level.value = micLevel || 0;
}

liveUi.mute.addEventListener("click", () => setMuted(!state.muted));
liveUi.mic.addEventListener("change", () => switchMicrophone().catch((err) => showError(err.message)));
listMicrophones().catch(() => { /* the list fills after Start */ });
if (navigator.mediaDevices) navigator.mediaDevices.addEventListener("devicechange", () => listMicrophones());
