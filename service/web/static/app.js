// The page: pick a photo or a video and an engine, queue a job, follow it, compare and download
// the result.
"use strict";

const JOB_POLL_MS = 500;
const STATUS_POLL_MS = 2000;
const HINT_MODELS = new Set(["siggraph17"]);
const REFERENCE_MODELS = new Set(["exemplar"]);
// Chosen by type, or by name where the system gives none (MOV often comes without one); the
// service decides by the file's signature either way.
const VIDEO_NAME = /\.(mp4|m4v|mov|webm|mkv)$/i;
const ABOUT = {
  eccv16: "Automatic colours (Zhang et al., ECCV 2016).",
  siggraph17: "Automatic colours, steered by colour hints you place on the photo.",
  exemplar: "Colours taken from a reference photo you provide.",
  ddcolor: "DDColor (Kang et al., ICCV 2023): vivid, natural colours; slower, best on a GPU.",
  "ddcolor-artistic": "DDColor tuned for bolder, more saturated colours.",
  "ddcolor-tiny": "DDColor's small model: close to DDColor's colours at a fraction of the cost.",
};

// The key lives only in this variable, never in localStorage or a cookie: closing or reloading
// the tab forgets it, and no other page of this origin can read it back.
let apiKey = null;
let keyNeeded = false;
let models = [];
let chosen = null; // the photo or video: {file, url, kind, width, height}; 0 when not shown
let inFlight = null; // what the job being followed was made from: its preview URL stays valid
let reference = null; // {file, url}
let hints = []; // [{x, y, color}] in the photo's own pixels
let resultUrl = null;
let jobToken = 0; // a newer submission stops the polling of the older one
let currentJob = null;

const $ = (id) => document.getElementById(id);

class ServiceError extends Error {
  constructor(status, body, retryAfter) {
    super(body.detail || body.error || `HTTP ${status}`);
    this.status = status;
    this.code = body.error || "";
    this.detail = body.detail || "";
    this.retryAfter = retryAfter;
  }
}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const sentKey = apiKey;
  if (sentKey !== null) headers.set("Authorization", `Bearer ${sentKey}`);
  let response;
  try {
    response = await fetch(path, { ...options, headers, cache: "no-store" });
  } catch {
    throw new ServiceError(0, { error: "network", detail: "the service could not be reached" });
  }
  if (response.ok) return response;
  let body = { error: "error", detail: response.statusText };
  try {
    body = await response.json();
  } catch {
    // Not our JSON (a proxy's page, say): keep the status text.
  }
  if (response.status === 401) askForKey(sentKey);
  throw new ServiceError(response.status, body, response.headers.get("Retry-After"));
}

function sentence(detail) {
  const text = String(detail || "").trim().replace(/\.$/, "");
  return text ? `${text}.` : "";
}

// `kind` is what was sent: "image" (a photo) or "video".
function explain(err, kind = "image") {
  if (!(err instanceof ServiceError)) return `Something went wrong in the page: ${err.message}`;
  const detail = sentence(err.detail);
  const noun = kind === "video" ? "video" : "photo";
  switch (err.status) {
    case 0:
      if (err.code === "upload_cut") {
        return (
          "The connection closed while the video was being sent: the service may have refused " +
          "it at once (a video over its size limit is), or the network dropped. Try again; if " +
          "it happens again, try a shorter or smaller video."
        );
      }
      return "The service could not be reached. Check the connection and try again.";
    case 400:
      return `The request was not accepted: ${detail}`;
    case 401:
      return "This service needs an API key. Enter it above, then try again.";
    case 413:
      return `The ${noun} is too large: ${detail}`;
    case 415:
      return `That file is not in a format the service accepts: ${detail}`;
    case 422:
      return `The service could not read that ${kind === "video" ? "video" : "image"}: ${detail}`;
    case 503: {
      const seconds = Number.parseInt(err.retryAfter || "", 10);
      const when = Number.isFinite(seconds) ? `try again in ${seconds} s` : "try again shortly";
      return `The service is busy, ${when}. (${detail})`;
    }
    case 504:
      return `The ${noun} took too long to colorize: ${detail}`;
    case 507:
      return `The device ran out of memory for this ${noun}: ${detail} Try a smaller ${noun}.`;
    default:
      return `The service answered ${err.status}: ${detail}`;
  }
}

