// The status page: reads /status every second and shows rates, the actions and a chart of the
// last minutes.  Plain JavaScript, no library; everything it loads comes from this server.
"use strict";

(function () {
  const PERIOD_MS = 1000;        // one reading a second
  const TIMEOUT_MS = 2500;       // a reading that takes longer counts as no answer
  const WINDOW_S = 300;          // the chart's width in time

  const $ = (id) => document.getElementById(id);
  const history = [];            // {t: ms since 1970, rps, eps} or {t, gap: true}
  let prev = null;               // the previous reading: {t, s}
  let downSince = null;          // Date of the first missed reading, or null
  let updates = 0;               // readings shown (for the page's tests, in data-updates)

  // ---- formatting ------------------------------------------------------------------------------
  function num(v) {
    if (typeof v !== "number" || !isFinite(v)) return "\u2013";
    if (Math.abs(v) >= 1e9) return (v / 1e9).toFixed(2) + " G";
    if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(2) + " M";
    if (Math.abs(v) >= 1e4) return (v / 1e3).toFixed(1) + " k";
    return Number.isInteger(v) ? String(v) : v.toFixed(v < 10 ? 2 : 1);
  }
  function rate(v) {
    return typeof v === "number" && isFinite(v) ? num(Math.round(v * 10) / 10) : "\u2013";
  }
  function bytes(v) {
    if (typeof v !== "number" || !isFinite(v)) return "\u2013";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i === 0 ? Math.round(v) : v.toFixed(1)) + " " + units[i];
  }
  function seconds(v) {
    if (typeof v !== "number" || !isFinite(v)) return "\u2013";
    if (v < 1e-3) return (v * 1e6).toFixed(v < 1e-5 ? 1 : 0) + " \u00b5s";
    if (v < 1) return (v * 1e3).toFixed(v < 1e-2 ? 2 : 1) + " ms";
    return v.toFixed(2) + " s";
  }
  function duration(s) {
    if (typeof s !== "number" || !isFinite(s)) return "\u2013";
    const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    return m + "m " + Math.floor(s % 60) + "s";
  }
  function clock(d) {
    return d.toLocaleTimeString([], { hour12: false });
  }
  function errorTotal(s) {
    let n = 0;
    if (s.errors && typeof s.errors === "object")
      for (const k of Object.keys(s.errors)) if (typeof s.errors[k] === "number") n += s.errors[k];
    return n;
  }
  // A counter's rate between two readings; null when it went back (a restart).
  function perSecond(now, before, dt) {
    if (typeof now !== "number" || typeof before !== "number" || dt <= 0 || now < before)
      return null;
    return (now - before) / dt;
  }

  // ---- the page --------------------------------------------------------------------------------
  function setText(id, text) {
    const el = $(id);
    if (el.textContent !== text) el.textContent = text;
  }
  function cell(row, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    row.appendChild(td);
  }

  function showActions(s, before, dt) {
    const body = document.querySelector("#actions tbody");
    const actions = s.actions && typeof s.actions === "object" ? s.actions : null;
    $("no-actions").hidden = actions !== null;
    $("actions").hidden = actions === null;
    if (!actions) return;
    const rows = document.createDocumentFragment();
    for (const name of Object.keys(actions).sort()) {
      const a = actions[name] || {};
      const b = before && before.actions && before.actions[name];
      const tr = document.createElement("tr");
      tr.dataset.action = name;
      cell(tr, name);
      cell(tr, num(a.requests));
      cell(tr, rate(b ? perSecond(a.requests, b.requests, dt) : null));
      cell(tr, num(a.errors), a.errors > 0 ? "bad" : "");
      cell(tr, num(a.pending));
      cell(tr, seconds(a.p50_s));
      cell(tr, seconds(a.p99_s));
      cell(tr, seconds(a.max_s));
      rows.appendChild(tr);
    }
    body.replaceChildren(rows);
  }

  function showErrors(s) {
    const body = document.querySelector("#errors tbody");
    const names = s.errors && typeof s.errors === "object" ? Object.keys(s.errors).sort() : [];
    $("no-errors").hidden = names.length > 0;
    $("errors").hidden = names.length === 0;
    const rows = document.createDocumentFragment();
    for (const name of names) {
      const tr = document.createElement("tr");
      cell(tr, name);
      cell(tr, num(s.errors[name]));
      rows.appendChild(tr);
    }
    body.replaceChildren(rows);
  }

  function show(s, t) {
    let dt = 0, before = null;
    if (prev && typeof s.uptime_s === "number" && s.uptime_s >= (prev.s.uptime_s || 0)) {
      before = prev.s;
      dt = (t - prev.t) / 1000;
    }
    const rps = before ? perSecond(s.requests, before.requests, dt) : null;
    const eps = before ? perSecond(errorTotal(s), errorTotal(before), dt) : null;
    if (typeof s.title === "string" && s.title) {
      setText("title", s.title);
      document.title = s.title + " status";
    }
    setText("version", s.version ? "v" + s.version : "");
    setText("rate-requests", rate(rps));
    setText("rate-errors", rate(eps));
    setText("connections", num(s.connections));
    setText("pending", num(s.pending));
    setText("rate-in", before ? bytes(perSecond(s.bytes_in, before.bytes_in, dt)) + "/s" : "\u2013");
    setText("rate-out", before ? bytes(perSecond(s.bytes_out, before.bytes_out, dt)) + "/s" : "\u2013");
    setText("totals", "up " + duration(s.uptime_s) + " \u00b7 " + num(s.requests) + " requests, " +
      num(s.replies) + " replies, " + num(s.connections_total) + " connections, " +
      bytes(s.bytes_in) + " in, " + bytes(s.bytes_out) + " out");
    showActions(s, before, dt);
    showErrors(s);
    if (rps !== null) history.push({ t: Date.now(), rps: rps, eps: eps || 0 });
    prev = { t: t, s: s };
  }

  function setState(cls, text) {
    const el = $("state");
    el.className = "state " + cls;
    setText("state", text);
    document.body.classList.toggle("stale", cls === "down");
    document.documentElement.dataset.state = cls;
  }

  // ---- the chart ---------------------------------------------------------------------------------
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  function draw() {
    const canvas = $("chart");
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || canvas.width, h = canvas.clientHeight || canvas.height;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const css = getComputedStyle(document.documentElement);
    const color = (name) => css.getPropertyValue(name).trim();
    const left = 56, right = 12, top = 12, bottom = 26;
    const pw = w - left - right, ph = h - top - bottom;
    const now = Date.now(), from = now - WINDOW_S * 1000;
    while (history.length && history[0].t < from - 5000) history.shift();
    let max = 0;
    for (const p of history) if (!p.gap) max = Math.max(max, p.rps, p.eps);
    max = niceMax(max);
    const x = (t) => left + ((t - from) / (WINDOW_S * 1000)) * pw;
    const y = (v) => top + ph - (v / max) * ph;

    ctx.font = "11px system-ui, sans-serif";
    ctx.lineWidth = 1;
    ctx.strokeStyle = color("--line");
    ctx.fillStyle = color("--muted");
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4, yy = Math.round(y(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(left, yy);
      ctx.lineTo(left + pw, yy);
      ctx.stroke();
      ctx.fillText(num(v), left - 6, yy);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (let m = 0; m <= WINDOW_S / 60; m++) {
      const t = now - m * 60000, xx = Math.round(x(t)) + 0.5;
      ctx.fillText(m === 0 ? "now" : "-" + m + " min", Math.min(Math.max(xx, left + 14), left + pw - 14), top + ph + 6);
    }

    const series = (key, stroke) => {
      ctx.strokeStyle = stroke;
      ctx.lineWidth = 2;
      ctx.lineJoin = "round";
      ctx.beginPath();
      let pen = false;
      for (const p of history) {
        if (p.gap || p.t < from) { pen = false; continue; }
        const xx = x(p.t), yy = y(p[key]);
        if (pen) ctx.lineTo(xx, yy); else ctx.moveTo(xx, yy);
        pen = true;
      }
      ctx.stroke();
    };
    series("rps", color("--req"));
    series("eps", color("--err"));
    if (downSince) {
      ctx.fillStyle = color("--err");
      ctx.globalAlpha = 0.12;
      const x0 = Math.max(left, x(downSince.getTime()));
      ctx.fillRect(x0, top, left + pw - x0, ph);
      ctx.globalAlpha = 1;
    }
  }

  // ---- reading -----------------------------------------------------------------------------------
  async function read() {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), TIMEOUT_MS);
    try {
      const r = await fetch("status", { cache: "no-store", signal: ctl.signal });
      if (!r.ok) throw new Error("HTTP " + r.status);
      const s = await r.json();
      if (!s || typeof s !== "object") throw new Error("not a status object");
      show(s, performance.now());
      if (downSince) history.push({ t: Date.now(), gap: true });
      downSince = null;
      setState("ok", "live \u00b7 updated " + clock(new Date()));
      updates++;
      document.documentElement.dataset.updates = String(updates);
    } catch (e) {
      if (!downSince) {
        downSince = new Date();
        prev = null; // the rates start again from the next answer
        history.push({ t: Date.now(), gap: true });
      }
      setState("down", "not answering since " + clock(downSince) + " (" + (e && e.name === "AbortError" ? "no answer in time" : String(e && e.message || e)) + ")");
    } finally {
      clearTimeout(timer);
    }
    draw();
  }

  async function loop() {
    for (;;) {
      const started = Date.now();
      await read();
      await new Promise((ok) => setTimeout(ok, Math.max(0, PERIOD_MS - (Date.now() - started))));
    }
  }

  $("window").textContent = String(WINDOW_S / 60);
  window.addEventListener("resize", draw);
  loop();
})();
