// The A/B study page: a rater watches two clips of one video (music from two hidden systems) and picks one answer.
"use strict";

const $ = (id) => document.getElementById(id);
const RATER_KEY = "mgsv-rater-id";
const study = { rater: localStorage.getItem(RATER_KEY) || "", presentation: null, played: new Set() };
const askToken = mgsv.wireTokenPanel(next);

function showError(message) {
  $("error").textContent = message ? message[0].toUpperCase() + message.slice(1) : "";
  $("error").hidden = !message;
}

function answerButtons() {
  return Array.from(document.querySelectorAll("button.answer"));
}

function handle(error) {
  if (error.status === 401) {
    askToken("The server needs a valid API token.");
    return;
  }
  showError(error.message);
}

async function next() {
  showError("");
  if (!study.rater) return;
  try {
    const body = await mgsv.json("/v1/ab/next", {
      method: "POST",
      body: JSON.stringify({ rater_id: study.rater }),
      headers: { "Content-Type": "application/json" },
    });
    $("progress-pill").textContent = `${study.rater} \u00b7 ${body.answered} of ${body.total} rated`;
    $("rater-card").hidden = true;
    if (body.done) {
      $("pair-card").hidden = true;
      $("done-card").hidden = false;
      document.body.dataset.state = "done";
      return;
    }
    await showPair(body.presentation_id);
  } catch (error) {
    handle(error);
  }
}

async function showPair(presentationId) {
  study.presentation = presentationId;
  study.played = new Set();
  answerButtons().forEach((button) => (button.disabled = true));
  $("pair-card").hidden = false;
  document.body.dataset.state = "loading-pair";
  for (const position of [1, 2]) {
    const video = $(`clip-${position}`);
    if (video.src) URL.revokeObjectURL(video.src);
    video.removeAttribute("src");
  }
  const clips = await Promise.all(
    [1, 2].map((position) => mgsv.blobUrl(`/v1/ab/presentations/${presentationId}/clips/${position}`)),
  );
  clips.forEach(({ url }, index) => {
    $(`clip-${index + 1}`).src = url;
  });
  document.body.dataset.state = "pair";
}

function played(position) {
  study.played.add(position);
  const other = $(`clip-${3 - position}`);
  if (!other.paused) other.pause(); // one soundtrack at a time
  if (study.played.size === 2) answerButtons().forEach((button) => (button.disabled = false));
}

async function answer(choice) {
  answerButtons().forEach((button) => (button.disabled = true));
  for (const position of [1, 2]) $(`clip-${position}`).pause();
  try {
    await mgsv.json("/v1/ab/answers", {
      method: "POST",
      body: JSON.stringify({ presentation_id: study.presentation, rater_id: study.rater, answer: choice }),
      headers: { "Content-Type": "application/json" },
    });
    await next();
  } catch (error) {
    handle(error);
    answerButtons().forEach((button) => (button.disabled = false));
  }
}

for (const position of [1, 2]) $(`clip-${position}`).addEventListener("play", () => played(position));
answerButtons().forEach((button) => button.addEventListener("click", () => answer(button.dataset.answer)));
$("rater-input").value = study.rater;
$("rater-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const rater = $("rater-input").value.trim();
  if (!/^[\p{L}\p{N}_.@ -]{1,64}$/u.test(rater)) {
    showError("Use 1 to 64 letters, digits, spaces or . @ - for the rater id.");
    return;
  }
  study.rater = rater;
  localStorage.setItem(RATER_KEY, rater);
  next();
});