function say(text) {
  // Re-setting the same text would make screen readers announce it again on every poll.
  const node = $("job-status");
  if (node.textContent !== text) node.textContent = text;
}

function fail(text) {
  $("error").textContent = text;
}

// --- API key ------------------------------------------------------------------------------------

function askForKey(sentKey) {
  // Answers to requests sent before the user typed a new key must not discard the new one.
  if (sentKey !== apiKey) return;
  keyNeeded = true;
  apiKey = null;
  const section = $("key-section");
  if (sentKey !== null) {
    $("key-message").textContent = "That key was not accepted. Check it and enter it again.";
  } else if (section.hidden) {
    $("key-message").textContent = "This service asks for an API key.";
  }
  if (!models.length) $("model").replaceChildren(new Option("Enter the API key first", ""));
  if (section.hidden) {
    section.hidden = false;
    $("api-key").focus();
  }
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("api-key");
  apiKey = input.value.trim();
  input.value = "";
  keyNeeded = false;
  $("key-section").hidden = true;
  fail("");
  loadModels();
  refreshStatus();
});

// --- Engines ------------------------------------------------------------------------------------

async function loadModels() {
  try {
    models = await (await api("/v1/models")).json();
  } catch (err) {
    if (err.status !== 401) fail(`The engines could not be listed. ${explain(err)}`);
    return;
  }
  const select = $("model");
  const previous = select.value;
  select.replaceChildren();
  const reasons = $("model-reasons");
  reasons.replaceChildren();
  for (const m of models) {
    const option = new Option(`${m.name}${m.ready ? "" : " (not ready)"}`, m.name);
    option.disabled = !m.ready;
    select.append(option);
    if (!m.ready) {
      const item = document.createElement("li");
      item.textContent = `${m.name} is not ready: ${m.reason || "not loaded"}`;
      reasons.append(item);
    }
  }
  const ready = models.filter((m) => m.ready).map((m) => m.name);
  if (ready.includes(previous)) select.value = previous;
  else if (ready.length) select.value = ready[0];
  else fail("No engine is ready; see the reasons under the engine list.");
  modelChanged();
}

function isVideo() {
  return chosen !== null && chosen.kind === "video";
}

// Hints are placed on a photo: a video is coloured without them.
function takesHints(name) {
  return HINT_MODELS.has(name) && !isVideo();
}

function modelChanged() {
  const name = $("model").value;
  $("model-note").textContent = ABOUT[name] || "";
  $("reference-drop").hidden = !REFERENCE_MODELS.has(name);
  $("hints").hidden = !takesHints(name);
  $("stage").classList.toggle("pickable", takesHints(name));
  showRenderSize(models.find((m) => m.name === name));
  drawHints();
}

// Engines that render at a size the request chooses (DDColor) get the render-size control,
// its range and default from /v1/models; the largest that fits memory now caps it.
function showRenderSize(info) {
  const sizes = info && info.render_size;
  $("render-field").hidden = !sizes;
  if (!sizes) return;
  const input = $("render-size");
  const top = sizes.largest_fitting === null ? sizes.maximum : Math.min(sizes.maximum, sizes.largest_fitting);
  input.min = String(sizes.minimum);
  input.max = String(top);
  input.step = String(sizes.multiple);
  const current = Number(input.value);
  if (!input.value || current < sizes.minimum || current > top) input.value = String(sizes.default);
  $("render-help").textContent =
    `The side of the square the engine colours at: ${sizes.minimum} to ${top}, in steps of ` +
    `${sizes.multiple} (default ${sizes.default}). Larger gives finer colour detail and takes ` +
    `about the square as long.`;
}

function renderSizeWanted(info) {
  if (!info || !info.render_size) return null;
  const value = $("render-size").value.trim();
  return value === "" ? null : value;
}

$("model").addEventListener("change", modelChanged);

// --- Photo or video, reference, drop zones ------------------------------------------------------

function kindOf(file) {
  return file.type.startsWith("video/") || VIDEO_NAME.test(file.name) ? "video" : "image";
}

