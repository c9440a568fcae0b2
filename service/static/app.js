// The draw-a-digit page: strokes on a transparent canvas (the service reads the alpha channel as ink), sent when a
// stroke ends. One digit: to /classify?debug=true, shown with its ten probabilities and the 28x28 the model saw.
// A number (a canvas three times as wide): to /read?debug=true, shown as the text read, each digit's box and
// confidence drawn over the drawing (or the photo), and each digit's 28x28.
"use strict";

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const digitEl = document.getElementById("digit");
const confidenceEl = document.getElementById("confidence");
const errorEl = document.getElementById("error");
const barsEl = document.getElementById("bars");
const seenEl = document.getElementById("seen");
const seenFigure = document.getElementById("seen-figure");
const digitsEl = document.getElementById("digits");
const padFrame = document.getElementById("pad-frame");
const photoFrame = document.getElementById("photo-frame");
const fileEl = document.getElementById("file");
const photoFigure = document.getElementById("photo-figure");
const photoEl = document.getElementById("photo");
const photoBox = document.getElementById("photo-box");
let photoUrl = null; // the object URL of the photo shown, revoked when another replaces it
let drawing = false;
let pending = null; // the request in flight: a newer stroke supersedes it
let answers = 0; // answers shown so far, as data-answers on <body>: tests wait on it
let mode = "digit"; // or "number"

function pen() {
  // (Resizing a canvas resets its drawing state.)
  ctx.lineWidth = 20; // about MNIST's stroke width relative to a digit's size on the 280-px-high pad
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.strokeStyle = "#000";
}
pen();

document.querySelectorAll('input[name="mode"]').forEach((input) =>
  input.addEventListener("change", () => {
    mode = input.value;
    pad.width = mode === "number" ? 840 : 280;
    pad.classList.toggle("wide", mode === "number");
    pen();
    clearAll();
  })
);

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

function clearAll() {
  ctx.clearRect(0, 0, pad.width, pad.height);
  if (pending) pending.abort();
  showPhoto(null);
  show(null);
}
document.getElementById("clear").addEventListener("click", clearAll);

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
  confidenceEl.textContent = mode === "number" ? "reading…" : "classifying…";
  // Multipart, whatever the file: the service then judges the bytes, not the browser's guess of their type.
  const form = new FormData();
  form.append("image", blob, name);
  try {
    const route = mode === "number" ? "../read?debug=true" : "../classify?debug=true";
    const response = await fetch(route, { method: "POST", body: form, signal: request.signal });
    let answer;
    try {
      answer = await response.json();
    } catch {
      answer = { error: `the service answered ${response.status} without a readable body` };
    }
    if (request !== pending) return;
    if (!response.ok) showError(answer.error || `the service answered ${response.status}`);
    else if (mode === "number") showReading(answer);
    else show(answer);
    document.body.dataset.answers = String(++answers);
  } catch (err) {
    if (err.name !== "AbortError") showError(`cannot reach the service: ${err.message}`);
  }
}

function show(answer) {
  errorEl.hidden = true;
  errorEl.textContent = "";
  barsEl.hidden = mode === "number";
  digitsEl.hidden = true;
  digitsEl.replaceChildren();
  drawNumberBoxes(null);
  const probs = answer ? answer.probabilities : new Array(10).fill(0);
  digitEl.textContent = answer ? answer.digit : "–";
  const prompt = mode === "number" ? "draw a number" : "draw a digit";
  confidenceEl.textContent = answer ? `${(answer.confidence * 100).toFixed(1)} % sure` : prompt;
  barsEl.querySelectorAll("li").forEach((li, d) => {
    li.querySelector(".bar span").style.width = `${(probs[d] * 100).toFixed(1)}%`;
    li.querySelector(".value").textContent = answer ? `${(probs[d] * 100).toFixed(1)}%` : "–";
    li.classList.toggle("top", !!answer && d === answer.digit);
  });
  // No image yet: no frame at all (an <img> without a source shows as a broken image).
  seenFigure.hidden = !(answer && answer.image);
  if (answer && answer.image) seenEl.src = `data:image/png;base64,${answer.image}`;
  else seenEl.removeAttribute("src");
  drawBox(answer && answer.box);
}

// /read's answer: the text, then each digit with its confidence and 28x28, and its box over the input.
function showReading(reading) {
  show(null);
  digitEl.textContent = reading.text;
  confidenceEl.textContent = `${(reading.confidence * 100).toFixed(1)} % sure of all ${reading.digits.length}`;
  for (const d of reading.digits) {
    const li = document.createElement("li");
    const img = document.createElement("img");
    img.src = `data:image/png;base64,${d.image}`;
    img.alt = `the 28×28 the model saw for ${d.digit}`;
    const digit = document.createElement("b");
    digit.textContent = d.digit;
    const sure = document.createElement("small");
    sure.textContent = `${(d.confidence * 100).toFixed(1)}%`;
    li.append(digit, img, sure);
    digitsEl.appendChild(li);
  }
  digitsEl.hidden = false;
  drawNumberBoxes(reading.digits);
}

// Each digit's box, in the pixels of the image sent (the canvas, or the photo upright), over what is shown of it.
function drawNumberBoxes(digits) {
  document.querySelectorAll(".number-box").forEach((box) => box.remove());
  if (!digits) return;
  const onPhoto = !photoFigure.hidden;
  const frame = onPhoto ? photoFrame : padFrame;
  const shown = onPhoto ? photoEl : pad;
  const width = onPhoto ? photoEl.naturalWidth : pad.width;
  const height = onPhoto ? photoEl.naturalHeight : pad.height;
  if (!width) {
    if (onPhoto) photoEl.addEventListener("load", () => drawNumberBoxes(digits), { once: true });
    return;
  }
  const inner = shown.getBoundingClientRect();
  const outer = frame.getBoundingClientRect();
  const sx = shown.clientWidth / width;
  const sy = shown.clientHeight / height;
  const dx = inner.left - outer.left + shown.clientLeft;
  const dy = inner.top - outer.top + shown.clientTop;
  for (const d of digits) {
    const [left, top, right, bottom] = d.box;
    const box = document.createElement("div");
    box.className = "number-box";
    Object.assign(box.style, {
      left: `${dx + left * sx}px`,
      top: `${dy + top * sy}px`,
      width: `${(right - left) * sx}px`,
      height: `${(bottom - top) * sy}px`,
    });
    const label = document.createElement("span");
    label.textContent = `${d.digit} · ${(d.confidence * 100).toFixed(0)}%`;
    box.appendChild(label);
    frame.appendChild(box);
  }
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
  if (mode === "number" || !box || photoFigure.hidden || !photoEl.naturalWidth) {
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
