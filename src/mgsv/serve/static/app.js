// The grounding page: upload a video, watch progress, list the moments, each on its track's timeline (timeline.js),
// preview the selected part over the video in sync, render it; more moments of a track, and a varied list (ranked
// again on the server from the kept upload, POST /v1/reground, without uploading again).
"use strict";

const $ = (id) => document.getElementById(id);
const AUDIO_KEPT = 3; // whole-track MP3s kept in the page (a few MB each), the most recently played
const RESTART_DELAY_MS = 150; // a key held down restarts the preview once it is let go
const DRIFT_S = 0.2; // the video is moved back in step with the music when they drift further apart
const MORE_LABEL = "More from this track";
const state = {
  file: null,
  uploadId: null,
  asked: null, // the options the results answer: {fit_duration, window_start}
  uploadedFile: null, // the file the results are of
  playing: null,
  readyPoll: null,
  cards: [],
  audio: new Map(),
  restart: 0,
  generation: 0,
};

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

// The grounding options of the form (the upload's fields, and the body of a reground).
function formOptions() {
  return {
    top: Number($("top-input").value || "5"),
    fit_duration: $("fit-input").checked,
    diverse: $("diverse-input").checked,
  };
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
  const options = formOptions();
  for (const [name, value] of Object.entries(options)) form.append(name, String(value));
  progress(0, "Uploading\u2026");
  try {
    const result = await uploadVideo(form);
    state.uploadedFile = state.file;
    showResults(result, options);
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

// The varied-tracks toggle after results: the kept upload ranked again with the form's options (no new upload).
async function reground() {
  const shown = ["results", "rendered"].includes(document.body.dataset.state);
  if (!state.uploadId || !shown || state.file !== state.uploadedFile) return; // a new file: Find music uploads it
  stopPreview();
  showError("");
  setState("regrounding");
  $("ground-button").disabled = true;
  progress(null, "Ranking again\u2026");
  try {
    const options = formOptions();
    const body = { upload_id: state.uploadId, ...options, window_start: state.asked.window_start };
    showResults(await mgsv.json("/v1/reground", postJson(body)), options);
    setState("results");
  } catch (error) {
    if (error.status === 401) askToken("The server needs a valid API token.");
    const again = error.code === "unknown_upload" ? " Choose Find music to upload it again." : "";
    showError(`Ranking again failed: ${error.message}.${again}`.replace("..", "."));
    setState("results");
  } finally {
    $("progress").hidden = true;
    $("ground-button").disabled = false;
  }
}

function postJson(body) {
  return { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } };
}

function showResults(result, options) {
  state.uploadId = result.upload_id;
  state.asked = { fit_duration: options.fit_duration, window_start: result.video.window_start };
  const video = $("query-video");
  if (video.src) URL.revokeObjectURL(video.src);
  video.src = URL.createObjectURL(state.file); // the upload itself, played locally: no second download
  const info = result.video;
  $("video-meta").textContent =
    `${state.file.name} \u00b7 ${info.duration.toFixed(1)} s \u00b7 ${info.width}\u00d7${info.height} ` +
    `\u00b7 grounded in ${result.seconds.toFixed(2)} s`;
  $("result-notes").textContent = result.notes.join(" ");
  $("result-notes").hidden = result.notes.length === 0;
  state.cards = result.moments.map((moment) => momentCard(moment, info.duration));
  $("moments").replaceChildren(...state.cards.map((card) => card.item));
  $("results").hidden = false;
  for (const card of state.cards) loadTrackMedia(card);
}

// A JSON request that waits and tries again (twice) while the server answers 503 busy.
async function jsonWhenFree(path, options = {}) {
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await mgsv.json(path, options);
    } catch (error) {
      if (error.status !== 503 || attempt >= 2) throw error;
      await new Promise((resolve) => setTimeout(resolve, 1000 * Number(error.retryAfter || 2)));
    }
  }
}

// The waveform and the beats of a card's track (computed once per track on the server, then read from its cache).
async function loadTrackMedia(card) {
  const id = encodeURIComponent(card.moment.track_id);
  const width = Math.min(4096, Math.max(64, card.timeline.pixelWidth() || 1000));
  try {
    card.timeline.setPeaks(await jsonWhenFree(`/v1/tracks/${id}/peaks?width=${width}`));
  } catch (error) {
    card.timeline.setPeaksError(error.message);
  }
  try {
    const body = await jsonWhenFree(`/v1/tracks/${id}/beats`);
    card.timeline.setBeats(body.beats);
    card.timeline.setSnap($("snap-input").checked);
    card.beatsNote.textContent = body.tempo_bpm ? `${Math.round(body.tempo_bpm)} BPM` : "no beat found";
  } catch (error) {
    card.beatsNote.textContent = "no beats: moves by 0.1 s";
    card.beatsNote.title = error.message;
  }
}

