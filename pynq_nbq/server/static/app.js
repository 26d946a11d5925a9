// nbq serve: the upload page.  Sends the image as multipart field "image" to
// POST /v1/classify and shows the answer, the timings and the power block.
"use strict";

const $ = (id) => document.getElementById(id);

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
}

function fill(tbodySel, rows) {
  const body = document.querySelector(tbodySel);
  body.replaceChildren();
  for (const [k, v] of rows) {
    const tr = body.insertRow();
    cell(tr, k);
    cell(tr, v, "num");
  }
}

function showError(msg) {
  const e = $("error");
  e.textContent = msg;
  e.hidden = !msg;
}

function powerText(p) {
  const parts = [];
  const m = p.measured || {};
  if (m.available) {
    parts.push(`measured: total ${m.total_w.toFixed(3)} W (PS ${m.ps_w.toFixed(3)}, ` +
      `PL ${m.pl_w.toFixed(3)}, DDR ${m.ddr_w.toFixed(3)}), reading ${m.age_s.toFixed(2)} s old`);
    if (m.energy_per_image_mj != null) {
      parts.push(`measured energy per image: ${m.energy_per_image_mj.toFixed(3)} mJ ` +
        `(${m.images_in_window} images in ${m.energy_window_s} s)`);
    }
  } else {
    parts.push(`measured: unavailable (${m.reason || "no reason given"})`);
  }
  const md = p.modelled || {};
  if (md.available) {
    parts.push(`MODELLED (not measured): ${md.energy_mj.toFixed(4)} mJ per image, ` +
      `${md.power_w.toFixed(2)} W, ${md.latency_ms.toFixed(4)} ms on ${md.board} ${md.pe}`);
  }
  return parts;
}

async function classify(file) {
  showError("");
  $("label").textContent = "…";
  $("preview").src = URL.createObjectURL(file);
  $("preview").hidden = false;
  const form = new FormData();
  form.append("image", file, file.name);
  let body;
  try {
    const resp = await fetch("/v1/classify", { method: "POST", body: form });
    body = await resp.json();
    if (!resp.ok) throw new Error(body.error || `HTTP ${resp.status}`);
  } catch (err) {
    $("label").textContent = "–";
    showError(String(err.message || err));
    return;
  }
  $("label").textContent = body.label;
  fill("#topk tbody", body.top_k.map((t) => [t.label, t.probability.toFixed(4)]));
  fill("#timings tbody", Object.entries(body.timings_ms).map(([k, v]) => [k, v.toFixed(3)]));
  const power = $("power");
  power.replaceChildren();
  for (const line of powerText(body.power)) {
    const p = document.createElement("p");
    p.textContent = line;
    if (line.startsWith("MODELLED")) p.className = "modelled";
    power.appendChild(p);
  }
}

async function loadModel() {
  try {
    const m = await (await fetch("/v1/model")).json();
    $("model").textContent = `model ${m.id} (${m.datapath}, ${m.weight_bits}-bit weights, ` +
      `${m.classes.length} classes) on the ${m.backend} backend`;
  } catch (err) {
    $("model").textContent = "model information unavailable";
  }
}

$("file").addEventListener("change", (ev) => {
  if (ev.target.files.length) classify(ev.target.files[0]);
});
const drop = $("drop");
drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (ev) => {
  ev.preventDefault();
  drop.classList.remove("over");
  if (ev.dataTransfer.files.length) classify(ev.dataTransfer.files[0]);
});
loadModel();
