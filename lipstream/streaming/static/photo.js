// The face that will talk, shown before Start: the server's analysed crop of the default face or
// of the chosen photo (uploaded as soon as it is chosen or dropped), or the server's reason the
// photo cannot be used.
"use strict";

const DEFAULT_NOTE = "The default face talks unless you choose a photo.";
const photoUi = {
  input: $("photo"), useDefault: $("use-default"), note: $("photo-note"), stage: $("stage"),
  preview: $("preview"), stageNote: $("stage-note"),
};

function sayPhoto(text, problem) {
  photoUi.note.textContent = text;
  photoUi.note.classList.toggle("problem", Boolean(problem));
}

// Fetch the crop with the token (an <img src> cannot send one) and show it.
async function showPreview(avatarId) {
  const url = `/v1/avatars/${encodeURIComponent(avatarId || "default")}/preview`;
  const response = await fetch(url, { headers: authHeaders() });
  if (!response.ok) {
    state.previewShown = false;
    photoUi.preview.hidden = true;
    photoUi.stageNote.textContent = response.status === 401
      ? "This server needs its token to show the face: press Start and give it."
      : `The face cannot be shown: ${await errorOf(response)}`;
    return;
  }
  if (photoUi.preview.src) URL.revokeObjectURL(photoUi.preview.src);
  photoUi.preview.src = URL.createObjectURL(await response.blob());
  photoUi.preview.hidden = false;
  photoUi.stageNote.textContent = "";
  state.previewShown = true;
}

async function choosePhoto(file) {
  Object.assign(state, { avatarId: null, photoProblem: null, uploading: true });
  photoUi.useDefault.hidden = false;
  sayPhoto(`Analysing ${file.name}…`);
  refreshButtons();
  try {
    // the server refuses other types too, but in words for a developer (the Content-Type)
    if (file.type && !file.type.startsWith("image/")) {
      throw new Error("it is not an image (a JPEG, PNG or WebP photo)");
    }
    const response = await authorizedFetch("/v1/avatars", {
      method: "POST", headers: { "Content-Type": file.type || "application/octet-stream" }, body: file,
    });
    if (!response.ok) throw new Error(await errorOf(response));
    state.avatarId = (await response.json()).id;
    await showPreview(state.avatarId);
    sayPhoto(`${file.name}: this face talks when you press Start.`);
  } catch (err) {
    state.photoProblem = err.message || String(err);
    photoUi.preview.hidden = true;
    photoUi.stageNote.textContent = "This photo cannot be used.";
    const what = `${file.name} cannot be used: ${state.photoProblem}.`;
    sayPhoto(`${what} Choose another photo, or use the default face.`, true);
  } finally {
    state.uploading = false;
    refreshButtons();
  }
}

function useDefaultFace() {
  Object.assign(state, { avatarId: null, photoProblem: null });
  photoUi.input.value = "";
  photoUi.useDefault.hidden = true;
  sayPhoto(DEFAULT_NOTE);
  refreshButtons();
  return showPreview(null);
}

// The whole face area takes a dropped photo; the file picker stays the keyboard's way in.
function acceptDrops(zone) {
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dropping");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dropping"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dropping");
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file && !state.pc) choosePhoto(file);
  });
}

photoUi.input.addEventListener("change", () => {
  const file = photoUi.input.files[0];
  if (file) choosePhoto(file);
});
photoUi.useDefault.addEventListener("click", useDefaultFace);
acceptDrops(photoUi.stage);