function momentCard(moment, videoSeconds) {
  const item = document.createElement("li");
  item.className = "moment";
  item.dataset.trackId = moment.track_id;
  const card = { moment, item };

  const rank = document.createElement("span");
  rank.className = "rank";
  rank.textContent = moment.rank;

  const about = document.createElement("div");
  about.className = "about";
  const title = document.createElement("div");
  title.className = "title";
  title.textContent = moment.title || moment.track_id;
  const detail = document.createElement("div");
  detail.className = "muted small detail";
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
  play.addEventListener("click", () => togglePreview(card));

  const render = document.createElement("button");
  render.className = "secondary render";
  render.type = "button";
  render.textContent = "Render";
  render.addEventListener("click", () => renderMoment(card));

  const label = moment.title || moment.track_id;
  const timeline = new Timeline({
    title: label,
    duration: moment.track_duration,
    moment: { start: moment.start_s, end: moment.end_s },
    videoSeconds,
    onChange: (selection) => {
      item.dataset.start = selection.start;
      item.dataset.end = selection.end;
    },
    onCommit: () => {
      if (state.playing === card) scheduleRestart();
    },
  });
  const beatsNote = document.createElement("span");
  beatsNote.className = "muted small beats-note";
  const more = document.createElement("button");
  more.type = "button";
  more.className = "link more";
  more.textContent = MORE_LABEL;
  more.addEventListener("click", () => loadAlternatives(card));
  timeline.footEl.append(beatsNote, more);
  const choices = document.createElement("div");
  choices.className = "alternatives";
  choices.setAttribute("role", "group");
  choices.setAttribute("aria-label", `Moments of ${label}`);
  choices.hidden = true;

  Object.assign(card, { play, render, timeline, beatsNote, more, choices, detail, options: [moment], chosen: 0 });
  describe(card);
  item.append(rank, about, score, play, render, timeline.root, choices);
  return card;
}

// The card's line under the title: the artist, and the chosen moment of the model.
function describe(card) {
  const { moment } = card;
  const chosen = card.options[card.chosen];
  const who = moment.artist ? `${moment.artist} \u00b7 ` : "";
  const which = card.chosen === 0 ? "model" : `other moment ${card.chosen}`;
  card.detail.textContent =
    `${who}${which}: ${mgsv.seconds(chosen.start_s)} \u2013 ${mgsv.seconds(chosen.end_s)} ` +
    `(${(chosen.end_s - chosen.start_s).toFixed(1)} s of ${mgsv.seconds(moment.track_duration)})`;
}

// "More from this track": up to 3 other moments of the track (POST /v1/alternatives), none overlapping the first.
async function loadAlternatives(card) {
  const { moment, more } = card;
  more.disabled = true;
  more.textContent = "Looking\u2026";
  showError("");
  const body = {
    upload_id: state.uploadId,
    track_id: moment.track_id,
    avoid: [[moment.start_s, moment.end_s]],
    alternatives: 3,
    fit_duration: state.asked.fit_duration,
    window_start: state.asked.window_start,
  };
  try {
    const found = await jsonWhenFree("/v1/alternatives", postJson(body));
    showChoices(card, [moment, ...found.moments]);
    more.hidden = true;
  } catch (error) {
    if (error.status === 401) askToken("The server needs a valid API token.");
    showError(`More from this track failed: ${error.message}`);
    more.textContent = MORE_LABEL;
  } finally {
    more.disabled = false;
  }
}

// The moments of a track as buttons under its timeline; the pressed one is where the music is.
function showChoices(card, moments) {
  card.options = moments;
  const buttons = moments.map((m, index) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "alt";
    button.dataset.start = m.start_s;
    button.dataset.end = m.end_s;
    const name = index === 0 ? "Model\u2019s pick" : `Other ${index}`;
    button.textContent = `${name} ${mgsv.seconds(m.start_s)}\u2013${mgsv.seconds(m.end_s)}`;
    button.addEventListener("click", () => choose(card, index));
    return button;
  });
  const parts = [...buttons];
  if (moments.length === 1) {
    const none = document.createElement("span");
    none.className = "muted small";
    none.textContent = "No other moment: the rest of the track is shorter than your video.";
    parts.push(none);
  }
  card.choices.replaceChildren(...parts);
  card.choices.hidden = false;
  choose(card, card.chosen, false);
}

function choose(card, index, move = true) {
  const span = (m) => ({ start: m.start_s, end: m.end_s });
  card.chosen = index;
  card.choices.querySelectorAll("button.alt").forEach((button, i) => {
    button.setAttribute("aria-pressed", i === index ? "true" : "false");
  });
  card.timeline.setOthers(card.options.filter((_, i) => i !== index).map(span));
  if (move) card.timeline.setMoment(span(card.options[index]));
  describe(card);
}