function setChosen(file) {
  // The file of a job still being followed keeps its URL: its result is shown beside it.
  if (chosen && chosen !== inFlight) URL.revokeObjectURL(chosen.url);
  const kind = kindOf(file);
  chosen = { file, kind, url: URL.createObjectURL(file), width: 0, height: 0 };
  hints = [];
  fail("");
  $("result-figure").hidden = true;
  $("video-figure").hidden = true;
  $("result-video").pause();
  const img = $("preview");
  const clip = $("preview-video");
  $("preview-note").textContent = "";
  $("photo-caption").textContent = kind === "video" ? "Your video" : "Your photo";
  $("stage").hidden = kind === "video";
  clip.hidden = kind !== "video";
  if (kind === "video") {
    img.removeAttribute("src");
    clip.setAttribute("aria-label", `Your video, ${file.name}`);
    clip.src = chosen.url;
  } else {
    clip.removeAttribute("src");
    clip.load(); // lets go of the previous video
    img.alt = `Your photo, ${file.name}`;
    img.src = chosen.url;
  }
  $("stabilize-field").hidden = kind !== "video";
  $("photo-figure").hidden = false;
  $("empty").hidden = true;
  modelChanged();
}

$("preview").addEventListener("load", () => {
  if (!isVideo()) {
    const img = $("preview");
    chosen.width = img.naturalWidth;
    chosen.height = img.naturalHeight;
    $("preview-note").textContent = `${chosen.width} × ${chosen.height} pixels`;
  }
});

$("preview-video").addEventListener("loadedmetadata", () => {
  const clip = $("preview-video");
  if (!isVideo()) return;
  chosen.width = clip.videoWidth;
  chosen.height = clip.videoHeight;
  const seconds = Number.isFinite(clip.duration) ? `, ${duration(clip.duration)}` : "";
  $("preview-note").textContent = `${chosen.width} × ${chosen.height} pixels${seconds}`;
});

function cannotShow() {
  // Still let it be sent: the service says precisely what is wrong with it.
  $("preview-note").textContent = "This browser cannot show that file; the service will check it.";
}

$("preview").addEventListener("error", () => {
  if (chosen && !isVideo()) cannotShow();
});
$("preview-video").addEventListener("error", () => {
  if (isVideo()) cannotShow();
});

function setReference(file) {
  if (reference) URL.revokeObjectURL(reference.url);
  reference = { file, url: URL.createObjectURL(file) };
  const thumb = $("reference-preview");
  thumb.alt = `Colour reference, ${file.name}`;
  thumb.src = reference.url;
  thumb.hidden = false;
}

function dropZone(zone, input, accept) {
  input.addEventListener("change", () => {
    if (input.files.length) accept(input.files[0]);
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const files = event.dataTransfer.files;
    if (!files.length) return;
    input.files = files;
    accept(files[0]);
  });
}

dropZone($("image-drop"), $("image"), setChosen);
dropZone($("reference-drop"), $("reference"), setReference);
// A file dropped next to a zone would otherwise replace the page with the file.
window.addEventListener("dragover", (event) => event.preventDefault());
window.addEventListener("drop", (event) => event.preventDefault());

// --- Hints --------------------------------------------------------------------------------------

function clamp(value, low, high) {
  return Math.min(high, Math.max(low, value));
}

function addHint(x, y) {
  hints.push({ x, y, color: $("hint-color").value });
  drawHints();
}

$("preview").addEventListener("click", (event) => {
  if (!takesHints($("model").value) || !chosen || !chosen.width) return;
  // The photo is shown scaled: convert the click to the photo's own pixels.
  const box = event.currentTarget.getBoundingClientRect();
  const x = Math.floor(((event.clientX - box.left) * chosen.width) / box.width);
  const y = Math.floor(((event.clientY - box.top) * chosen.height) / box.height);
  addHint(clamp(x, 0, chosen.width - 1), clamp(y, 0, chosen.height - 1));
});

$("add-hint").addEventListener("click", () => {
  if (!chosen || !chosen.width) {
    fail("Choose a photo first, then add hints.");
    return;
  }
  addHint(Math.floor(chosen.width / 2), Math.floor(chosen.height / 2));
  $("hint-list").lastElementChild.querySelector("input").focus();
});

$("clear-hints").addEventListener("click", () => {
  hints = [];
  drawHints();
});

function numberField(text, value, max, onChange) {
  const label = document.createElement("label");
  label.textContent = `${text} `;
  const input = document.createElement("input");
  input.type = "number";
  input.min = "0";
  input.max = String(max);
  input.value = String(value);
  input.addEventListener("change", () => {
    const parsed = Number.parseInt(input.value, 10);
    onChange(clamp(Number.isFinite(parsed) ? parsed : 0, 0, max));
  });
  label.append(input);
  return label;
}

