// The draw-a-digit page: strokes on a transparent canvas (the service reads the alpha channel as ink), sent to
// /classify?debug=true when a stroke ends; the answer, its ten probabilities and the 28x28 the model saw.
"use strict";

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const digitEl = document.getElementById("digit");
const confidenceEl = document.getElementById("confidence");
const errorEl = document.getElementById("error");
const barsEl = document.getElementById("bars");
const seenEl = document.getElementById("seen");
const fileEl = document.getElementById("file");
const photoFigure = document.getElementById("photo-figure");
const photoEl = document.getElementById("photo");
const photoBox = document.getElementById("photo-box");
let photoUrl = null; // the object URL of the photo shown, revoked when another replaces it
let drawing = false;
let pending = null; // the request in flight: a newer stroke supersedes it
let answers = 0; // answers shown so far, as data-answers on <body>: tests wait on it

ctx.lineWidth = 20; // about MNIST's stroke width relative to the digit's size
ctx.lineCap = "round";
ctx.lineJoin = "round";
ctx.strokeStyle = "#000";

for (let d = 0; d < 10; d++) {
  const li = document.createElement("li");
  li.innerHTML = `<span>${d}</span><div class="bar"><span style="width:0"></span></div><span class="value">–</span>`;
  barsEl.appendChild(li);
}

function point(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * (pad.width / box.width), (event.clientY - box.top) * (pad.height / box.height)];
}

pad.addEventListener("pointerdown", (event) => {
  drawing = true;
  pad.setPointerCapture(event.pointerId);
  const [x, y] = point(event);
  ctx.beginPath();
  ctx.moveTo(x, y);
  ctx.lineTo(x, y); // a tap leaves a dot
  ctx.stroke();
});
pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  for (const e of event.getCoalescedEvents ? event.getCoalescedEvents() : [event]) {
    const [x, y] = point(e);
    ctx.lineTo(x, y);
  }
  ctx.stroke();
});
function endStroke() {
  if (!drawing) return;
  drawing = false;
  showPhoto(null);
  pad.toBlob((blob) => classify(blob, "drawing.png"), "image/png");
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

document.getElementById("clear").addEventListener("click", () => {
  ctx.clearRect(0, 0, pad.width, pad.height);
  if (pending) pending.abort();
  showPhoto(null);
  show(null);
});

fileEl.addEventListener("change", () => {
  const file = fileEl.files[0];
  if (file) {
    showPhoto(file);
    classify(file, file.name);
  }
  fileEl.value = ""; // picking the same file again classifies it again
});

async function classify(blob, name) {
  if (pending) pending.abort();
  const request = (pending = new AbortController());
  confidenceEl.textContent = "classifying…";
  // Multipart, whatever the file: the service then judges the bytes, not the browser's guess of their type.
  const form = new FormData();
  form.append("image", blob, name);
  try {
    const response = await fetch("../classify?debug=true", { method: "POST", body: form, signal: request.signal });
    let answer;
    try {
      answer = await response.json();
    } catch {
      answer = { error: `the service answered ${response.status} without a readable body` };
    }
    if (request !== pending) return;
    if (!response.ok) showError(answer.error || `the service answered ${response.status}`);
    else show(answer);
    document.body.dataset.answers = String(++answers);
  } catch (err) {
    if (err.name !== "AbortError") showError(`cannot reach the service: ${err.message}`);
  }
}

function show(answer) {
  errorEl.hidden = true;
  errorEl.textContent = "";
  const probs = answer ? answer.probabilities : new Array(10).fill(0);
  digitEl.textContent = answer ? answer.digit : "–";
  confidenceEl.textContent = answer ? `${(answer.confidence * 100).toFixed(1)} % sure` : "draw a digit";
  barsEl.querySelectorAll("li").forEach((li, d) => {
    li.querySelector(".bar span").style.width = `${(probs[d] * 100).toFixed(1)}%`;
    li.querySelector(".value").textContent = answer ? `${(probs[d] * 100).toFixed(1)}%` : "–";
    li.classList.toggle("top", !!answer && d === answer.digit);
  });
  if (answer && answer.image) seenEl.src = `data:image/png;base64,${answer.image}`;
  else seenEl.removeAttribute("src");
  drawBox(answer && answer.box);
}

// A thumbnail of the photo sent (browsers that cannot show its format, such as HEIC, show none).
function showPhoto(file) {
  if (photoUrl) URL.revokeObjectURL(photoUrl);
  photoUrl = file ? URL.createObjectURL(file) : null;
  photoBox.hidden = true;
  photoFigure.hidden = !file;
  if (file) photoEl.src = photoUrl;
  else photoEl.removeAttribute("src");
}
photoEl.addEventListener("error", () => (photoFigure.hidden = true));

// The answer's box is in the full photo's pixels, upright (as the browser shows it): scale it to the thumbnail.
function drawBox(box) {
  if (!box || photoFigure.hidden || !photoEl.naturalWidth) {
    photoBox.hidden = true;
    if (box && !photoFigure.hidden) photoEl.addEventListener("load", () => drawBox(box), { once: true });
    return;
  }
  const [left, top, right, bottom] = box;
  const sx = photoEl.width / photoEl.naturalWidth;
  const sy = photoEl.height / photoEl.naturalHeight;
  Object.assign(photoBox.style, {
    left: `${left * sx}px`,
    top: `${top * sy}px`,
    width: `${(right - left) * sx}px`,
    height: `${(bottom - top) * sy}px`,
  });
  photoBox.hidden = false;
}

function showError(message) {
  show(null);
  digitEl.textContent = "?";
  confidenceEl.textContent = "";
  errorEl.textContent = message;
  errorEl.hidden = false;
}
