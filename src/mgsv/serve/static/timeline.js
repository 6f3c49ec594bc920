// The editor's view of one result: the track's waveform on a canvas, the model's moment, time ticks, and a selection
// (as long as the video) that a pointer drags and trims, that the keyboard nudges, and that can snap to beats.
// No framework: one class per timeline, plain DOM and canvas; app.js creates one per result and wires it to the
// preview and the render.
"use strict";

const TIMELINE = {
  minSeconds: 0.5, // the shortest selection a trim leaves
  nudgeSeconds: 0.1, // an arrow key without beats
  barSeconds: 1.0, // shift+arrow (or Page Up/Down) without beats
  beatsPerBar: 4,
  snapRadius: 1.0, // a drag snaps to a beat only this close (beats stop where the analysis stopped)
  rulerPx: 18, // the time ticks' strip under the waveform
  labelGapPx: 56, // the least room between two tick labels
  tickSteps: [0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600],
  colors: {
    wave: "#b4b8cc",
    waveSelected: "#4f46e5",
    moment: "#fff0c2",
    momentEdge: "#d99a12",
    other: "#e3f4ea", // other moments of the track ("more from this track")
    otherEdge: "#2f9e6a",
    beat: "#6d66e8",
    tick: "#8a90a6",
    label: "#646a80",
    empty: "#d5d8e4",
  },
};

function clamp(value, low, high) {
  return Math.min(Math.max(value, low), high);
}

function round3(value) {
  return Math.round(value * 1000) / 1000;
}

class Timeline {
  // options: {title, duration (s of the track), moment: {start, end}, videoSeconds, onChange(sel), onCommit(sel)}
  constructor(options) {
    this.title = options.title;
    this.duration = options.duration;
    this.moment = options.moment;
    this.maxLength = Math.min(options.videoSeconds, this.duration);
    this.onChange = options.onChange || (() => {});
    this.onCommit = options.onCommit || (() => {});
    this.peaks = null;
    this.peaksMessage = "loading the waveform\u2026";
    this.beats = [];
    this.others = [];
    this.snap = false;
    this.playhead = null;
    this.drag = null;
    this.frame = 0;
    this.build();
    this.reset(false);
  }

  // -- the selection -----------------------------------------------------------------------------------------

  selection() {
    return { start: round3(this.start), end: round3(this.end) };
  }

  // Back to the model's moment: its start, for the video's length (the track's end at most), as a render does.
  reset(commit = true) {
    const start = clamp(this.moment.start, 0, Math.max(0, this.duration - TIMELINE.minSeconds));
    this.set(start, Math.min(start + this.maxLength, this.duration));
    if (commit) this.onCommit(this.selection());
  }

  // Another moment of the track becomes the moment: the selection goes there (as long as the video).
  setMoment(moment) {
    this.moment = moment;
    this.reset();
  }

  // The other moments of the track, drawn as green bands: [{start, end}, ...].
  setOthers(moments) {
    this.others = moments;
    this.render();
  }

  set(start, end) {
    this.start = round3(start);
    this.end = round3(end);
    this.render();
    this.onChange(this.selection());
  }

  // Move the whole selection so it starts at `start`, keeping its length inside the track.
  moveTo(start) {
    const length = this.end - this.start;
    const at = clamp(start, 0, this.duration - length);
    this.set(at, at + length);
  }

  trimStart(start) {
    const low = Math.max(0, this.end - this.maxLength);
    this.set(clamp(start, low, this.end - TIMELINE.minSeconds), this.end);
  }

  trimEnd(end) {
    const high = Math.min(this.duration, this.start + this.maxLength);
    this.set(this.start, clamp(end, this.start + TIMELINE.minSeconds, high));
  }

  // -- beats -------------------------------------------------------------------------------------------------

  setBeats(beats) {
    this.beats = beats;
    this.scheduleDraw();
  }

  setSnap(on) {
    this.snap = on;
    this.scheduleDraw();
  }

  snapping() {
    return this.snap && this.beats.length > 0;
  }

  // The beat nearest `t` that `fits` (within the snap radius), or `t` when not snapping.
  snapped(t, fits) {
    if (!this.snapping()) return t;
    let best = null;
    for (const beat of this.beats) {
      if (fits(beat) && (best === null || Math.abs(beat - t) < Math.abs(best - t))) best = beat;
    }
    return best !== null && Math.abs(best - t) <= TIMELINE.snapRadius ? best : t;
  }

