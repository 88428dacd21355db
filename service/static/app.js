// The upload page: send the chosen image to /preprocess and /predict, show what comes back.
"use strict";

const input = document.getElementById("image-input");
const invert = document.getElementById("invert-select");
const dropzone = document.getElementById("dropzone");
const statusLine = document.getElementById("status");
const errorLine = document.getElementById("error");
const result = document.getElementById("result");
const original = document.getElementById("original");
const originalFigure = document.getElementById("original-figure");
const modelInput = document.getElementById("model-input");
const label = document.getElementById("label");
const confidence = document.getElementById("confidence");
const bars = document.getElementById("bars");

let currentFile = null;
let objectUrls = [];
let latestRequest = 0;

/** Format a probability as a percentage with one decimal. */
function percent(p) {
  return `${(p * 100).toFixed(1)}%`;
}

/** Build the multipart body both endpoints take: the file and the invert choice. */
function formFor(file) {
  const data = new FormData();
  data.append("image", file);
  data.append("invert", invert.value);
  return data;
}

/** Turn an error response into plain words, from the problem document's detail. */
async function problemText(response) {
  try {
    const problem = await response.json();
    if (problem.detail) return problem.detail;
  } catch (ignored) {
    // Not JSON (a proxy's error page, say): fall back to the status line.
  }
  return `The server answered ${response.status} ${response.statusText}.`;
}

/** Forget the previous image URLs, so repeated uploads do not keep old files in memory. */
function releaseUrls() {
  objectUrls.forEach((url) => URL.revokeObjectURL(url));
  objectUrls = [];
}

/** Show a URL for a blob in an image element. */
function showBlob(img, blob) {
  const url = URL.createObjectURL(blob);
  objectUrls.push(url);
  img.src = url;
}

/** Draw one row per class: name, bar, percentage; the predicted class stands out. */
function drawBars(probabilities, predicted) {
  bars.replaceChildren();
  for (const [name, p] of Object.entries(probabilities)) {
    const row = document.createElement("li");
    row.className = name === predicted ? "bar top" : "bar";
    const nameCell = document.createElement("span");
    nameCell.className = "bar-name";
    nameCell.textContent = name;
    const track = document.createElement("span");
    track.className = "bar-track";
    track.setAttribute("aria-hidden", "true");
    const fill = document.createElement("span");
    fill.className = "bar-fill";
    fill.style.width = `${Math.max(0, Math.min(1, p)) * 100}%`;
    track.append(fill);
    const value = document.createElement("span");
    value.className = "bar-value";
    value.textContent = percent(p);
    row.append(nameCell, track, value);
    bars.append(row);
  }
}

/** Show an error in plain words and hide any earlier result. */
function showError(message) {
  result.hidden = true;
  statusLine.textContent = "";
  errorLine.textContent = message;
  errorLine.hidden = false;
}

/** Send the file to both endpoints and show the model's input and prediction. */
async function classify(file) {
  const request = ++latestRequest;
  currentFile = file;
  errorLine.hidden = true;
  statusLine.textContent = `Classifying ${file.name}…`;
  let preprocessed;
  let predicted;
  try {
    [preprocessed, predicted] = await Promise.all([
      fetch("/preprocess", { method: "POST", body: formFor(file) }),
      fetch("/predict", { method: "POST", body: formFor(file) }),
    ]);
  } catch (error) {
    if (request === latestRequest) {
      showError(`The service could not be reached (${error.message}).`);
    }
    return;
  }
  // A newer choice (another file, another background) may have answered first: it wins.
  if (request !== latestRequest) return;
  for (const response of [preprocessed, predicted]) {
    if (!response.ok) {
      showError(`${file.name} could not be classified: ${await problemText(response)}`);
      return;
    }
  }
  const body = await predicted.json();
  const png = await preprocessed.blob();
  if (request !== latestRequest) return;
  const prediction = body.predictions[0];
  releaseUrls();
  originalFigure.hidden = false;
  original.alt = `Your upload, ${file.name}`;
  showBlob(original, file);
  showBlob(modelInput, png);
  label.textContent = prediction.label;
  confidence.textContent = `${percent(prediction.confidence)} likely`;
  drawBars(prediction.probabilities, prediction.label);
  result.hidden = false;
  statusLine.textContent =
    `Classified ${file.name} with model ${body.model.name}, version ${body.model.version}.`;
}

input.addEventListener("change", () => {
  if (input.files.length > 0) classify(input.files[0]);
});

invert.addEventListener("change", () => {
  if (currentFile) classify(currentFile);
});

// Some formats (TIFF) classify fine but are not shown by every browser.
original.addEventListener("error", () => {
  originalFigure.hidden = true;
});

// Dropping anywhere on the page works; the drop zone lights up while a file hovers.
document.addEventListener("dragover", (event) => {
  event.preventDefault();
  dropzone.classList.add("dragging");
});
document.addEventListener("dragleave", (event) => {
  if (event.relatedTarget === null) dropzone.classList.remove("dragging");
});
document.addEventListener("drop", (event) => {
  event.preventDefault();
  dropzone.classList.remove("dragging");
  const file = event.dataTransfer && event.dataTransfer.files[0];
  if (file) classify(file);
  else showError("Nothing to classify: drop an image file.");
});