function stopPreview() {
  clearTimeout(state.restart);
  $("preview-audio").pause();
  $("query-video").pause();
  const card = state.playing;
  if (card) {
    state.playing = null;
    card.item.classList.remove("playing");
    card.play.textContent = "\u25b6 Preview";
    card.timeline.setPlayhead(null);
  }
}

// The whole track as a blob URL (GET /v1/tracks/{id}/audio), kept for the last few tracks played.
async function trackAudio(trackId) {
  if (state.audio.has(trackId)) {
    const url = state.audio.get(trackId);
    state.audio.delete(trackId);
    state.audio.set(trackId, url); // most recently used last
    return url;
  }
  const { url } = await mgsv.blobUrl(`/v1/tracks/${encodeURIComponent(trackId)}/audio`);
  state.audio.set(trackId, url);
  while (state.audio.size > AUDIO_KEPT) {
    const [oldest, oldUrl] = state.audio.entries().next().value;
    state.audio.delete(oldest);
    URL.revokeObjectURL(oldUrl);
  }
  return url;
}

function whenReady(media) {
  if (media.readyState >= 1) return Promise.resolve();
  return new Promise((resolve, reject) => {
    media.addEventListener("loadedmetadata", resolve, { once: true });
    media.addEventListener("error", () => reject(new Error("the browser cannot play this audio")), { once: true });
  });
}

async function togglePreview(card) {
  const wasThis = state.playing === card;
  stopPreview();
  if (wasThis) return;
  card.play.textContent = "\u2026";
  try {
    const url = await trackAudio(card.moment.track_id);
    const audio = $("preview-audio");
    if (audio.src !== url) audio.src = url;
    await whenReady(audio);
    state.playing = card;
    card.item.classList.add("playing");
    card.play.textContent = "\u25a0 Stop";
    await restartPreview();
    const generation = ++state.generation; // one follower at a time, however fast previews are switched
    requestAnimationFrame(() => followPlayback(generation));
  } catch (error) {
    stopPreview();
    card.play.textContent = "\u25b6 Preview";
    showError(`Preview failed: ${error.message}`);
  }
}

function scheduleRestart() {
  clearTimeout(state.restart);
  state.restart = setTimeout(restartPreview, RESTART_DELAY_MS);
}

// Play the video (muted) from its start and the music from the selection's start, together.
async function restartPreview() {
  const card = state.playing;
  if (!card) return;
  const audio = $("preview-audio");
  const video = $("query-video");
  const { start } = card.timeline.selection();
  audio.pause();
  video.pause();
  video.muted = true;
  audio.currentTime = start;
  video.currentTime = 0;
  card.videoPlays = false;
  card.timeline.setPlayhead(start);
  const playing = video
    .play()
    .then(() => {
      card.videoPlays = true;
    })
    .catch(() => null); // a video the browser cannot decode: the music still plays, the playhead still moves
  await Promise.all([audio.play(), playing]);
}

// Each frame while previewing: move the playhead, stop the music at the selection's end (the video goes on
// silently, as in the render), keep the video in step, and start again from the top when the video ends.
function followPlayback(generation) {
  const card = state.playing;
  if (!card || generation !== state.generation) return;
  const audio = $("preview-audio");
  const video = $("query-video");
  const { start, end } = card.timeline.selection();
  if (!audio.paused && audio.currentTime >= end) audio.pause();
  card.timeline.setPlayhead(Math.min(audio.currentTime, end));
  const elapsed = audio.currentTime - start;
  if (card.videoPlays && !audio.paused && !video.paused && Math.abs(video.currentTime - elapsed) > DRIFT_S) {
    video.currentTime = elapsed;
  }
  const over = card.videoPlays ? video.ended : audio.paused && audio.currentTime >= end;
  if (over) restartPreview();
  requestAnimationFrame(() => followPlayback(generation));
}

async function renderMoment(card) {
  const { moment, render } = card;
  stopPreview();
  render.disabled = true;
  render.textContent = "Rendering\u2026";
  showError("");
  const { start, end } = card.timeline.selection();
  try {
    const body = JSON.stringify({ upload_id: state.uploadId, track_id: moment.track_id, start_s: start, end_s: end });
    const { url, response } = await mgsv.blobUrl("/v1/render", {
      method: "POST",
      body,
      headers: { "Content-Type": "application/json" },
    });
    const video = $("rendered-video");
    if (video.src) URL.revokeObjectURL(video.src);
    video.src = url;
    $("render-title").textContent =
      `${moment.title || moment.track_id} (${mgsv.seconds(start)} \u2013 ${mgsv.seconds(end)})`;
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
    render.disabled = false;
    render.textContent = "Render";
  }
}

$("diverse-input").addEventListener("change", reground);
$("snap-input").addEventListener("change", (event) => {
  for (const card of state.cards) card.timeline.setSnap(event.target.checked);
});
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