function drawHints() {
  const list = $("hint-list");
  const markers = $("markers");
  list.replaceChildren();
  markers.replaceChildren();
  if (!takesHints($("model").value) || !chosen) return;
  hints.forEach((hint, index) => {
    const item = document.createElement("li");
    const color = document.createElement("input");
    color.type = "color";
    color.value = hint.color;
    color.setAttribute("aria-label", `Hint ${index + 1} colour`);
    color.addEventListener("input", () => {
      hint.color = color.value;
      drawMarkers();
    });
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "Remove";
    remove.setAttribute("aria-label", `Remove hint ${index + 1}`);
    remove.addEventListener("click", () => {
      hints.splice(index, 1);
      drawHints();
    });
    item.append(
      color,
      numberField("x", hint.x, Math.max(0, chosen.width - 1), (v) => {
        hint.x = v;
        drawMarkers();
      }),
      numberField("y", hint.y, Math.max(0, chosen.height - 1), (v) => {
        hint.y = v;
        drawMarkers();
      }),
      remove,
    );
    list.append(item);
  });
  drawMarkers();
}

function drawMarkers() {
  const markers = $("markers");
  markers.replaceChildren();
  if (!chosen || !chosen.width) return;
  hints.forEach((hint, index) => {
    const dot = document.createElement("span");
    dot.className = "marker";
    dot.textContent = String(index + 1);
    // CSSOM properties, not a style attribute: the CSP forbids inline styles.
    dot.style.left = `${((hint.x + 0.5) * 100) / chosen.width}%`;
    dot.style.top = `${((hint.y + 0.5) * 100) / chosen.height}%`;
    dot.style.backgroundColor = hint.color;
    markers.append(dot);
  });
}

// --- Jobs ---------------------------------------------------------------------------------------

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

$("job-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  fail("");
  const model = $("model").value;
  if (keyNeeded && apiKey === null) {
    fail("This service needs an API key. Enter it above, then try again.");
    return;
  }
  if (!chosen) {
    fail("Choose a photo or a video first.");
    $("image").focus();
    return;
  }
  if (!model) {
    fail("No engine is ready to colorize.");
    return;
  }
  if (REFERENCE_MODELS.has(model) && !reference) {
    fail("The exemplar engine needs a colour reference photo: choose one above.");
    $("reference").focus();
    return;
  }
  const sent = chosen;
  const video = sent.kind === "video";
  const form = new FormData();
  form.append(video ? "video" : "image", sent.file, sent.file.name);
  form.append("model", model);
  if (video) form.append("stabilize", $("stabilize").checked ? "true" : "false");
  else form.append("format", "png");
  if (REFERENCE_MODELS.has(model)) form.append("reference", reference.file, reference.file.name);
  if (takesHints(model) && hints.length) form.append("hints", JSON.stringify(hints));
  const renderSize = renderSizeWanted(models.find((m) => m.name === model));
  if (renderSize !== null) form.append("render_size", renderSize);

  const token = ++jobToken;
  inFlight = sent;
  $("submit").disabled = true;
  $("cancel").disabled = false;
  say(video ? "Sending the video…" : "Sending the photo…");
  try {
    let job;
    let location;
    if (video) {
      ({ job, location } = await sendVideo(form, token));
    } else {
      const response = await api("/jobs", { method: "POST", body: form });
      job = await response.json();
      location = response.headers.get("Location");
    }
    await follow(location || `/jobs/${job.id}`, token, sent);
  } catch (err) {
    if (token === jobToken) {
      say("");
      fail(explain(err, sent.kind));
    }
  } finally {
    if (token === jobToken) {
      $("submit").disabled = false;
      $("cancel").hidden = true;
      $("progress-box").hidden = true;
      currentJob = null;
      inFlight = null;
    }
  }
});

