// The grounding page: upload a video, watch progress, list the moments, preview them over the video, render one.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { file: null, uploadId: null, playing: null, readyPoll: null };

const askToken = mgsv.wireTokenPanel(checkServer);

function setState(name) {
  document.body.dataset.state = name;
}

function showError(message) {
  $("error").textContent = message ? message[0].toUpperCase() + message.slice(1) : "";
  $("error").hidden = !message;
}

function setStatus(text, kind) {
  const pill = $("server-status");
  pill.textContent = text;
  pill.className = `pill ${kind || ""}`;
}

async function checkServer() {
  clearTimeout(state.readyPoll);
  let response;
  try {
    response = await fetch("/v1/ready", { headers: mgsv.headers() });
  } catch (error) {
    setStatus("server unreachable", "bad");
    state.readyPoll = setTimeout(checkServer, 5000);
    return;
  }
  if (response.status === 401) {
    setStatus("token needed", "warn");
    askToken(mgsv.token() ? "That token was refused; enter the API token." : "This server needs an API token.");
    return;
  }
  const body = await response.json();
  if (body.status === "ready") {
    setStatus(`ready \u00b7 ${body.tracks} track${body.tracks === 1 ? "" : "s"}`, "good");
    const limits = body.limits;
    $("limits").textContent = `any video format \u00b7 up to ${limits.max_upload_mb} MB and ${limits.max_video_seconds} s`;
    $("top-input").max = limits.max_top;
    $("ground-button").disabled = !state.file;
    if (document.body.dataset.state === "starting") setState("idle");
  } else if (body.status === "loading") {
    setStatus("loading the model\u2026", "warn");
    state.readyPoll = setTimeout(checkServer, 2000);
  } else {
    setStatus("not ready", "bad");
    showError(`The server could not start: ${body.message}`);
  }
}

function chooseFile(file) {
  if (!file) return;
  state.file = file;
  $("drop-title").textContent = file.name;
  $("ground-button").disabled = document.body.dataset.state === "starting";
  showError("");
}

function progress(percent, text) {
  $("progress").hidden = false;
  const bar = $("progress-bar");
  if (percent === null) bar.removeAttribute("value");
  else bar.value = percent;
  $("progress-text").textContent = text;
}

// XMLHttpRequest rather than fetch: only it reports upload progress.
function uploadVideo(form) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", "/v1/ground");
    const token = mgsv.token();
    if (token) request.setRequestHeader("Authorization", `Bearer ${token}`);
    request.responseType = "json";
    request.upload.onprogress = (event) => {
      if (event.lengthComputable) {
        const percent = Math.round((100 * event.loaded) / event.total);
        progress(percent, `Uploading\u2026 ${percent}%`);
      }
    };
    request.upload.onload = () => progress(null, "Listening to the library\u2026");
    request.onerror = () => reject(new Error("the upload failed: the connection to the server was lost"));
    request.onload = async () => {
      if (request.status === 200) {
        resolve(request.response);
        return;
      }
      const headers = { get: (name) => request.getResponseHeader(name) };
      reject(await mgsv.errorFrom(request.status, async () => request.response, headers));
    };
    request.send(form);
  });
}

async function ground(event) {
  event.preventDefault();
  if (!state.file) return;
  stopPreview();
  showError("");
  setState("uploading");
  $("ground-button").disabled = true;
  $("results").hidden = true;
  $("render-card").hidden = true;
  const form = new FormData();
  form.append("video", state.file, state.file.name);
  form.append("top", $("top-input").value || "5");
  form.append("fit_duration", $("fit-input").checked ? "true" : "false");
  progress(0, "Uploading\u2026");
  try {
    const result = await uploadVideo(form);
    showResults(result);
    setState("results");
  } catch (error) {
    if (error.status === 401) askToken("The server needs a valid API token.");
    const wait = error.retryAfter ? ` Try again in ${error.retryAfter} s.` : "";
    showError(`${error.message}.${wait}`.replace("..", "."));
    setState("error");
  } finally {
    $("progress").hidden = true;
    $("ground-button").disabled = false;
  }
}

function showResults(result) {
  state.uploadId = result.upload_id;
  const video = $("query-video");
  if (video.src) URL.revokeObjectURL(video.src);
  video.src = URL.createObjectURL(state.file);
  const info = result.video;
  $("video-meta").textContent =
    `${state.file.name} \u00b7 ${info.duration.toFixed(1)} s \u00b7 ${info.width}\u00d7${info.height} ` +
    `\u00b7 grounded in ${result.seconds.toFixed(2)} s`;
  const list = $("moments");
  list.replaceChildren(...result.moments.map(momentItem));
  $("results").hidden = false;
}