  // The `count`-th beat after (count > 0) or before (count < 0) `t` that `fits`; null if there is none.
  beatFrom(t, count, fits) {
    const usable = this.beats.filter(fits);
    if (count > 0) {
      const after = usable.filter((b) => b > t + 1e-3);
      return after.length ? after[Math.min(count, after.length) - 1] : null;
    }
    const before = usable.filter((b) => b < t - 1e-3);
    return before.length ? before[Math.max(0, before.length + count)] : null;
  }

  // -- building and drawing -----------------------------------------------------------------------------------

  build() {
    const root = document.createElement("div");
    root.className = "timeline";

    const lane = document.createElement("div");
    lane.className = "lane";
    const canvas = document.createElement("canvas");
    canvas.className = "wave";
    canvas.setAttribute("role", "img");
    const selection = this.slider("selection", `Music start in ${this.title}: drag, or use the arrow keys`);
    const startHandle = this.slider("handle handle-start", `Trim the start of the music in ${this.title}`);
    const endHandle = this.slider("handle handle-end", `Trim the end of the music in ${this.title}`);
    const playhead = document.createElement("div");
    playhead.className = "playhead";
    playhead.hidden = true;
    lane.append(canvas, selection, startHandle, endHandle, playhead);

    const foot = document.createElement("div");
    foot.className = "timeline-foot";
    const label = document.createElement("span");
    label.className = "sel-label";
    const reset = document.createElement("button");
    reset.type = "button";
    reset.className = "link reset";
    reset.textContent = "Back to the model\u2019s moment";
    reset.addEventListener("click", () => this.reset());
    foot.append(label, reset);
    root.append(lane, foot);

    Object.assign(this, { root, lane, canvas, selectionEl: selection, startHandle, endHandle, playheadEl: playhead });
    Object.assign(this, { label, footEl: foot });
    lane.addEventListener("pointerdown", (event) => this.pointerDown(event));
    lane.addEventListener("pointermove", (event) => this.pointerMove(event));
    lane.addEventListener("pointerup", (event) => this.pointerUp(event));
    lane.addEventListener("pointercancel", (event) => this.pointerUp(event));
    selection.addEventListener("keydown", (event) => this.key(event, "move"));
    startHandle.addEventListener("keydown", (event) => this.key(event, "start"));
    endHandle.addEventListener("keydown", (event) => this.key(event, "end"));
    new ResizeObserver(() => this.scheduleDraw()).observe(lane);
  }

  slider(className, label) {
    const element = document.createElement("div");
    element.className = className;
    element.tabIndex = 0;
    element.setAttribute("role", "slider");
    element.setAttribute("aria-label", label);
    return element;
  }

  // The canvas's width in device pixels: how many peak columns are worth asking the server for.
  pixelWidth() {
    return Math.round(this.lane.clientWidth * (window.devicePixelRatio || 1));
  }

  setPeaks(peaks) {
    this.peaks = peaks;
    this.peaksMessage = null;
    this.scheduleDraw();
  }

  setPeaksError(message) {
    this.peaksMessage = `waveform unavailable: ${message}`;
    this.scheduleDraw();
  }

  setPlayhead(seconds) {
    this.playhead = seconds;
    this.playheadEl.hidden = seconds === null;
    if (seconds !== null) this.playheadEl.style.left = `${(100 * clamp(seconds, 0, this.duration)) / this.duration}%`;
  }

  percent(seconds) {
    return `${(100 * seconds) / this.duration}%`;
  }

  render() {
    const { start, end, duration } = this;
    this.selectionEl.style.left = this.percent(start);
    this.selectionEl.style.width = this.percent(end - start);
    this.startHandle.style.left = this.percent(start);
    this.endHandle.style.left = this.percent(end);
    const text = `starts at ${mgsv.seconds(start)}, ends at ${mgsv.seconds(end)} (${(end - start).toFixed(1)} s)`;
    const values = [
      [this.selectionEl, 0, duration - (end - start), start],
      [this.startHandle, Math.max(0, end - this.maxLength), end - TIMELINE.minSeconds, start],
      [this.endHandle, start + TIMELINE.minSeconds, Math.min(duration, start + this.maxLength), end],
    ];
    for (const [element, low, high, now] of values) {
      element.setAttribute("aria-valuemin", low.toFixed(1));
      element.setAttribute("aria-valuemax", high.toFixed(1));
      element.setAttribute("aria-valuenow", now.toFixed(1));
      element.setAttribute("aria-valuetext", text);
    }
    this.label.textContent =
      `Start ${mgsv.seconds(start)} \u00b7 end ${mgsv.seconds(end)} \u00b7 ${(end - start).toFixed(1)} s`;
    const others = this.others.length
      ? `; other moments: ${this.others.map((o) => `${mgsv.seconds(o.start)} to ${mgsv.seconds(o.end)}`).join(", ")}`
      : "";
    this.canvas.setAttribute(
      "aria-label",
      `Waveform of ${this.title}, ${mgsv.seconds(duration)} long; the chosen moment is ` +
        `${mgsv.seconds(this.moment.start)} to ${mgsv.seconds(this.moment.end)}${others}; the music ${text}`,
    );
    this.scheduleDraw();
  }