// A video goes up with XMLHttpRequest, not fetch: only it reports the upload's progress, and a
// film can take minutes to send.
function sendVideo(form, token) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    const sentKey = apiKey;
    let uploaded = 0;
    let total = 0;
    xhr.open("POST", "/jobs");
    if (sentKey !== null) xhr.setRequestHeader("Authorization", `Bearer ${sentKey}`);
    xhr.upload.addEventListener("progress", (event) => {
      if (!event.lengthComputable) return;
      uploaded = event.loaded;
      total = event.total;
      if (token === jobToken) showUpload(uploaded, total);
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        // Not our JSON (a proxy's page, say): keep the status text.
      }
      if (xhr.status >= 200 && xhr.status < 300 && body) {
        resolve({ job: body, location: xhr.getResponseHeader("Location") });
        return;
      }
      if (xhr.status === 401) askForKey(sentKey);
      const answer = body || { error: "error", detail: xhr.statusText };
      reject(new ServiceError(xhr.status, answer, xhr.getResponseHeader("Retry-After")));
    });
    xhr.addEventListener("error", () => {
      // A service that refuses a large upload at once may close the connection before the
      // browser has read its answer: say so rather than "unreachable".
      const cut = uploaded > 0 && uploaded < total;
      const detail = "the service could not be reached";
      reject(new ServiceError(0, { error: cut ? "upload_cut" : "network", detail }));
    });
    xhr.send(form);
  });
}

function megabytes(bytes) {
  return (bytes / 1e6).toFixed(bytes < 1e7 ? 1 : 0);
}

function showUpload(loaded, total) {
  const bar = $("progress");
  bar.max = total;
  bar.value = loaded;
  bar.setAttribute("aria-label", "Video sent");
  const percent = Math.floor((100 * loaded) / total);
  $("progress-text").textContent = `${megabytes(loaded)} of ${megabytes(total)} MB (${percent}%)`;
  $("progress-box").hidden = false;
}

function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(s % 60).padStart(2, "0")} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
}

// A running video job reports frames done and total, frames per second and the time left.
function showProgress(job) {
  const p = job.progress;
  const box = $("progress-box");
  if (job.state !== "running" || !p) {
    box.hidden = true;
    return;
  }
  const bar = $("progress");
  bar.setAttribute("aria-label", "Frames colorized");
  const total = p.frames_total;
  if (total) {
    bar.max = total;
    bar.value = Math.min(p.frames_done, total);
  } else {
    bar.removeAttribute("value"); // indeterminate: the container did not say
  }
  const parts = [total ? `Frame ${p.frames_done} of ${total}` : `Frame ${p.frames_done}`];
  if (p.fps) parts.push(`${p.fps.toFixed(1)} frames/s`);
  const left = p.seconds_left;
  parts.push(left === null || left === undefined ? "estimating the time left" : `about ${duration(left)} left`);
  $("progress-text").textContent = parts.join(" · ");
  box.hidden = false;
}

async function follow(location, token, sent) {
  currentJob = location;
  for (;;) {
    if (token !== jobToken) return;
    const job = await (await api(location)).json();
    const kind = job.kind || sent.kind;
    // DELETE stops a running job as well as a queued one.
    $("cancel").hidden = !["queued", "running"].includes(job.state);
    showProgress(job);
    switch (job.state) {
      case "queued":
        say(`Queued: number ${job.position ?? "?"} in line.`);
        break;
      case "running":
        if (job.cancel_requested) say("Stopping…");
        else say(kind === "video" ? "Colorizing the video…" : "Colorizing…");
        break;
      case "done":
        if (kind === "video") await showVideoResult(job, sent);
        else await showResult(job, sent);
        return;
      case "failed": {
        say("");
        // A file whose header passed is decoded later: its refusal arrives as the job's error,
        // with the status /colorize would have answered, and is worded the same way.
        const status = job.error ? job.error.status : 0;
        if ([413, 415, 422, 504, 507].includes(status)) {
          fail(explain(new ServiceError(status, job.error, null), kind));
        } else {
          fail(`The job failed: ${sentence(job.error ? job.error.detail : "no reason given")}`);
        }
        return;
      }
      case "cancelled":
        say("The job was cancelled.");
        return;
      default:
        say(`The job is ${job.state}.`);
    }
    await sleep(JOB_POLL_MS);
  }
}

$("cancel").addEventListener("click", async () => {
  if (!currentJob) return;
  $("cancel").disabled = true;
  try {
    await api(currentJob, { method: "DELETE" });
  } catch (err) {
    $("cancel").disabled = false;
    fail(explain(err));
  }
});

function resultGone(job) {
  say("");
  fail(`The result is no longer available: ${sentence(job.result_note || "it expired")}`);
}

function stem(name) {
  return name.replace(/\.[^.]+$/, "");
}

