// The "Open in OBS" panel: this session's viewer URL, a copy button, the Browser Source settings.
"use strict";

const obsUi = {
  panel: $("obs"), link: $("viewer-link"), copy: $("copy"), copyNote: $("copy-note"),
  width: $("obs-width"), height: $("obs-height"), video: $("avatar"),
};

function viewerUrl(sessionId, viewerToken) {
  const url = new URL(`/view/${encodeURIComponent(sessionId)}`, location.href);
  // the viewer token watches this session only: the link can go to OBS or another person
  if (viewerToken) url.searchParams.set("token", viewerToken);
  return url.href;
}

function showObsPanel(sessionId, viewerToken) {
  obsUi.link.href = obsUi.link.textContent = viewerUrl(sessionId, viewerToken);
  obsUi.copyNote.textContent = "";
  obsUi.panel.hidden = false;
}

function hideObsPanel() {
  obsUi.panel.hidden = true;
}

// The Browser Source should be the stream's own size: no scaling, no black bars.
function showVideoSize() {
  if (!obsUi.video.videoWidth) return;
  obsUi.width.textContent = `${obsUi.video.videoWidth}`;
  obsUi.height.textContent = `${obsUi.video.videoHeight}`;
}

async function copyViewerUrl() {
  try {
    await navigator.clipboard.writeText(obsUi.link.href);
    obsUi.copyNote.textContent = "Copied.";
  } catch (_) {
    // no clipboard access (an http page on another host): select it for Ctrl+C
    window.getSelection().selectAllChildren(obsUi.link);
    obsUi.copyNote.textContent = "Selected: press Ctrl+C (⌘C) to copy.";
  }
}

obsUi.copy.addEventListener("click", copyViewerUrl);
obsUi.video.addEventListener("resize", showVideoSize);