function momentItem(moment) {
  const item = document.createElement("li");
  item.className = "moment";
  item.dataset.trackId = moment.track_id;

  const rank = document.createElement("span");
  rank.className = "rank";
  rank.textContent = moment.rank;

  const about = document.createElement("div");
  about.className = "about";
  const title = document.createElement("div");
  title.className = "title";
  title.textContent = moment.title || moment.track_id;
  const detail = document.createElement("div");
  detail.className = "muted small";
  const who = moment.artist ? `${moment.artist} \u00b7 ` : "";
  detail.textContent =
    `${who}${mgsv.seconds(moment.start_s)} \u2013 ${mgsv.seconds(moment.end_s)} ` +
    `(${(moment.end_s - moment.start_s).toFixed(1)} s of ${mgsv.seconds(moment.track_duration)})`;
  about.append(title, detail);
  if (moment.notes.length) {
    const notes = document.createElement("div");
    notes.className = "notes small";
    notes.textContent = moment.notes.join("; ");
    about.append(notes);
  }

  const score = document.createElement("div");
  score.className = "score";
  score.title = `relevance ${moment.score.toFixed(3)} (from -2 to 2)`;
  const bar = document.createElement("span");
  bar.style.width = `${Math.max(2, Math.min(100, ((moment.score + 2) / 4) * 100))}%`;
  score.append(bar);

  const play = document.createElement("button");
  play.className = "play";
  play.type = "button";
  play.textContent = "\u25b6 Preview";
  play.addEventListener("click", () => togglePreview(moment, item, play));

  const render = document.createElement("button");
  render.className = "secondary render";
  render.type = "button";
  render.textContent = "Render";
  render.addEventListener("click", () => renderMoment(moment, render));

  item.append(rank, about, score, play, render);
  return item;
}

function stopPreview() {
  const audio = $("preview-audio");
  audio.pause();
  $("query-video").pause();
  if (state.playing) {
    state.playing.item.classList.remove("playing");
    state.playing.button.textContent = "\u25b6 Preview";
    state.playing = null;
  }
}

async function togglePreview(moment, item, button) {
  const wasThis = state.playing && state.playing.item === item;
  stopPreview();
  if (wasThis) return;
  button.textContent = "\u2026";
  try {
    const query = `start_s=${moment.start_s}&end_s=${moment.end_s}`;
    const { url } = await mgsv.blobUrl(`/v1/tracks/${encodeURIComponent(moment.track_id)}/preview?${query}`);
    const audio = $("preview-audio");
    if (audio.src) URL.revokeObjectURL(audio.src);
    audio.src = url;
    state.playing = { item, button };
    item.classList.add("playing");
    button.textContent = "\u25a0 Stop";
    const video = $("query-video");
    video.currentTime = 0;
    await Promise.all([audio.play(), video.play().catch(() => null)]);
  } catch (error) {
    stopPreview();
    showError(`Preview failed: ${error.message}`);
  }
}

async function renderMoment(moment, button) {
  stopPreview();
  button.disabled = true;
  button.textContent = "Rendering\u2026";
  showError("");
  try {
    const body = JSON.stringify({ upload_id: state.uploadId, track_id: moment.track_id, start_s: moment.start_s });
    const { url, response } = await mgsv.blobUrl("/v1/render", {
      method: "POST",
      body,
      headers: { "Content-Type": "application/json" },
    });
    const video = $("rendered-video");
    if (video.src) URL.revokeObjectURL(video.src);
    video.src = url;
    $("render-title").textContent = moment.title || moment.track_id;
    const link = $("download-link");
    link.href = url;
    const match = /filename="?([^";]+)"?/.exec(response.headers.get("Content-Disposition") || "");
    link.download = match ? match[1] : "mgsv.mp4";
    $("render-card").hidden = false;
    $("render-card").scrollIntoView({ behavior: "smooth", block: "nearest" });
    setState("rendered");
  } catch (error) {
    showError(`Rendering failed: ${error.message}`);
  } finally {
    button.disabled = false;
    button.textContent = "Render";
  }
}

$("preview-audio").addEventListener("ended", stopPreview);
$("video-input").addEventListener("change", (event) => chooseFile(event.target.files[0]));
$("upload-form").addEventListener("submit", ground);
const zone = $("drop-zone");
zone.addEventListener("dragover", (event) => {
  event.preventDefault();
  zone.classList.add("over");
});
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", (event) => {
  event.preventDefault();
  zone.classList.remove("over");
  chooseFile(event.dataTransfer.files[0]);
});
checkServer();
