// The labelling app's browser client. Plain JavaScript, no build step, no external assets.
//
// Masks are kept as Uint8Array at the image's full resolution and drawn with putImageData, so nothing
// is ever antialiased. A mask pixel holds 0 (no defect) or 1 + the index of its defect type in
// S.palette (type names, in the order this tab first met them), and is drawn in that type's colour.
// Every edit is sent to the server with the selected defect type; the server applies it to the stored
// mask (cell/labelling/masks.py), saves it and answers with the changed pixels and their types; the
// client shows exactly what was stored. Brush strokes are previewed while dragging with the same rule
// as the server: a pixel is painted when the distance from its centre to the stroke's polyline is <= radius.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  // Colours of the defect types, by palette index (the first one is the single-type mask's red).
  const TYPE_RGB = [[255, 40, 40], [40, 110, 255], [255, 210, 0], [0, 200, 70], [210, 60, 255],
                    [255, 130, 0], [255, 105, 180], [150, 255, 60], [160, 90, 40], [120, 120, 255]];
  const ERASE_RGB = [255, 255, 255];
  const PROPOSAL_RGB = [0, 230, 230];

  const S = {
    index: null, order: [], current: null, W: 0, H: 0,
    mask: null, revision: 0, defectType: null, proposal: null, palette: [], maskTypes: [],
    labels: null, labelBoxes: null, spReady: false,
    tool: "brush", size: 15, scale: 1, tx: 0, ty: 0,
    overlayVisible: true, opacity: 0.5,
    stroke: null, polygon: [], panning: null, spaceDown: false,
    queue: Promise.resolve(), pending: 0, ready: false, loadToken: 0,
    review: false, ranking: [], rankPos: -1, prediction: null, pollTimer: null,
  };

  // ------------------------------------------------------------------ helpers
  function setMessage(text, kind) {
    const el = $("message");
    el.textContent = text || "";
    el.className = kind || "";
  }

  async function api(method, path, body) {
    const opts = { method, headers: {} };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const res = await fetch(path, opts);
    const type = res.headers.get("Content-Type") || "";
    const data = type.startsWith("application/json") ? await res.json() : await res.blob();
    if (!res.ok) {
      const err = new Error((data && data.error) || ("HTTP " + res.status));
      err.status = res.status;
      throw err;
    }
    return data;
  }

  function b64ToBytes(b64) {
    const bin = atob(b64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  // 1 + the palette index of defect type `name` (added to the palette when new).
  function typeValue(name) {
    let i = S.palette.indexOf(name);
    if (i < 0) { S.palette.push(name); i = S.palette.length - 1; }
    return i + 1;
  }

  function typeRgb(value) { return TYPE_RGB[(value - 1) % TYPE_RGB.length]; }

  // Write a wire patch {x, y, w, h, bits[, types, runs]} into a full-size Uint8Array mask of width W.
  // A typed patch's defect pixels get 1 + the palette index of their type; an untyped one's get 1.
  function applyPatch(target, W, patch) {
    const bytes = b64ToBytes(patch.bits);
    const runs = patch.runs || null;
    const values = runs ? patch.types.map(typeValue) : null;
    let ri = 0, left = runs && runs.length ? runs[1] : 0;
    let bit = 0;
    for (let r = 0; r < patch.h; r++) {
      let o = (patch.y + r) * W + patch.x;
      for (let c = 0; c < patch.w; c++, bit++) {
        const on = (bytes[bit >> 3] >> (7 - (bit & 7))) & 1;
        if (!on) { target[o + c] = 0; continue; }
        if (!runs) { target[o + c] = 1; continue; }
        target[o + c] = values[runs[ri] - 1];
        if (--left === 0) { ri += 2; left = runs[ri + 1]; }
      }
    }
  }

  function loadImage(url) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error("cannot load " + url));
      img.src = url;
    });
  }

  function ctx(id) {
    const c = $(id).getContext("2d", { willReadFrequently: false });
    c.imageSmoothingEnabled = false;
    return c;
  }

  // Pixels within `radius` of the polyline `pts` ([[x, y], ...]): calls fn(index) for each (same rule as masks.py).
  function footprint(pts, radius, W, H, fn) {
    const r2 = radius * radius;
    const segs = pts.length === 1 ? [[pts[0], pts[0]]] : [];
    for (let i = 0; i + 1 < pts.length; i++) segs.push([pts[i], pts[i + 1]]);
    for (const [p0, p1] of segs) {
      const x0 = Math.max(Math.floor(Math.min(p0[0], p1[0]) - radius), 0);
      const x1 = Math.min(Math.ceil(Math.max(p0[0], p1[0]) + radius) + 1, W);
      const y0 = Math.max(Math.floor(Math.min(p0[1], p1[1]) - radius), 0);
      const y1 = Math.min(Math.ceil(Math.max(p0[1], p1[1]) + radius) + 1, H);
      const dx = p1[0] - p0[0], dy = p1[1] - p0[1];
      const L2 = dx * dx + dy * dy;
      for (let y = y0; y < y1; y++) {
        for (let x = x0; x < x1; x++) {
          let t = L2 > 0 ? ((x - p0[0]) * dx + (y - p0[1]) * dy) / L2 : 0;
          t = t < 0 ? 0 : t > 1 ? 1 : t;
          const ex = x - (p0[0] + t * dx), ey = y - (p0[1] + t * dy);
          if (ex * ex + ey * ey <= r2) fn(y * W + x);
        }
      }
    }
  }

  // ------------------------------------------------------------------ rendering
  function sizeLayers(W, H) {
    for (const c of document.querySelectorAll("#stage canvas")) { c.width = W; c.height = H; }
    $("stage").style.width = W + "px";
    $("stage").style.height = H + "px";
  }

  // Draw the non-zero pixels of `target` in the box: in colour `rgb`, or with rgb = null in the colour
  // of each pixel's defect type.
  function paintMask(target, canvasId, rgb, x0 = 0, y0 = 0, w = S.W, h = S.H) {
    if (!target || w <= 0 || h <= 0) return;
    const c = ctx(canvasId);
    const img = c.createImageData(w, h);
    const d = img.data;
    for (let r = 0; r < h; r++) {
      let o = (y0 + r) * S.W + x0, p = r * w * 4;
      for (let col = 0; col < w; col++, o++, p += 4) {
        const v = target[o];
        if (v) {
          const k = rgb || typeRgb(v);
          d[p] = k[0]; d[p + 1] = k[1]; d[p + 2] = k[2]; d[p + 3] = 255;
        }
      }
    }
    c.putImageData(img, x0, y0);
  }

  function selectedRgb() { return typeRgb(typeValue(S.defectType || $("defect-type").value)); }

  // The legend: every known defect type in its colour; the ones in this image marked, the selected one
  // highlighted. Clicking an entry selects that type for the next edits.
  function renderLegend() {
    const el = $("legend");
    el.textContent = "";
    for (const t of S.index ? S.index.defect_types : []) typeValue(t);
    for (const t of S.maskTypes) typeValue(t);
    const shown = S.palette.filter((t) => S.index.defect_types.includes(t) || S.maskTypes.includes(t));
    for (const t of shown) {
      const item = document.createElement("div");
      item.className = "legend-item" + (t === S.defectType ? " selected" : "") + (S.maskTypes.includes(t) ? " present" : "");
      item.dataset.type = t;
      item.title = S.maskTypes.includes(t) ? `${t}: in this image` : t;
      const sw = document.createElement("span");
      sw.className = "swatch";
      const rgb = typeRgb(typeValue(t));
      sw.style.background = `rgb(${rgb[0]}, ${rgb[1]}, ${rgb[2]})`;
      const name = document.createElement("span");
      name.textContent = t;
      item.append(sw, name);
      if (S.index.defect_types.includes(t)) item.onclick = () => selectType(t);
      el.append(item);
    }
  }

  function selectType(name) {
    S.defectType = name;
    $("defect-type").value = name;
    renderLegend();
  }

  function clearLayer(id) { ctx(id).clearRect(0, 0, S.W, S.H); }

  function applyOverlayStyle() {
    const a = S.overlayVisible ? S.opacity : 0;
    $("mask-layer").style.opacity = a;
    $("proposal-layer").style.opacity = S.overlayVisible ? Math.max(S.opacity, 0.35) : 0;
    $("heat-layer").style.opacity = S.overlayVisible && S.review ? 0.6 : 0;
    $("pred-layer").style.opacity = S.overlayVisible && S.review ? 1 : 0;
    $("sp-layer").style.opacity = S.tool === "superpixel" ? 0.55 : 0;
    $("preview-layer").style.opacity = 0.6;
  }

  function applyTransform() {
    $("stage").style.transform = `translate(${S.tx}px, ${S.ty}px) scale(${S.scale})`;
  }

  function fit() {
    const vp = $("viewport").getBoundingClientRect();
    if (!S.W) return;
    S.scale = Math.min(vp.width / S.W, vp.height / S.H);
    S.tx = (vp.width - S.W * S.scale) / 2;
    S.ty = (vp.height - S.H * S.scale) / 2;
    applyTransform();
  }

  function toImage(ev) {
    const rect = $("stage").getBoundingClientRect();
    return [(ev.clientX - rect.left) / S.scale - 0.5, (ev.clientY - rect.top) / S.scale - 0.5];
  }

  // ------------------------------------------------------------------ sidebar
  function captureById(id) { return S.index.captures.find((c) => c.id === id); }
  function partById(id) { return S.index.parts.find((p) => p.part_id === id); }

  function buildOrder() {
    const byPart = new Map();
    for (const c of S.index.captures) {
      if (!byPart.has(c.part_id)) byPart.set(c.part_id, []);
      byPart.get(c.part_id).push(c);
    }
    S.order = [];
    for (const p of S.index.parts) for (const c of byPart.get(p.part_id) || []) S.order.push(c.id);
  }

  function renderSidebar() {
    $("dataset").textContent = S.index.dataset + " (" + S.index.parts.length + " parts, " + S.index.captures.length + " images)";
    const list = $("parts");
    list.textContent = "";
    const cur = S.current ? captureById(S.current) : null;
    for (const p of S.index.parts) {
      const li = document.createElement("li");
      li.className = "part" + (cur && cur.part_id === p.part_id ? " current" : "");
      li.dataset.part = p.part_id;
      const head = document.createElement("div");
      head.className = "head";
      const name = document.createElement("span");
      name.textContent = p.part_id;
      const badge = document.createElement("span");
      badge.className = "badge " + p.label + (p.label === "defective" && !p.labelled ? " incomplete" : "");
      badge.textContent = p.label + (p.label === "defective" ? ` ${p.n_masked_poses}/${p.n_captures}` : "");
      head.append(name, badge);
      head.onclick = () => { const first = S.index.captures.find((c) => c.part_id === p.part_id); if (first) openCapture(first.id); };
      li.append(head);
      if (cur && cur.part_id === p.part_id) {
        const poses = document.createElement("ol");
        poses.className = "poses";
        for (const c of S.index.captures.filter((c) => c.part_id === p.part_id)) {
          const pl = document.createElement("li");
          pl.className = "pose" + (c.id === S.current ? " current" : "");
          pl.dataset.capture = c.id;
          const n = document.createElement("span");
          n.textContent = c.pose_id;
          const a = document.createElement("span");
          if (c.area_px > 0) { a.className = "area"; a.textContent = c.area_px + " px"; a.title = (c.types || []).join(", "); }
          if (c.has_proposal) { const pr = document.createElement("span"); pr.className = "prop"; pr.textContent = " carried"; a.append(pr); }
          pl.append(n, a);
          pl.onclick = () => openCapture(c.id);
          poses.append(pl);
        }
        li.append(poses);
      }
      list.append(li);
    }
    const sel = $("defect-type");
    const keep = S.defectType || sel.value;
    sel.textContent = "";
    for (const t of S.index.defect_types) { const o = document.createElement("option"); o.value = o.textContent = t; sel.append(o); }
    if (keep && S.index.defect_types.includes(keep)) sel.value = keep;
    S.defectType = sel.value;
    renderLegend();
  }

  function updateButtons() {
    $("accept").disabled = !S.proposal;
    $("discard").disabled = !S.proposal;
    for (const b of document.querySelectorAll("[data-tool]")) b.classList.toggle("active", b.dataset.tool === S.tool);
    $("review").classList.toggle("active", S.review);
    $("viewport").classList.toggle("panning", S.tool === "pan");
    applyOverlayStyle();
  }

  function updateStatus() {
    const c = S.current ? captureById(S.current) : null;
    if (!c) return;
    const p = partById(c.part_id);
    $("where").textContent = `${c.campaign} / ${c.part_id} / ${c.pose_id}  (${S.W}x${S.H})  part: ${p ? p.label : "?"}`;
    $("save").textContent = S.pending ? "saving..." : `saved r${S.revision}`;
  }

  // ------------------------------------------------------------------ loading a capture
  async function refreshIndex() {
    S.index = await api("GET", "/api/index");
    buildOrder();
    $("review-group").hidden = !S.index.review;
    renderSidebar();
  }

  function setMaskState(st) {
    S.revision = st.revision;
    S.mask = new Uint8Array(S.W * S.H);
    applyPatch(S.mask, S.W, st.mask);
    S.maskTypes = st.types || [];
    clearLayer("mask-layer");
    paintMask(S.mask, "mask-layer", null);
    renderLegend();  // the selected defect type stays selected from image to image
    S.proposal = null;
    clearLayer("proposal-layer");
    if (st.proposal) {
      S.proposal = new Uint8Array(S.W * S.H);
      applyPatch(S.proposal, S.W, st.proposal.mask);
      paintMask(S.proposal, "proposal-layer", PROPOSAL_RGB);
    }
    $("undo").disabled = !st.can_undo;
    $("redo").disabled = !st.can_redo;
    updateButtons();
    updateStatus();
  }

  async function openCapture(id) {
    const token = ++S.loadToken;
    await S.queue; // finish pending saves of the previous image first
    S.ready = false;
    S.spReady = false;
    S.polygon = [];
    S.stroke = null;
    const c = captureById(id);
    const sameSize = c.width === S.W && c.height === S.H;
    S.current = id;
    S.W = c.width; S.H = c.height;
    renderSidebar();
    try {
      const [img, st] = await Promise.all([loadImage(`/api/captures/${id}/image.png`), api("GET", `/api/captures/${id}/mask`)]);
      if (token !== S.loadToken) return;
      sizeLayers(S.W, S.H);
      ctx("image-layer").drawImage(img, 0, 0);
      setMaskState(st);
      if (!sameSize) fit();
      S.ready = true;
      if (S.index.read_only) setMessage("This dataset is open read-only: browse and review only, edits are not saved.", "warn");
      else setMessage("");
      loadSuperpixels(id, token);
      if (S.review) loadReviewLayers(id, token);
      else { clearLayer("heat-layer"); clearLayer("pred-layer"); }
      const i = S.order.indexOf(id);
      const next = [S.order[i + 1], S.order[i - 1]].filter((x) => x !== undefined);
      if (next.length) api("POST", "/api/prefetch", { ids: next }).catch(() => {});
    } catch (e) {
      setMessage("cannot open image: " + e.message, "error");
    }
  }

  async function loadSuperpixels(id, token) {
    clearLayer("sp-layer");
    try {
      const img = await loadImage(`/api/captures/${id}/superpixels.png`);
      if (token !== S.loadToken) return;
      const off = document.createElement("canvas");
      off.width = S.W; off.height = S.H;
      const oc = off.getContext("2d", { willReadFrequently: true });
      oc.drawImage(img, 0, 0);
      const d = oc.getImageData(0, 0, S.W, S.H).data;
      const labels = new Int32Array(S.W * S.H);
      let maxId = 0;
      for (let i = 0, p = 0; i < labels.length; i++, p += 4) {
        const v = d[p] | (d[p + 1] << 8) | (d[p + 2] << 16);
        labels[i] = v;
        if (v > maxId) maxId = v;
      }
      const boxes = new Int32Array((maxId + 1) * 4);
      for (let k = 0; k <= maxId; k++) { boxes[4 * k] = S.W; boxes[4 * k + 1] = S.H; boxes[4 * k + 2] = -1; boxes[4 * k + 3] = -1; }
      const bl = ctx("sp-layer").createImageData(S.W, S.H);
      const bd = bl.data;
      for (let y = 0; y < S.H; y++) {
        for (let x = 0; x < S.W; x++) {
          const i = y * S.W + x, v = labels[i];
          const b = 4 * v;
          if (x < boxes[b]) boxes[b] = x;
          if (y < boxes[b + 1]) boxes[b + 1] = y;
          if (x > boxes[b + 2]) boxes[b + 2] = x;
          if (y > boxes[b + 3]) boxes[b + 3] = y;
          if ((x + 1 < S.W && labels[i + 1] !== v) || (y + 1 < S.H && labels[i + S.W] !== v)) {
            bd[4 * i] = 255; bd[4 * i + 1] = 230; bd[4 * i + 2] = 0; bd[4 * i + 3] = 255;
          }
        }
      }
      ctx("sp-layer").putImageData(bl, 0, 0);
      S.labels = labels;
      S.labelBoxes = boxes;
      S.spReady = true;
    } catch (e) {
      setMessage("superpixels unavailable: " + e.message, "warn");
    }
  }

  // ------------------------------------------------------------------ edits
  function sendEdit(body) {
    const id = S.current;
    S.pending++;
    updateStatus();
    S.queue = S.queue.then(async () => {
      try {
        body.base_revision = S.revision;
        body.defect_type = $("defect-type").value || undefined;
        const res = await api("POST", `/api/captures/${id}/edit`, body);
        S.lastEdit = body;
        if (id !== S.current) return;
        if (res.patch) {
          applyPatch(S.mask, S.W, res.patch);
          const p = res.patch;
          ctx("mask-layer").clearRect(p.x, p.y, p.w, p.h);
          paintMask(S.mask, "mask-layer", null, p.x, p.y, p.w, p.h);
        }
        S.revision = res.revision;
        S.maskTypes = res.types;
        renderLegend();
        $("undo").disabled = !res.can_undo;
        $("redo").disabled = !res.can_redo;
        const c = captureById(id);
        c.revision = res.revision; c.area_px = res.area_px; c.has_proposal = res.has_proposal;
        c.defect_type = res.defect_type; c.types = res.types;
        const pi = S.index.parts.findIndex((q) => q.part_id === res.part.part_id);
        if (pi >= 0) S.index.parts[pi] = res.part;
        if (!res.has_proposal && S.proposal) { S.proposal = null; clearLayer("proposal-layer"); }
        renderSidebar();
        if (S.review) pollReview();  // the prediction does not depend on the mask; the ranking does
      } catch (e) {
        if (e.status === 409) {
          setMessage("This mask was changed elsewhere (another tab?): reloaded the stored version. " + e.message, "warn");
          if (id === S.current) setMaskState(await api("GET", `/api/captures/${id}/mask`));
        } else {
          setMessage("edit not saved: " + e.message, "error");
        }
      } finally {
        S.pending--;
        if (!S.stroke) clearLayer("preview-layer");
        updateButtons();
        updateStatus();
      }
    }).catch((e) => setMessage("cannot reach the labelling server: " + e.message, "error"));
    return S.queue;
  }

  // Paint the newest segment of the stroke into the preview buffer and redraw only its box.
  function previewStroke() {
    const st = S.stroke;
    if (!st) return;
    if (!st.buf) st.buf = new Uint8Array(S.W * S.H);
    let minX = S.W, minY = S.H, maxX = -1, maxY = -1;
    footprint(st.points.slice(-2), st.radius, S.W, S.H, (i) => {
      st.buf[i] = 1;
      const x = i % S.W, y = (i / S.W) | 0;
      if (x < minX) minX = x; if (y < minY) minY = y; if (x > maxX) maxX = x; if (y > maxY) maxY = y;
    });
    if (maxX < 0) return;
    paintMask(st.buf, "preview-layer", st.tool === "erase" ? ERASE_RGB : selectedRgb(), minX, minY, maxX - minX + 1, maxY - minY + 1);
  }

  function previewSuperpixels() {
    const st = S.stroke;
    if (!st || !S.spReady) return;
    const pts = st.points;
    const fresh = [];
    footprint(pts.slice(-2), 0.5, S.W, S.H, (i) => { const v = S.labels[i]; if (v > 0 && !st.ids.has(v)) { st.ids.add(v); fresh.push(v); } });
    const c = ctx("preview-layer");
    const rgb = st.value === false ? ERASE_RGB : selectedRgb();
    for (const v of fresh) {
      const b = 4 * v, x0 = S.labelBoxes[b], y0 = S.labelBoxes[b + 1], x1 = S.labelBoxes[b + 2], y1 = S.labelBoxes[b + 3];
      if (x1 < x0) continue;
      const w = x1 - x0 + 1, h = y1 - y0 + 1;
      const img = c.getImageData(x0, y0, w, h);
      for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
        if (S.labels[(y0 + y) * S.W + x0 + x] === v) { const p = 4 * (y * w + x); img.data[p] = rgb[0]; img.data[p + 1] = rgb[1]; img.data[p + 2] = rgb[2]; img.data[p + 3] = 255; }
      }
      c.putImageData(img, x0, y0);
    }
  }

  function previewPolygon(cursor) {
    const c = ctx("preview-layer");
    c.clearRect(0, 0, S.W, S.H);
    if (!S.polygon.length) return;
    c.strokeStyle = "#ffeb3b";
    c.lineWidth = Math.max(1 / S.scale, 0.5);
    c.beginPath();
    c.moveTo(S.polygon[0][0] + 0.5, S.polygon[0][1] + 0.5);
    for (const p of S.polygon.slice(1)) c.lineTo(p[0] + 0.5, p[1] + 0.5);
    if (cursor) c.lineTo(cursor[0] + 0.5, cursor[1] + 0.5);
    c.stroke();
  }

  function closePolygon(remove) {
    if (S.polygon.length >= 3) sendEdit({ op: "polygon", points: S.polygon.slice(), value: !remove });
    S.polygon = [];
    previewPolygon(null);
  }

  // ------------------------------------------------------------------ mouse
  function onDown(ev) {
    if (!S.ready) return;
    $("viewport").focus();
    const p = toImage(ev);
    if (ev.button === 1 || S.tool === "pan" || S.spaceDown) {
      S.panning = { x: ev.clientX, y: ev.clientY, tx: S.tx, ty: S.ty };
      ev.preventDefault();
      return;
    }
    const remove = ev.shiftKey || ev.button === 2;
    if (S.tool === "brush" || S.tool === "erase") {
      const tool = remove && S.tool === "brush" ? "erase" : S.tool;
      S.stroke = { tool, points: [p], radius: S.size / 2 };
      previewStroke();
    } else if (S.tool === "superpixel") {
      S.stroke = { tool: "superpixel", points: [p], ids: new Set(), value: remove ? false : "toggle" };
      previewSuperpixels();
    } else if (S.tool === "polygon") {
      if (S.polygon.length >= 3) {
        const f = S.polygon[0];
        if (Math.hypot(f[0] - p[0], f[1] - p[1]) * S.scale < 6) { closePolygon(remove); return; }
      }
      S.polygon.push(p);
      previewPolygon(null);
    } else if (S.tool === "flood") {
      sendEdit({ op: "flood", seed: p, tolerance: Number($("tolerance").value), value: !remove });
    }
    ev.preventDefault();
  }

  function onMove(ev) {
    if (!S.ready) return;
    const p = toImage(ev);
    $("pos").textContent = `x ${Math.round(p[0])}  y ${Math.round(p[1])}  zoom ${S.scale.toFixed(2)}`;
    if (S.panning) {
      S.tx = S.panning.tx + ev.clientX - S.panning.x;
      S.ty = S.panning.ty + ev.clientY - S.panning.y;
      applyTransform();
      return;
    }
    if (S.stroke) {
      const last = S.stroke.points[S.stroke.points.length - 1];
      if (Math.hypot(last[0] - p[0], last[1] - p[1]) < 0.5) return;
      S.stroke.points.push(p);
      if (S.stroke.tool === "superpixel") previewSuperpixels(); else previewStroke();
    } else if (S.tool === "polygon" && S.polygon.length) {
      previewPolygon(p);
    }
  }

  function onUp() {
    if (S.panning) { S.panning = null; return; }
    const st = S.stroke;
    if (!st) return;
    S.stroke = null;
    if (st.tool === "superpixel") sendEdit({ op: "superpixel", points: st.points, value: st.value });
    else sendEdit({ op: st.tool === "erase" ? "erase" : "brush", points: st.points, radius: st.radius });
  }

  function onWheel(ev) {
    ev.preventDefault();
    const vp = $("viewport").getBoundingClientRect();
    const mx = ev.clientX - vp.left, my = ev.clientY - vp.top;
    const factor = Math.exp(-ev.deltaY * 0.0015);
    const ns = Math.min(Math.max(S.scale * factor, 0.05), 40);
    S.tx = mx - (mx - S.tx) * (ns / S.scale);
    S.ty = my - (my - S.ty) * (ns / S.scale);
    S.scale = ns;
    applyTransform();
  }

  // ------------------------------------------------------------------ navigation
  function step(delta) {
    if (!S.order.length) return;
    const i = S.order.indexOf(S.current);
    const j = Math.min(Math.max(i + delta, 0), S.order.length - 1);
    if (j !== i) openCapture(S.order[j]);
  }

  function stepPose(delta) {
    const c = captureById(S.current);
    const same = S.index.captures.filter((x) => x.part_id === c.part_id).map((x) => x.id);
    const i = same.indexOf(S.current);
    openCapture(same[(i + delta + same.length) % same.length]);
  }

  function nextUnlabelled() {
    const i = S.order.indexOf(S.current);
    for (let k = 1; k <= S.order.length; k++) {
      const id = S.order[(i + k) % S.order.length];
      const part = partById(captureById(id).part_id);
      if (!part.labelled) { openCapture(id); return; }
    }
    setMessage("every part is labelled");
  }

  // ------------------------------------------------------------------ part labels, carry, types
  async function markPart(label) {
    const c = captureById(S.current);
    if (!c) return;
    await S.queue;
    const body = { label };
    const part = partById(c.part_id);
    if (label === "good" && part.n_masked_poses > 0) {
      if (!window.confirm(`Part ${c.part_id} has ${part.n_masked_poses} masked pose(s). Mark it good and delete its masks?`)) return;
      body.clear_masks = true;
    }
    try {
      await api("POST", `/api/parts/${encodeURIComponent(c.part_id)}/label`, body);
      await refreshIndex();
      setMaskState(await api("GET", `/api/captures/${S.current}/mask`));
      setMessage(`part ${c.part_id} marked ${label}`);
    } catch (e) { setMessage(e.message, "error"); }
  }

  async function carry() {
    await S.queue;
    try {
      const res = await api("POST", `/api/captures/${S.current}/carry`, {});
      await refreshIndex();
      setMessage(`mask carried to ${res.proposals.length} pose(s) as proposals: open them and Accept (A) or Discard (X)`);
    } catch (e) { setMessage("carry failed: " + e.message, "error"); }
  }

  async function discard() {
    if (!S.proposal) return;
    await api("POST", `/api/captures/${S.current}/proposal/discard`, {});
    S.proposal = null;
    clearLayer("proposal-layer");
    captureById(S.current).has_proposal = false;
    renderSidebar();
    updateButtons();
  }

  async function addType() {
    const name = $("new-type").value.trim();
    if (!name) return;
    try {
      const res = await api("POST", "/api/defect_types", { name });
      S.index.defect_types = res.defect_types;
      S.defectType = name;
      renderSidebar();
      selectType(name);
      $("new-type").value = "";
    } catch (e) { setMessage(e.message, "error"); }
  }

  // ------------------------------------------------------------------ review
  async function toggleReview() {
    if (!S.index.review) return;
    S.review = !S.review;
    $("review-panel").hidden = !S.review;
    updateButtons();
    if (S.review) {
      try { await api("POST", "/api/review/start", {}); } catch (e) { setMessage(e.message, "error"); }
      pollReview();
      loadReviewLayers(S.current, S.loadToken);
    } else {
      clearTimeout(S.pollTimer);
      clearLayer("heat-layer"); clearLayer("pred-layer");
    }
  }

  async function pollReview() {
    clearTimeout(S.pollTimer);
    if (!S.review) return;
    try {
      const st = await api("GET", "/api/review");
      S.ranking = st.ranking;
      $("review-progress").textContent = `${st.done}/${st.total} scored, threshold ${st.threshold.toPrecision(4)}` + (st.error ? " - " + st.error : "");
      const ol = $("ranking");
      ol.textContent = "";
      st.ranking.forEach((d, k) => {
        const li = document.createElement("li");
        const c = captureById(d.capture_id);
        li.textContent = `${c ? c.part_id + "/" + c.pose_id : d.capture_id}: ${d.total_px} px (FP ${d.false_positive_px}, FN ${d.false_negative_px})`;
        li.className = d.capture_id === S.current ? "current" : "";
        li.onclick = () => { S.rankPos = k; openCapture(d.capture_id); };
        ol.append(li);
      });
      if (st.running) S.pollTimer = setTimeout(pollReview, 1000);
    } catch (e) { setMessage(e.message, "error"); }
  }

  function jumpDisagreement(delta) {
    if (!S.review || !S.ranking.length) return;
    S.rankPos = Math.min(Math.max(S.rankPos + delta, 0), S.ranking.length - 1);
    openCapture(S.ranking[S.rankPos].capture_id).then(pollReview);
  }

  async function loadReviewLayers(id, token) {
    try {
      const img = await loadImage(`/api/captures/${id}/heatmap.png`);
      if (token !== S.loadToken) return;
      clearLayer("heat-layer");
      ctx("heat-layer").drawImage(img, 0, 0);
      await refreshPrediction(id);
    } catch (e) { setMessage("review: " + e.message, "error"); }
  }

  async function refreshPrediction(id) {
    const pred = await api("GET", `/api/captures/${id}/prediction`);
    if (id !== S.current) return;
    const m = new Uint8Array(S.W * S.H);
    applyPatch(m, S.W, pred.mask);
    const edge = new Uint8Array(S.W * S.H);
    for (let y = 0; y < S.H; y++) for (let x = 0; x < S.W; x++) {
      const i = y * S.W + x;
      if (m[i] && (x === 0 || y === 0 || x === S.W - 1 || y === S.H - 1 || !m[i - 1] || !m[i + 1] || !m[i - S.W] || !m[i + S.W])) edge[i] = 1;
    }
    clearLayer("pred-layer");
    paintMask(edge, "pred-layer", [255, 255, 0]);
  }

  // ------------------------------------------------------------------ keyboard
  function onKey(ev) {
    if (ev.target.tagName === "INPUT" || ev.target.tagName === "SELECT") return;
    const k = ev.key;
    const ctrl = ev.ctrlKey || ev.metaKey;
    if (ctrl && (k === "z" || k === "Z")) { sendEdit({ op: ev.shiftKey ? "redo" : "undo" }); ev.preventDefault(); return; }
    if (ctrl && (k === "y" || k === "Y")) { sendEdit({ op: "redo" }); ev.preventDefault(); return; }
    if (ctrl) return;
    const tools = { b: "brush", e: "erase", s: "superpixel", p: "polygon", f: "flood", h: "pan" };
    if (tools[k]) { setTool(tools[k]); return; }
    switch (k) {
      case "ArrowRight": step(1); break;
      case "ArrowLeft": step(-1); break;
      case "ArrowDown": stepPose(1); break;
      case "ArrowUp": stepPose(-1); break;
      case "u": nextUnlabelled(); break;
      case "o": S.overlayVisible = !S.overlayVisible; applyOverlayStyle(); break;
      case "g": markPart("good"); break;
      case "d": markPart("defective"); break;
      case "c": carry(); break;
      case "a": if (S.proposal) sendEdit({ op: "accept_proposal" }); break;
      case "x": discard(); break;
      case "r": toggleReview(); break;
      case "j": jumpDisagreement(1); break;
      case "k": jumpDisagreement(-1); break;
      case "0": fit(); break;
      case "1": case "2": case "3": case "4": case "5": case "6": case "7": case "8": case "9": {
        const t = S.index.defect_types[Number(k) - 1];
        if (t) selectType(t);
        break;
      }
      case ",": setSize(S.size - (S.size > 10 ? 5 : 1)); break;
      case ".": setSize(S.size + (S.size >= 10 ? 5 : 1)); break;
      case "Enter": if (S.tool === "polygon") closePolygon(ev.shiftKey); break;
      case "Escape": S.polygon = []; S.stroke = null; clearLayer("preview-layer"); break;
      case " ": S.spaceDown = true; break;
      default: return;
    }
    ev.preventDefault();
  }

  function setTool(t) { S.tool = t; S.polygon = []; clearLayer("preview-layer"); updateButtons(); }
  function setSize(v) { S.size = Math.min(Math.max(Math.round(v), 1), 200); $("size").value = S.size; $("size-out").textContent = S.size; }

  // ------------------------------------------------------------------ wiring
  function wire() {
    for (const b of document.querySelectorAll("[data-tool]")) b.onclick = () => setTool(b.dataset.tool);
    $("size").oninput = (e) => setSize(Number(e.target.value));
    $("opacity").oninput = (e) => { S.opacity = Number(e.target.value) / 100; applyOverlayStyle(); };
    $("toggle-overlay").onclick = () => { S.overlayVisible = !S.overlayVisible; applyOverlayStyle(); };
    $("undo").onclick = () => sendEdit({ op: "undo" });
    $("redo").onclick = () => sendEdit({ op: "redo" });
    $("mark-good").onclick = () => markPart("good");
    $("mark-defective").onclick = () => markPart("defective");
    $("mark-unlabelled").onclick = () => markPart("unlabelled");
    $("carry").onclick = carry;
    $("accept").onclick = () => sendEdit({ op: "accept_proposal" });
    $("discard").onclick = discard;
    $("add-type").onclick = addType;
    // The selected type applies to the pixels of the next edits only (painting over re-types them).
    $("defect-type").onchange = (e) => selectType(e.target.value);
    $("review").onclick = toggleReview;
    $("next-dis").onclick = () => jumpDisagreement(1);
    $("prev-dis").onclick = () => jumpDisagreement(-1);
    const vp = $("viewport");
    vp.addEventListener("mousedown", onDown);
    window.addEventListener("mousemove", onMove);
    window.addEventListener("mouseup", onUp);
    vp.addEventListener("wheel", onWheel, { passive: false });
    vp.addEventListener("contextmenu", (e) => e.preventDefault());
    vp.addEventListener("dblclick", () => { if (S.tool === "polygon") closePolygon(false); });
    window.addEventListener("keydown", onKey);
    window.addEventListener("keyup", (e) => { if (e.key === " ") S.spaceDown = false; });
    window.addEventListener("resize", fit);
    // Another tab may have saved this mask: check when this tab comes back.
    window.addEventListener("focus", async () => {
      if (!S.current || S.pending || !S.ready) return;
      try {
        const st = await api("GET", `/api/captures/${S.current}/mask`);
        if (st.revision !== S.revision && !S.pending) {
          setMaskState(st);
          setMessage("this mask was changed in another tab: showing the stored version", "warn");
        }
      } catch (e) { setMessage("cannot reach the labelling server: " + e.message, "error"); }
    });
  }

  async function main() {
    wire();
    setSize(15);
    try {
      await refreshIndex();
    } catch (e) { setMessage("cannot load the dataset: " + e.message, "error"); return; }
    if (!S.order.length) { setMessage("this dataset has no captures yet", "warn"); return; }
    await openCapture(S.order[0]);
  }

  // For tests and curious users: the state, and a promise that settles when pending saves are done.
  window.labelling = {
    state: S,
    idle: () => S.ready && S.pending === 0,
    settled: () => S.queue,
    open: openCapture,
    fit,
  };
  main();
})();
