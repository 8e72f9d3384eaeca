// facetrail web UI: the probe drop zone and face picker, and ingest progress refresh.
// No dependencies; every page works without it except for picking among several faces.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";

  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  function svgElement(name, attrs) {
    const el = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
    return el;
  }

  // -- probe: drop zone, detection, face picker ------------------------------------------
  function setupProbe(form) {
    const zone = form.querySelector("[data-dropzone]");
    const input = form.querySelector('input[type="file"]');
    const picker = form.querySelector("[data-picker]");
    const status = form.querySelector("[data-probe-status]");
    const faceField = form.querySelector('input[name="face"]');
    const shaField = form.querySelector('input[name="probe_sha256"]');
    const submit = form.querySelector('button[type="submit"]');

    function say(text, isError) {
      status.textContent = text;
      status.classList.toggle("status-bad", Boolean(isError));
    }

    function pick(index) {
      faceField.value = String(index);
      picker.querySelectorAll(".facebox").forEach((box) => {
        const on = box.dataset.face === String(index);
        box.classList.toggle("picked", on);
        box.setAttribute("aria-pressed", on ? "true" : "false");
      });
      // Not colour alone: the picked face's label says so (and its outline is solid).
      picker.querySelectorAll(".facebox-label").forEach((label) => {
        const on = label.dataset.face === String(index);
        label.classList.toggle("picked", on);
        label.textContent = on ? `✓ ${Number(label.dataset.face) + 1} picked` : String(Number(label.dataset.face) + 1);
      });
      say(`Face ${index + 1} selected. Fill in the case and purpose, then search.`);
      submit.disabled = false;
    }

    function draw(data) {
      shaField.value = data.sha256;
      input.required = false;  // the probe is stored: the form searches it without a file
      picker.replaceChildren();
      const svg = svgElement("svg", {
        viewBox: `0 0 ${data.width} ${data.height}`, role: "group",
        "aria-label": "Probe image: click a face to search for it",
      });
      svg.appendChild(svgElement("image", {href: data.image_url, width: data.width, height: data.height}));
      const stroke = Math.max(2, Math.round(Math.max(data.width, data.height) / 300));
      if (!data.faces.length) {
        say("No face was found in this photo. Try a clearer or larger one.", true);
        picker.appendChild(svg);
        return;
      }
      data.faces.forEach((face, i) => {
        const [x, y, w, h] = face.box;
        const box = svgElement("rect", {
          x, y, width: w, height: h, class: "facebox", tabindex: 0, role: "button",
          "data-face": i, "aria-label": `Face ${i + 1}`, "stroke-width": stroke,
        });
        box.addEventListener("click", () => pick(i));
        box.addEventListener("keydown", (ev) => {
          if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); pick(i); }
        });
        const label = svgElement("text", {
          x: x + 4, y: Math.max(y - 6, 16), class: "facebox-label", "data-face": i,
          "font-size": Math.max(14, Math.round(Math.max(data.width, data.height) / 22)),
        });
        label.textContent = String(i + 1);
        svg.append(box, label);
      });
      picker.appendChild(svg);
      if (data.faces.length === 1) pick(0);
      else say(`${data.faces.length} faces found. Click the face to search for.`);
    }

    async function detect(file) {
      faceField.value = "";
      shaField.value = "";
      submit.disabled = true;
      picker.replaceChildren();
      say("Finding faces…");
      const body = new FormData();
      body.append("file", file);
      let response;
      try {
        response = await fetch(form.dataset.probesUrl, {
          method: "POST", body, credentials: "same-origin",
          headers: {"X-CSRF-Token": csrfToken(), Accept: "application/json"},
        });
      } catch (err) {
        say(`The server could not be reached: ${err}`, true);
        return;
      }
      const data = await response.json().catch(() => ({}));
      if (!response.ok) {
        const message = data.error ? data.error.message : `error ${response.status}`;
        say(message, true);
        return;
      }
      draw(data.probe);
    }

    function useFiles(files) {
      if (!files || !files.length) return;
      if (input.files !== files) {
        const transfer = new DataTransfer();
        transfer.items.add(files[0]);
        input.files = transfer.files;
      }
      detect(input.files[0]);
    }

    input.addEventListener("change", () => useFiles(input.files));
    ["dragenter", "dragover"].forEach((name) => zone.addEventListener(name, (ev) => {
      ev.preventDefault();
      zone.classList.add("over");
    }));
    ["dragleave", "drop"].forEach((name) => zone.addEventListener(name, () => {
      zone.classList.remove("over");
    }));
    zone.addEventListener("drop", (ev) => {
      ev.preventDefault();
      useFiles(ev.dataTransfer.files);
    });
    form.addEventListener("submit", (ev) => {
      if (!faceField.value || !shaField.value) {
        ev.preventDefault();
        say("Choose a probe photo and click the face to search for.", true);
        return;
      }
      input.disabled = true;  // the probe is on the server already: do not send it again
    });
    window.addEventListener("pageshow", () => { input.disabled = false; });
    submit.disabled = true;
    if (shaField.value) restore(shaField.value, faceField.value);

    // After a refused search the page comes back with the probe it had: draw it again.
    async function restore(sha, face) {
      const response = await fetch(`${form.dataset.probesUrl}/${sha}`, {
        credentials: "same-origin", headers: {Accept: "application/json"},
      });
      if (!response.ok) { shaField.value = ""; faceField.value = ""; return; }
      draw((await response.json()).probe);
      if (face !== "") pick(Number(face));
    }
  }

  // -- ingest jobs: refresh progress until the job ends, then reload the page ---------------
  const DONE = new Set(["completed", "failed", "cancelled"]);

  function jobSummary(job) {
    const p = job.progress || {};
    const n = (key) => p[key] || 0;
    let text = `${n("items")} items: ${n("images_new")} new images, ${n("duplicates")} duplicates, ` +
      `${n("skipped")} unchanged, ${n("faces")} faces, ${n("errors")} errors`;
    if (job.error) text += `. ${job.error}`;
    return text;
  }

  function setupJob(el) {
    const bar = el.querySelector("progress");
    const text = el.querySelector("[data-job-text]");
    const status = el.querySelector("[data-job-status]");
    async function refresh() {
      const response = await fetch(el.dataset.jobUrl, {
        credentials: "same-origin", headers: {Accept: "application/json"},
      });
      if (!response.ok) return;
      const job = (await response.json()).job;
      const total = (job.progress || {}).total;
      if (total) { bar.max = total; bar.value = (job.progress || {}).items || 0; }
      text.textContent = jobSummary(job);
      status.textContent = job.status;
      if (DONE.has(job.status)) {
        // Counts and error lists have changed; the page's own notice has served.
        window.location.assign(window.location.pathname);
      } else {
        window.setTimeout(refresh, 1000);
      }
    }
    if (!DONE.has(el.dataset.status)) window.setTimeout(refresh, 1000);
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("form[data-probe-form]").forEach(setupProbe);
    document.querySelectorAll("[data-job-url]").forEach(setupJob);
  });
})();