  scheduleDraw() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.draw();
    });
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = Math.round(canvas.clientWidth * ratio);
    const height = Math.round(canvas.clientHeight * ratio);
    if (!width || !height) return;
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    const g = canvas.getContext("2d");
    g.clearRect(0, 0, width, height);
    const ruler = TIMELINE.rulerPx * ratio;
    const waveHeight = height - ruler;
    const x = (seconds) => (seconds / this.duration) * width;
    const colors = TIMELINE.colors;

    // The other moments, then the model's moment: bands behind the waveform, each with its edge along the top.
    for (const other of this.others) {
      const width = Math.max(1, x(other.end) - x(other.start));
      g.fillStyle = colors.other;
      g.fillRect(x(other.start), 0, width, waveHeight);
      g.fillStyle = colors.otherEdge;
      g.fillRect(x(other.start), 0, width, 3 * ratio);
    }
    g.fillStyle = colors.moment;
    g.fillRect(x(this.moment.start), 0, Math.max(1, x(this.moment.end) - x(this.moment.start)), waveHeight);
    g.fillStyle = colors.momentEdge;
    g.fillRect(x(this.moment.start), 0, Math.max(1, x(this.moment.end) - x(this.moment.start)), 3 * ratio);

    this.drawWave(g, width, waveHeight, x);

    if (this.snapping()) {
      g.fillStyle = colors.beat;
      for (const beat of this.beats) g.fillRect(Math.round(x(beat)), waveHeight - 6 * ratio, ratio, 6 * ratio);
    }
    this.drawRuler(g, width, waveHeight, ratio, x);
  }

  drawWave(g, width, waveHeight, x) {
    const middle = waveHeight / 2;
    const colors = TIMELINE.colors;
    if (!this.peaks) {
      g.fillStyle = colors.empty;
      g.fillRect(0, middle - 1, width, 2);
      if (this.peaksMessage) {
        g.fillStyle = colors.label;
        g.font = `${12 * (window.devicePixelRatio || 1)}px system-ui, sans-serif`;
        g.fillText(this.peaksMessage, 8, middle - 8);
      }
      return;
    }
    const { min, max, seconds } = this.peaks;
    const columns = min.length;
    let loudest = 0.1; // the waveform fills the lane; near-silence is not blown up to full height
    for (let i = 0; i < columns; i += 1) loudest = Math.max(loudest, -min[i], max[i]);
    const scale = (middle - 2) / loudest;
    const selStart = x(this.start);
    const selEnd = x(this.end);
    for (let px = 0; px < width; px += 1) {
      const t0 = (px / width) * this.duration;
      const t1 = ((px + 1) / width) * this.duration;
      const c0 = Math.floor((t0 / seconds) * columns);
      if (c0 >= columns) break;
      const c1 = Math.min(columns, Math.max(c0 + 1, Math.ceil((t1 / seconds) * columns)));
      let low = 0;
      let high = 0;
      for (let c = c0; c < c1; c += 1) {
        low = Math.min(low, min[c]);
        high = Math.max(high, max[c]);
      }
      g.fillStyle = px >= selStart && px < selEnd ? colors.waveSelected : colors.wave;
      const top = middle - high * scale;
      g.fillRect(px, top, 1, Math.max(1, middle - low * scale - top));
    }
  }

  drawRuler(g, width, waveHeight, ratio, x) {
    const perPixel = this.duration / (width / ratio);
    const step = TIMELINE.tickSteps.find((s) => s / perPixel >= TIMELINE.labelGapPx) || 1200;
    g.fillStyle = TIMELINE.colors.tick;
    g.fillRect(0, waveHeight, width, ratio);
    g.font = `${10 * ratio}px system-ui, sans-serif`;
    g.textBaseline = "top";
    for (let t = 0; t <= this.duration + 1e-6; t += step) {
      const at = Math.round(x(t));
      g.fillStyle = TIMELINE.colors.tick;
      g.fillRect(at, waveHeight, ratio, 5 * ratio);
      const text = step < 1 ? mgsv.seconds(t) : mgsv.seconds(t).replace(/\.\d$/, "");
      const textWidth = g.measureText(text).width;
      if (at + 3 * ratio + textWidth <= width) {
        g.fillStyle = TIMELINE.colors.label;
        g.fillText(text, at + 3 * ratio, waveHeight + 5 * ratio);
      }
    }
  }

  // -- pointer and keyboard ------------------------------------------------------------------------------------

  timeAt(event) {
    const box = this.lane.getBoundingClientRect();
    return clamp(((event.clientX - box.left) / box.width) * this.duration, 0, this.duration);
  }

  pointerDown(event) {
    if (event.button !== undefined && event.button !== 0) return;
    const target = event.target;
    let mode = "move";
    if (target === this.startHandle) mode = "start";
    else if (target === this.endHandle) mode = "end";
    else if (target !== this.selectionEl && event.pointerType === "touch") mode = "tap";
    if (mode === "tap") {
      // A finger on the bare waveform may be scrolling the page: the music moves there only on a tap.
      this.drag = { mode, id: event.pointerId, x: event.clientX, y: event.clientY };
      return;
    }
    const t = this.timeAt(event);
    // The selection and its grips are held where they were pressed (they do not jump to the pointer); elsewhere on
    // the lane, the music starts where it was pressed.
    let grab = 0;
    if (target === this.selectionEl || mode === "start") grab = t - this.start;
    else if (mode === "end") grab = t - this.end;
    this.drag = { mode, grab, id: event.pointerId };
    this.lane.setPointerCapture(event.pointerId);
    (mode === "move" ? this.selectionEl : target).focus({ preventScroll: true });
    event.preventDefault();
    if (target !== this.selectionEl && mode === "move") this.dragTo(t);
  }

  pointerMove(event) {
    if (!this.drag || event.pointerId !== this.drag.id || this.drag.mode === "tap") return;
    this.dragTo(this.timeAt(event));
  }

  pointerUp(event) {
    const drag = this.drag;
    if (!drag || event.pointerId !== drag.id) return;
    this.drag = null;
    if (drag.mode === "tap") {
      const still = Math.hypot(event.clientX - drag.x, event.clientY - drag.y) < 10;
      if (event.type !== "pointerup" || !still) return; // the page scrolled (pointercancel), or a swipe
      const length = this.end - this.start;
      this.moveTo(this.snapped(this.timeAt(event), (b) => b >= 0 && b + length <= this.duration + 1e-6));
    }
    this.onCommit(this.selection());
  }

  dragTo(t) {
    const { mode, grab } = this.drag;
    const at = t - grab;
    const length = this.end - this.start;
    if (mode === "move") {
      this.moveTo(this.snapped(at, (b) => b >= 0 && b + length <= this.duration + 1e-6));
    } else if (mode === "start") {
      this.trimStart(this.snapped(at, (b) => b <= this.end - TIMELINE.minSeconds && b >= this.end - this.maxLength));
    } else {
      this.trimEnd(this.snapped(at, (b) => b >= this.start + TIMELINE.minSeconds && b <= this.start + this.maxLength));
    }
  }

  key(event, mode) {
    const bar = event.shiftKey || event.key === "PageUp" || event.key === "PageDown";
    let direction = 0;
    if (event.key === "ArrowRight" || event.key === "ArrowUp" || event.key === "PageUp") direction = 1;
    else if (event.key === "ArrowLeft" || event.key === "ArrowDown" || event.key === "PageDown") direction = -1;
    else if (event.key !== "Home" && event.key !== "End") return;
    event.preventDefault();
    const length = this.end - this.start;
    if (mode === "move") {
      if (event.key === "Home") this.moveTo(0);
      else if (event.key === "End") this.moveTo(this.duration - length);
      else this.moveTo(this.step(this.start, direction, bar, (b) => b + length <= this.duration + 1e-6));
    } else if (mode === "start") {
      if (event.key === "Home") this.trimStart(0);
      else if (event.key === "End") this.trimStart(this.end - TIMELINE.minSeconds);
      else this.trimStart(this.step(this.start, direction, bar, (b) => b <= this.end - TIMELINE.minSeconds));
    } else if (event.key === "Home") this.trimEnd(0);
    else if (event.key === "End") this.trimEnd(this.duration);
    else this.trimEnd(this.step(this.end, direction, bar, (b) => b >= this.start + TIMELINE.minSeconds));
    this.onCommit(this.selection());
  }

  // Where one key press moves `t`: the next beat (or bar of beats) when snapping, else 0.1 s (or 1 s).
  step(t, direction, bar, fits) {
    if (this.snapping()) {
      const beat = this.beatFrom(t, direction * (bar ? TIMELINE.beatsPerBar : 1), fits);
      return beat === null ? t : beat;
    }
    return t + direction * (bar ? TIMELINE.barSeconds : TIMELINE.nudgeSeconds);
  }
}
