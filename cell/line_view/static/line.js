// The live line page: polls /api/line and redraws what changed, without reloading.
"use strict";
(function () {
  const POLL_MS = 500;
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  const state = { version: -1, pictureOf: null, polls: 0, failures: 0, lastOk: false };

  function text(id, value) { $(id).textContent = value; }

  function fmt(x, digits) {
    if (x === null || x === undefined) return "–";
    return Number(x).toPrecision(digits || 4);
  }

  function renderStatus(status) {
    const el = $("state");
    if (!status) { el.textContent = "no status yet"; el.className = "state Initializing"; return; }
    el.textContent = status.state;
    el.className = "state " + status.state;
    el.title = status.reason ? status.state + ": " + status.reason : "system state";
    const parts = [];
    if (status.campaign) parts.push("campaign " + status.campaign);
    if (status.model) parts.push("model " + status.model);
    if (status.threshold !== null && status.threshold !== undefined) parts.push("threshold " + fmt(status.threshold, 5));
    text("job", parts.join(" · "));
    for (const v of ["OK", "NOK", "error"]) text("count-" + v, String((status.counts || {})[v] || 0));
  }

  function renderLast(last) {
    $("no-part").hidden = !!last;
    $("part").hidden = !last;
    if (!last) return;
    const verdict = $("verdict");
    verdict.textContent = last.verdict;
    verdict.className = "verdict " + last.verdict;
    text("part-id", last.part_id);
    text("part-index", "#" + last.index + " of campaign " + last.campaign);
    text("score-line", last.score === null
      ? "no part score (threshold " + fmt(last.threshold, 5) + ")"
      : "part score " + fmt(last.score, 5) + (last.score > last.threshold ? " > " : " ≤ ") + "threshold " + fmt(last.threshold, 5));
    text("reason", last.reason || "");
    text("times", "started " + last.started_at + " · finished " + last.finished_at);
    const key = last.campaign + "/" + last.index + "/" + last.part_id;
    const img = $("picture");
    if (last.has_picture && state.pictureOf !== key) {
      img.src = "/api/last/picture.png?part=" + encodeURIComponent(key);
      img.hidden = false;
      state.pictureOf = key;
    } else if (!last.has_picture) {
      img.hidden = true;
      img.removeAttribute("src");
      state.pictureOf = null;
    }
    text("picture-caption", last.has_picture ? (last.part_map ? "part map" : "heatmap of the worst pose")
                                             : "no picture stored for this part");
    const body = $("defects").tBodies[0];
    body.replaceChildren();
    (last.defects || []).forEach((d, i) => {
      const tr = document.createElement("tr");
      for (const v of [i + 1, fmt(d.x_mm, 4), fmt(d.y_mm, 4), fmt(d.area_mm2, 4), fmt(d.peak, 4)]) {
        const td = document.createElement("td");
        td.textContent = String(v);
        tr.appendChild(td);
      }
      body.appendChild(tr);
    });
    text("defect-count", "(" + last.defect_count + ")");
  }

  function el(name, attrs) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    return node;
  }

  function renderChart(recent, threshold) {
    const svg = $("chart");
    svg.replaceChildren();
    const W = 600, H = 240, L = 46, R = 8, T = 10, B = 18;
    const scores = recent.map((p) => p.score).filter((s) => s !== null);
    if (threshold !== null && threshold !== undefined) scores.push(threshold);
    let lo = scores.length ? Math.min(...scores) : 0, hi = scores.length ? Math.max(...scores) : 1;
    if (hi - lo < 1e-12) { hi = hi + 0.5 * (Math.abs(hi) || 1); lo = lo - 0.5 * (Math.abs(lo) || 1); }
    const pad = 0.08 * (hi - lo);
    lo -= pad; hi += pad;
    const n = Math.max(recent.length, 2);
    const x = (i) => L + (W - L - R) * (recent.length <= 1 ? 0.5 : i / (n - 1));
    const y = (s) => T + (H - T - B) * (1 - (s - lo) / (hi - lo));
    svg.appendChild(el("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
    svg.appendChild(el("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }));
    for (const v of [lo + pad, hi - pad]) {
      const label = el("text", { x: 2, y: y(v) + 4, class: "label" });
      label.textContent = fmt(v, 3);
      svg.appendChild(label);
    }
    if (threshold !== null && threshold !== undefined) {
      svg.appendChild(el("line", { x1: L, y1: y(threshold), x2: W - R, y2: y(threshold), class: "threshold" }));
    }
    recent.forEach((p, i) => {
      let mark;
      if (p.score === null) {
        mark = el("rect", { x: x(i) - 4, y: T, width: 8, height: 8, class: "error" });
      } else {
        mark = el("circle", { cx: x(i), cy: y(p.score), r: 4, class: p.verdict });
      }
      const tip = el("title", {});
      tip.textContent = p.part_id + ": " + p.verdict + (p.score === null ? "" : " " + fmt(p.score, 5));
      mark.appendChild(tip);
      mark.setAttribute("data-part", p.part_id);
      svg.appendChild(mark);
    });
  }

  function renderErrors(errors) {
    const list = $("errors");
    list.replaceChildren();
    for (const e of errors) {
      const li = document.createElement("li");
      const at = document.createElement("span");
      at.className = "at";
      at.textContent = e.at;
      li.appendChild(at);
      li.appendChild(document.createTextNode(e.message));
      list.appendChild(li);
    }
    $("no-errors").hidden = errors.length > 0;
  }

  function render(data) {
    renderStatus(data.status);
    renderLast(data.last);
    const threshold = data.status ? data.status.threshold : (data.last ? data.last.threshold : null);
    renderChart(data.recent, threshold);
    renderErrors(data.errors);
  }

  async function poll() {
    try {
      const response = await fetch("/api/line", { cache: "no-store" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      const data = await response.json();
      state.lastOk = true;
      $("link").hidden = true;
      if (data.version !== state.version) {
        state.version = data.version;
        render(data);
      }
    } catch (err) {
      state.failures += 1;
      state.lastOk = false;
      $("link").hidden = false;
    } finally {
      state.polls += 1;
      setTimeout(poll, POLL_MS);
    }
  }

  window.lineView = { state: state };
  poll();
})();
