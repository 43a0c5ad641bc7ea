"""The demo page served at ``GET /``: plain HTML and a few lines of JavaScript, no build step, nothing fetched
from anywhere but this server (its Content-Security-Policy forbids it).

Pick or drop an image, set the threshold; the page posts the image to the service's own endpoint (the PaddleX
API, as any client would), then shows the drawing, a table of the detections and the JSON answer.
"""
from __future__ import annotations

import html

from .schemas import INFER_ENDPOINT

# What the page may load: itself (its inline script and style), data: images, and requests to this server.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                           "img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'")

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>PP-YOLOE+ SOD demo</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 70em; padding: 0 1em; color: #222; }
  h1 { font-size: 1.35em; margin: 0 0 .2em; }
  .muted { color: #666; }
  #drop { border: 2px dashed #999; border-radius: 8px; padding: 1.2em; margin: 1em 0; text-align: center; }
  #drop.over { border-color: #06f; background: #eef4ff; }
  .controls { display: flex; gap: 1.2em; align-items: center; flex-wrap: wrap; }
  #threshold { width: 5em; }
  #status.error { color: #b00020; }
  .result { display: flex; gap: 1.5em; flex-wrap: wrap; align-items: flex-start; margin-top: 1em; }
  #drawing { max-width: 100%; max-height: 70vh; border: 1px solid #ccc; }
  #drawing:not([src]) { display: none; }
  table { border-collapse: collapse; font-size: 13px; }
  th, td { border-bottom: 1px solid #ddd; padding: .15em .6em; text-align: right; }
  th:nth-child(2), td:nth-child(2) { text-align: left; }
  pre { background: #f6f6f6; padding: .8em; overflow: auto; max-height: 22em; font-size: 12px; }
</style>
</head>
<body>
<h1>PP-YOLOE+ SOD: small-object detection</h1>
<p class="muted">Model <b>{{MODEL}}</b>. The image is sent to <code>POST {{ENDPOINT}}</code>, the PaddleX
serving API this server speaks.</p>
<div id="drop">Drop an image here, or <input type="file" id="file" accept="image/*"></div>
<div class="controls">
  <label>Score threshold <input type="number" id="threshold" min="0" max="1" step="0.05" value="{{THRESHOLD}}"
    placeholder="server's"></label>
  <button id="detect" disabled>Detect</button>
  <span id="status" role="status"></span>
</div>
<div class="result">
  <img id="drawing" alt="the image with the detections drawn">
  <table id="boxes" hidden>
    <thead><tr><th>#</th><th>class</th><th>score</th><th>x1</th><th>y1</th><th>x2</th><th>y2</th></tr></thead>
    <tbody></tbody>
  </table>
</div>
<pre id="json" hidden></pre>
<script>
"use strict";
const ENDPOINT = "{{ENDPOINT}}";
const $ = (id) => document.getElementById(id);
let chosen = null;

function say(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function choose(file) {
  if (!file) return;
  chosen = file;
  $("detect").disabled = false;
  detect();
}

function errorText(answer) {  // a 422's errorMsg is a JSON list of {type, loc, msg}
  try {
    const list = JSON.parse(answer.errorMsg);
    if (Array.isArray(list)) return list.map((e) => e.loc + ": " + e.msg).join("; ");
  } catch (e) { /* a plain message */ }
  return answer.errorMsg;
}

function readBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function showBoxes(objects) {
  const body = $("boxes").tBodies[0];
  body.replaceChildren();
  objects.forEach((o, i) => {
    const cells = [i + 1, o.categoryName, o.score.toFixed(3), ...o.bbox.map((v) => v.toFixed(1))];
    const row = body.insertRow();
    cells.forEach((c) => { row.insertCell().textContent = c; });
  });
  $("boxes").hidden = false;
}

async function detect() {
  if (!chosen) return;
  document.body.dataset.state = "running";
  say("detecting...");
  const text = $("threshold").value.trim();
  const payload = { image: await readBase64(chosen), visualize: true,
                    threshold: text === "" ? null : Number(text) };
  try {
    const response = await fetch(ENDPOINT, { method: "POST", headers: { "Content-Type": "application/json" },
                                             body: JSON.stringify(payload) });
    const answer = await response.json();
    const shown = structuredClone(answer);
    if (shown.result && shown.result.image) shown.result.image = "<" + shown.result.image.length + " base64 chars>";
    $("json").textContent = JSON.stringify(shown, null, 2);
    $("json").hidden = false;
    if (answer.errorCode !== 0) throw new Error(errorText(answer));
    $("drawing").src = "data:image/jpeg;base64," + answer.result.image;
    showBoxes(answer.result.detectedObjects);
    const n = answer.result.detectedObjects.length;
    say(n + (n === 1 ? " object" : " objects") + " found");
    document.body.dataset.state = "done";
  } catch (err) {
    say("error: " + err.message, true);
    document.body.dataset.state = "error";
  }
}

$("file").addEventListener("change", (e) => choose(e.target.files[0]));
$("detect").addEventListener("click", detect);
$("threshold").addEventListener("change", detect);
const drop = $("drop");
["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => {
  e.preventDefault(); drop.classList.add("over"); }));
["dragleave", "drop"].forEach((t) => drop.addEventListener(t, () => drop.classList.remove("over")));
drop.addEventListener("drop", (e) => { e.preventDefault(); choose(e.dataTransfer.files[0]); });
</script>
</body>
</html>
"""


def demo_page(model_name: str, threshold: float | None) -> str:
    """The page for this server: its model's name, and its threshold as the field's start value (empty when
    the server's threshold is per class: the field left empty sends null, meaning the server's)."""
    values = {"{{MODEL}}": html.escape(model_name), "{{ENDPOINT}}": INFER_ENDPOINT,
              "{{THRESHOLD}}": "" if threshold is None else f"{threshold:g}"}
    page = _PAGE
    for placeholder, value in values.items():
        page = page.replace(placeholder, value)
    return page
