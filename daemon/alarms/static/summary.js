// The alarm summary: banner, filters and sort (in the URL), rows, selection, bulk acknowledge,
// the horn, the live stream. Uses the helpers of console.html ($, esc, api, when, age, status, may).
"use strict";
const PW = (() => {
  const PRIO = {1: "critical", 2: "high", 3: "medium", 4: "low"};
  const ACTIVE_STATES = ["unack", "ack", "rtn_unack"];
  const STATES = ["active", "unack", "ack", "rtn_unack", "shelved", "suppressed", "out_of_service", "all"];
  const PAGE = 50;
  let data = null, selected = new Set(), shown = [], detailId = null;
  let acking = false, heard = null, hornOn = false, audio = null, beat = 0, lost = false, source = null, fetching = null, again = false;
  const timings = [];

  const SKELETON = `
    <div id="banner"><span id="banner-counts"></span>
      <span id="horn" role="alert" hidden>NEW PRIORITY 1-2 ALARM <button id="silence" type="button">Silence horn</button></span>
      <span id="conn" role="status">connecting</span></div>
    <div id="detail" hidden></div>
    <div id="lists" hidden></div>
    <div id="summary-area">
      <div id="filters">
        <label>area <select id="f-area"></select></label><label>position <select id="f-position"></select></label>
        <span>priority ${[1, 2, 3, 4].map(p => `<label><input type="checkbox" class="f-prio" value="${p}">P${p}</label>`).join("")}</span>
        <label>state <select id="f-state">${STATES.map(s => `<option value="${s}">${s.replace(/_/g, " ")}</option>`).join("")}</select></label>
        <label>tag <input id="f-q" type="search" placeholder="search tag"></label>
        <label>sort <select id="f-sort"><option value="newest">newest first</option><option value="oldest">oldest first</option>
          <option value="priority">priority, then time</option></select></label></div>
      <div id="bulk"><button id="ack-selected" type="button">Acknowledge selected</button>
        <button id="ack-page" type="button">Acknowledge page</button><span id="sel-count" class="muted"></span></div>
      <div id="summary-wrap"><table id="summary"><colgroup><col class="c-sel"><col class="c-ind"><col class="c-prio"><col class="c-time">
        <col class="c-tag"><col class="c-area"><col class="c-cond"><col class="c-val"><col class="c-lim"><col class="c-state">
        <col class="c-inc"><col class="c-act"></colgroup>
        <thead><tr><th></th><th title="unacknowledged">!</th><th>priority</th><th>raised (UTC)</th><th>tag</th><th>area / position</th>
        <th>condition</th><th>value at alarm / live</th><th>limit</th><th>state</th><th>incident</th><th></th></tr></thead>
        <tbody></tbody></table></div>
      <div id="pager"><button id="prev" type="button">&lsaquo; previous</button><span id="page-info"></span>
        <button id="next" type="button">next &rsaquo;</button></div></div>`;

  // --- the view's filter, sort and page live in the URL -------------------------------------------
  function params() {
    const q = new URLSearchParams(location.search);
    return {view: q.get("view") || "summary", area: q.get("area") || "", position: q.get("position") || "",
            prio: (q.get("prio") || "").split(",").filter(Boolean), state: q.get("state") || "active",
            q: q.get("q") || "", sort: q.get("sort") || "newest", page: Math.max(1, Number(q.get("page")) || 1),
            sel: q.get("sel") || ""};
  }
  function setParams(changes, push) {
    const q = new URLSearchParams(location.search);
    for (const [k, v] of Object.entries(changes)) { if (v === "" || v == null || (k === "page" && v === 1)) q.delete(k); else q.set(k, v); }
    const url = location.pathname + (q.toString() ? "?" + q : "");
    (push ? history.pushState : history.replaceState).call(history, null, "", url);
  }

  function matches(a, p) {
    if (p.area && a.area !== p.area) return false;
    if (p.position && a.position !== p.position) return false;
    if (p.prio.length && !p.prio.includes(String(a.priority))) return false;
    if (p.state === "active" ? !ACTIVE_STATES.includes(a.state) : p.state !== "all" && a.state !== p.state) return false;
    if (p.q) { const t = p.q.toLowerCase(); if (!a.sensor.toLowerCase().includes(t) && !(a.description || "").toLowerCase().includes(t)) return false; }
    return true;
  }
  const byTime = (a, b) => (b.raised_at || 0) - (a.raised_at || 0) || b.id - a.id;
  const SORTS = {newest: byTime, oldest: (a, b) => -byTime(a, b), priority: (a, b) => a.priority - b.priority || byTime(a, b)};

  // --- cells ------------------------------------------------------------------------------------------
  const num = (v) => v == null ? "" : Math.abs(v) >= 1000 ? v.toFixed(0) : Number(v.toPrecision(4)).toString();
  const withUnit = (v, u) => v == null ? "" : `${num(v)} ${esc(u || "")}`;
  const ms = (t) => t ? new Date(t * 1000).toISOString().replace("T", " ").slice(0, 23) + "Z" : "";
  function prioCell(p) { return `<span class="shape p${p}" aria-hidden="true"></span><span class="ptext">P${p}</span> <span class="muted">${PRIO[p]}</span>`; }
  function condText(a) { return esc(a.alarm_condition || a.condition) + (a.active ? "" : " (cleared)"); }
  function marker(a) {
    if (a.state === "shelved") return `<span class="marker">SHELVED</span> ${esc(a.shelved_by || "")} until ${esc(when(a.shelved_until).slice(11))}`;
    if (a.state === "suppressed") return `<span class="marker">SUPPRESSED</span> by ${esc(a.suppressed_by || "")}`;
    if (a.state === "out_of_service") return `<span class="marker">OUT OF SERVICE</span> ${esc(a.oos_by || "")}`;
    return "";
  }
  const STATE_TEXT = {unack: "UNACK", ack: "ACK", rtn_unack: "RTN UNACK"};
  function actions(a) {
    const b = [];
    if (may("ack") && (a.state === "unack" || a.state === "rtn_unack")) b.push(`<button class="act-ack" data-id="${a.id}">Ack</button>`);
    if (may("shelve") && a.state !== "out_of_service" && a.state !== "shelved") b.push(`<button class="act-shelve" data-id="${a.id}">Shelve</button>`);
    if (may("unshelve") && a.state === "shelved") b.push(`<button class="act-unshelve" data-id="${a.id}">Unshelve</button>`);
    if (may("comment")) b.push(`<button class="act-comment" data-id="${a.id}">Comment</button>`);
    return b.join("");
  }
  function row(a) {
    const ind = a.state === "unack" ? "<span title='unacknowledged'>!</span>" : a.state === "rtn_unack" ? "<span title='returned to normal, unacknowledged'>RTN</span>" : "";
    return `<tr id="alarm-${a.id}" class="${esc(a.state)}${selected.has(a.id) ? " sel-checked" : ""}${String(a.id) === String(detailId) ? " sel" : ""}" data-id="${a.id}" data-state="${esc(a.state)}" data-priority="${a.priority}">
      <td><input type="checkbox" class="pick" data-id="${a.id}" aria-label="select alarm ${a.id}"${selected.has(a.id) ? " checked" : ""}></td>
      <td class="ind">${ind}</td><td class="pcell">${prioCell(a.priority)}</td>
      <td class="time"><time title="${ms(a.raised_at)}">${esc(when(a.raised_at).slice(11))}</time><br><span class="muted">${age(a.raised_at)}</span></td>
      <td class="tag">${esc(a.sensor)}<br><span class="muted">${esc(a.description || a.detector_id)}</span></td>
      <td>${esc(a.area)}<br><span class="muted">${esc(a.position)}</span></td>
      <td class="cond">${condText(a)}<br><span class="muted">${esc(a.detector_id)}</span></td>
      <td class="val">${withUnit(a.value_at_alarm, a.unit)}<br><span class="muted">live ${withUnit(a.live_value, a.unit)}</span></td>
      <td class="lim">${withUnit(a.limit, a.unit)}</td>
      <td class="state">${STATE_TEXT[a.state] || ""} ${marker(a)}</td>
      <td>${a.incident_id ? `<a href="/incidents/${a.incident_id}">#${a.incident_id}</a>` : ""}</td>
      <td class="act">${actions(a)}</td></tr>`;
  }

  // --- the banner -------------------------------------------------------------------------------------
  function banner() {
    const act = data.alarms.filter(a => ACTIVE_STATES.includes(a.state));
    const cnt = [1, 2, 3, 4].map(p => {
      const u = act.filter(a => a.priority === p && a.state !== "ack").length, k = act.filter(a => a.priority === p && a.state === "ack").length;
      return `<span class="cnt" id="count-p${p}" data-unack="${u}" data-ack="${k}">${prioCell(p)} <b>${u}</b> unack · <b>${k}</b> ack</span>`;
    }).join("");
    const unack = act.filter(a => a.state !== "ack").sort((a, b) => (a.raised_at || 0) - (b.raised_at || 0));
    const oldest = unack.length ? `<span id="oldest">oldest unack: <a href="/alarms/${unack[0].id}">${esc(unack[0].sensor)}</a> ${age(unack[0].raised_at)}</span>` : `<span id="oldest" class="muted">no unacknowledged alarm</span>`;
    const floods = Object.entries(data.flood).map(([p, on]) => `<span class="pos${on ? " flooding" : ""}" data-position="${esc(p)}">${esc(p)}: ${on ? "FLOOD" : "normal"}</span>`).join("");
    const n = (s) => data.alarms.filter(a => a.state === s).length;
    $("#banner-counts").innerHTML = cnt + oldest + floods +
      `<a id="shelved-link" href="/?view=shelved">shelved ${n("shelved")}</a> <a id="suppressed-link" href="/?view=suppressed">suppressed ${n("suppressed") + n("out_of_service")}</a>`;
  }

  // --- the horn: new priority 1-2 alarms sound until silenced (silencing does not acknowledge) --------
  function horn() {
    const loud = data.alarms.filter(a => a.state === "unack" && a.priority <= 2).map(a => `${a.id}@${a.raised_at}`);
    if (heard === null) { heard = new Set(loud); return; }
    const fresh = loud.filter(k => !heard.has(k));
    loud.forEach(k => heard.add(k));
    if (fresh.length) { hornOn = true; $("#horn").hidden = false; sound(true); }
  }
  function sound(on) {
    try {
      if (on && !audio) {
        const ctx = new (window.AudioContext || window.webkitAudioContext)(), osc = ctx.createOscillator(), gain = ctx.createGain();
        osc.frequency.value = 880; gain.gain.value = 0.15; osc.connect(gain).connect(ctx.destination); osc.start();
        const pulse = setInterval(() => { gain.gain.value = gain.gain.value ? 0 : 0.15; }, 400);
        audio = {ctx, pulse};
      } else if (!on && audio) { clearInterval(audio.pulse); audio.ctx.close(); audio = null; }
    } catch (e) { /* no audio device: the banner still flashes */ }
  }
  function silence() { hornOn = false; $("#horn").hidden = true; sound(false); }

  // --- render -----------------------------------------------------------------------------------------
  function options(sel, values, cur, all) {
    const el = $(sel); const v = [all, ...values];
    el.innerHTML = v.map(x => `<option value="${esc(x === all ? "" : x)}"${(x === all ? "" : x) === cur ? " selected" : ""}>${esc(x)}</option>`).join("");
  }
  function render(what) {
    const t0 = performance.now();
    const p = params();
    if (p.view !== "summary") { PWLists.render(p.view, data); banner(); return; }
    $("#lists").hidden = true; $("#summary-area").hidden = false;
    options("#f-area", [...new Set(data.alarms.map(a => a.area))].sort(), p.area, "all areas");
    options("#f-position", [...new Set(Object.keys(data.flood).concat(data.alarms.map(a => a.position)))].sort(), p.position, "all positions");
    $("#f-state").value = p.state; $("#f-sort").value = p.sort;
    if (document.activeElement !== $("#f-q")) $("#f-q").value = p.q;
    document.querySelectorAll(".f-prio").forEach(c => { c.checked = p.prio.includes(c.value); });
    const rows = data.alarms.filter(a => matches(a, p)).sort(SORTS[p.sort] || byTime);
    const pages = Math.max(1, Math.ceil(rows.length / PAGE)), page = Math.min(p.page, pages);
    shown = rows.slice((page - 1) * PAGE, page * PAGE);
    $("#summary tbody").innerHTML = shown.map(row).join("") || `<tr><td colspan="12" class="muted" id="no-alarms">no alarms in this view</td></tr>`;
    $("#page-info").textContent = `${rows.length} alarms · page ${page} of ${pages}`;
    $("#prev").disabled = page <= 1; $("#next").disabled = page >= pages;
    $("#sel-count").textContent = `${selected.size} selected`;
    banner();
    if (what) timings.push({what, ms: performance.now() - t0});
  }

  async function load(what) {
    if (acking) { again = true; return; }  // an acknowledgement is on its way: fetch once it is done
    if (fetching) { again = true; return fetching; }
    fetching = (async () => {
      try {
        data = await api("/api/console/alarms");
        const ids = new Set(data.alarms.map(a => a.id)); for (const id of selected) if (!ids.has(id)) selected.delete(id);
        horn(); render(what);
        if (detailId) PWDetail.refresh();
      } finally { fetching = null; }
      if (again) { again = false; await load(); }
    })();
    return fetching;
  }

  // --- actions ----------------------------------------------------------------------------------------
  async function ackMany(body, what) {
    const t0 = performance.now();
    acking = true;
    try {
      const r = await api("/api/alarms/ack", {method: "POST", body: JSON.stringify(body)});
      status(`acknowledged ${r.acked.length} alarm(s)` + (r.skipped.length ? `, ${r.skipped.length} skipped (${esc(r.skipped[0].error)})` : ""), "ok");
      // recorded (the answer comes after the commit): show it now; the push brings the full rows
      const done = new Set(r.acked);
      done.forEach(id => selected.delete(id));
      data.alarms = data.alarms.filter(a => !(done.has(a.id) && a.state === "rtn_unack"));
      data.alarms.forEach(a => { if (done.has(a.id) && a.state === "unack") a.state = "ack"; });
      render();
    } catch (e) { status(`acknowledge failed: ${e.message}`, "err"); }
    finally { acking = false; }
    timings.push({what, ms: performance.now() - t0});
    again = false;
    load();
  }
  const ackable = (a) => a.state === "unack" || a.state === "rtn_unack";

  function wire() {
    const f = (id, ev, fn) => $(id).addEventListener(ev, fn);
    const change = (k) => (e) => { setParams({[k]: e.target.value, page: 1}); render("filter " + k); };
    f("#f-area", "change", change("area")); f("#f-position", "change", change("position"));
    f("#f-state", "change", change("state")); f("#f-sort", "change", (e) => { setParams({sort: e.target.value}); render("sort " + e.target.value); });
    f("#f-q", "input", change("q"));
    document.querySelectorAll(".f-prio").forEach(c => c.addEventListener("change", () => {
      setParams({prio: [...document.querySelectorAll(".f-prio:checked")].map(x => x.value).join(","), page: 1}); render("filter priority");
    }));
    f("#prev", "click", () => { setParams({page: params().page - 1}); render("page"); });
    f("#next", "click", () => { setParams({page: params().page + 1}); render("page"); });
    f("#ack-selected", "click", () => ackMany({ids: [...selected]}, "ack selected"));
    f("#ack-page", "click", () => ackMany({ids: shown.filter(ackable).map(a => a.id)}, "ack page"));
    f("#silence", "click", silence);
    f("#summary", "change", (e) => {
      const c = e.target.closest("input.pick"); if (!c) return;
      const id = Number(c.dataset.id); c.checked ? selected.add(id) : selected.delete(id);
      $("#sel-count").textContent = `${selected.size} selected`;
    });
    f("#summary", "click", (e) => {
      if (e.target.closest("button, input, a")) return;
      const tr = e.target.closest("tr[data-id]"); if (!tr) return;
      detailId = tr.dataset.id; setParams({sel: detailId});
      document.querySelectorAll("#summary tr.sel").forEach(r => r.classList.remove("sel")); tr.classList.add("sel");
      PWDetail.show(detailId);
    });
    window.addEventListener("popstate", () => data && render());
  }

  // --- live: the stream, and "connection lost" when it stops --------------------------------------------
  function connect() {
    if (source) source.close();
    source = new EventSource("/api/stream");
    const alive = () => { beat = Date.now(); if (lost) { lost = false; conn(); load(); } };
    source.addEventListener("ping", alive);
    source.addEventListener("alarms", () => { alive(); load(); });
    source.onerror = () => { if (!lost) { lost = true; conn(); } };
    beat = Date.now();
  }
  function conn() {
    const c = $("#conn");
    c.textContent = lost ? "CONNECTION LOST: this summary is not live" : "live";
    c.className = lost ? "lost" : "";
    $("#summary-wrap").classList.toggle("stale", lost);
  }
  setInterval(() => { if (source && !lost && Date.now() - beat > 3000) { lost = true; conn(); } }, 500);
  // live values and ages move without alarm changes: fetch again every few seconds while shown
  setInterval(() => { if (source && !lost && data && document.visibilityState === "visible") load(); }, 5000);

  async function start() {
    $("#view").innerHTML = SKELETON;
    $("#bulk").hidden = !may("ack");  // an inspector reads only
    wire(); connect(); conn();
    const p = params(); detailId = p.sel || null;
    await load();
    if (detailId) PWDetail.show(detailId);
  }
  return {start, load, ackMany, timings, row, prioCell, condText, withUnit, ms, params, setParams, render,
          get data() { return data; }, selectedIds: () => [...selected]};
})();