async function fetchResult(job) {
  const blob = await (await api(job.result_url)).blob();
  if (resultUrl) URL.revokeObjectURL(resultUrl);
  resultUrl = URL.createObjectURL(blob);
  return resultUrl;
}

async function showResult(job, sent) {
  if (!job.result_url) {
    resultGone(job);
    return;
  }
  const url = await fetchResult(job);
  $("result-img").src = url;
  $("before-img").src = sent.url;
  const download = $("download");
  download.href = url;
  download.download = `${stem(sent.file.name)}-colorized.png`;
  $("result-figure").hidden = false;
  say("Done. Move the split to compare, or download the colour photo.");
}

async function showVideoResult(job, sent) {
  if (!job.result_url) {
    resultGone(job);
    return;
  }
  say("Fetching the colour video…");
  const url = await fetchResult(job);
  $("original-video").src = sent.url;
  $("result-video").src = url;
  const download = $("video-download");
  download.href = url;
  download.download = `${stem(sent.file.name)}-colorized.mp4`;
  // The original plays in the pair now: one copy of it on the page is enough.
  if (sent === chosen) $("photo-figure").hidden = true;
  $("video-figure").hidden = false;
  say("Done. Play the colour video beside the original, or download it.");
}

// The colour video leads; the original (muted: the result carries the sound) follows it.
const resultVideo = $("result-video");
const originalVideo = $("original-video");

function follower(action) {
  return () => {
    if (!originalVideo.src) return;
    if (Math.abs(originalVideo.currentTime - resultVideo.currentTime) > 0.05) {
      originalVideo.currentTime = resultVideo.currentTime;
    }
    action();
  };
}

// play() is refused (a rejected promise) when the browser blocks it or a pause comes first.
const quietly = (promise) => promise.catch(() => {});
resultVideo.addEventListener("play", follower(() => quietly(originalVideo.play())));
resultVideo.addEventListener("pause", follower(() => originalVideo.pause()));
resultVideo.addEventListener("seeked", follower(() => {}));
resultVideo.addEventListener("ratechange", () => {
  originalVideo.playbackRate = resultVideo.playbackRate;
});
$("play-both").addEventListener("click", () => {
  resultVideo.currentTime = 0;
  quietly(resultVideo.play());
});

function setSplit() {
  const value = $("split").value;
  $("compare").style.setProperty("--split", `${value}%`);
  $("split").setAttribute("aria-valuetext", `${value}% original, ${100 - value}% colour`);
}

$("split").addEventListener("input", setSplit);
setSplit();

// --- Live panel ---------------------------------------------------------------------------------

function percent(ratio) {
  return Math.round(ratio * 1000) / 10;
}

async function refreshStatus() {
  if (keyNeeded && apiKey === null) return;
  let status;
  try {
    status = await (await api("/v1/status")).json();
  } catch (err) {
    $("panel-note").textContent = `Status unavailable: ${explain(err)}`;
    return;
  }
  const used = percent(status.usage_ratio);
  const limit = percent(status.threshold);
  const bar = $("mem-bar");
  bar.setAttribute("aria-valuenow", String(used));
  bar.setAttribute("aria-valuetext", `${used}% used; threshold ${limit}%`);
  bar.classList.toggle("over", status.usage_ratio > status.threshold);
  $("mem-fill").style.width = `${Math.min(100, used)}%`;
  $("mem-threshold").style.left = `${limit}%`;
  $("mem-threshold").hidden = false;
  $("mem-text").textContent = `${used}% used · threshold ${limit}%`;
  $("queue").textContent = `${status.queue_depth} / ${status.queue_capacity}`;
  $("running").textContent = String(status.jobs_running);
  $("jobs-done").textContent = String(status.jobs_done);
  $("device").textContent = status.device;
  $("ready").textContent = status.ready ? "accepting jobs" : "not accepting jobs";
  $("panel-note").textContent = `Updated ${new Date().toLocaleTimeString()}.`;
  // An engine whose weights were installed since the page loaded becomes selectable.
  const known = Object.fromEntries(models.map((m) => [m.name, m.ready]));
  const changed = Object.entries(status.models).some(([name, ready]) => known[name] !== ready);
  if (models.length && changed) loadModels();
}

async function statusLoop() {
  for (;;) {
    if (document.visibilityState !== "hidden") await refreshStatus();
    await sleep(STATUS_POLL_MS);
  }
}

loadModels();
statusLoop();
