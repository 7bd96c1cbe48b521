// The detail of a selected alarm (trend with limits and the alarm's span, its life, the detector's
// config, the incident) and the separate shelved and suppressed lists.
"use strict";
const PWDetail = (() => {
  let id = null, last = null;

  function trendSvg(t, a) {
    const W = 900, H = 220, L = 58, R = 10, T = 10, B = 24;
    const pts = t.points, lims = Object.entries(t.limits);
    const ys = pts.map(p => p[1]).concat(lims.map(l => l[1]));
    if (!ys.length) return `<p class="muted">no readings in the last 30 minutes</p>`;
    let lo = Math.min(...ys), hi = Math.max(...ys); if (hi === lo) { hi += 1; lo -= 1; }
    const pad = (hi - lo) * 0.08; lo -= pad; hi += pad;
    const x = (s) => L + (s - t.from) / (t.to - t.from) * (W - L - R), y = (v) => T + (hi - v) / (hi - lo) * (H - T - B);
    const span = a.raised_at ? `<rect id="alarm-span" x="${x(Math.max(a.raised_at, t.from)).toFixed(1)}" y="${T}" width="${Math.max(2, x(a.cleared_at || t.to) - x(Math.max(a.raised_at, t.from))).toFixed(1)}" height="${H - T - B}" fill="#b9bcc2" opacity=".55"><title>alarm ${esc(PW.ms(a.raised_at))} to ${a.cleared_at ? esc(PW.ms(a.cleared_at)) : "now"}</title></rect>` : "";
    const limits = lims.map(([k, v]) => `<line class="limit" x1="${L}" x2="${W - R}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#1f2329" stroke-dasharray="6 4"/>
      <text x="${W - R - 4}" y="${(y(v) - 3).toFixed(1)}" text-anchor="end" font-size="11">${esc(k)} ${PW.withUnit(v, t.unit)}</text>`).join("");
    const line = `<polyline fill="none" stroke="#1f2329" stroke-width="1.5" points="${pts.map(p => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ")}"/>`;
    const axis = `<text x="${L - 4}" y="${T + 10}" text-anchor="end" font-size="11">${PW.withUnit(hi, t.unit)}</text>
      <text x="${L - 4}" y="${H - B}" text-anchor="end" font-size="11">${PW.withUnit(lo, t.unit)}</text>
      <text x="${L}" y="${H - 6}" font-size="11">${esc(when(t.from).slice(11))}</text>
      <text x="${W - R}" y="${H - 6}" text-anchor="end" font-size="11">${esc(when(t.to).slice(11))} (now)</text>`;
    return `<svg viewBox="0 0 ${W} ${H}" preserveAspectRatio="none" role="img" aria-label="trend of ${esc(a.sensor)}">${span}${limits}${line}${axis}</svg>`;
  }

  function buttons(a) {
    const b = [];
    const add = (act, label) => { if (may(act)) b.push(`<button class="act-${act}" data-id="${a.id}">${label}</button>`); };
    if (a.state === "unack" || a.state === "rtn_unack") add("ack", "Acknowledge");
    if (a.state !== "shelved" && a.state !== "out_of_service") add("shelve", "Shelve");
    if (a.state === "shelved") add("unshelve", "Unshelve");
    add("comment", "Comment");
    if (a.state !== "out_of_service") add("out_of_service", "Out of service"); else add("return_to_service", "Return to service");
    return b.join(" ");
  }

  function life(d) {
    const rows = d.changes.map(c => ({t: c.time, seq: c.seq, what: `${c.from_state} → ${c.to_state} (${c.condition})`,
      who: c.cause.actor || c.cause.by || "", why: c.cause.reason || c.cause.suppressed_by || ""}))
      .concat(d.actions.map(o => ({t: o.time, seq: o.seq, what: o.action, who: `${o.actor} (${o.role})`, why: o.reason})))
      .sort((p, q) => (p.seq ?? 0) - (q.seq ?? 0) || p.t - q.t);
    return `<table id="life"><thead><tr><th>time (UTC)</th><th>what</th><th>who</th><th>reason</th></tr></thead><tbody>
      ${rows.map(r => `<tr><td>${esc(PW.ms(r.t))}</td><td>${esc(r.what)}</td><td>${esc(r.who)}</td><td>${esc(r.why)}</td></tr>`).join("")}</tbody></table>`;
  }

  function render(d) {
    const a = d.alarm, inc = d.incident;
    $("#detail").innerHTML = `<h2 id="detail-title">${PW.prioCell(a.priority)} ${esc(a.sensor)} · ${esc(a.detector_id)} · ${PW.condText(a)}
        <button id="detail-close" type="button">close</button></h2>
      <p>${esc(a.description || "")} · area ${esc(a.area)} · position ${esc(a.position)} · raised ${esc(PW.ms(a.raised_at))}
        (${age(a.raised_at)} ago) · value at alarm ${PW.withUnit(a.value_at_alarm, a.unit)} · live ${PW.withUnit(a.live_value, a.unit)}
        · limit ${PW.withUnit(a.limit, a.unit)} · state <strong id="detail-state">${esc(a.state)}</strong>
        ${a.state_reason ? "· " + esc(a.state_reason) : ""}</p>
      <p class="act">${buttons(a)}</p>
      <div class="cols"><div><h3>Trend: last 30 min and the alarm's span</h3><div id="trend">${trendSvg(d.trend, a)}</div>
        <h3>Life of the alarm</h3>${life(d)}</div>
      <div><h3>Incident</h3><div id="detail-incident">${inc ? `<a href="/incidents/${inc.id}">#${inc.id}</a> ${esc(inc.title)} ·
          ${inc.alarms} alarms · ${inc.ended_at ? "ended " + esc(when(inc.ended_at)) : "ongoing"}
          ${may("ack") ? ` <button id="ack-incident" type="button" data-incident="${inc.id}">Acknowledge all alarms of #${inc.id}</button>` : ""}`
        : `<span class="muted">none</span>`}</div>
        <h3>Detector</h3><pre id="detector-config">${esc(JSON.stringify(d.detector, null, 1))}</pre></div></div>`;
    $("#detail").hidden = false;
    $("#detail-close").addEventListener("click", close);
    const ai = $("#ack-incident");
    if (ai) ai.addEventListener("click", () => PW.ackMany({incident: Number(ai.dataset.incident)}, "ack incident"));
  }

  async function show(alarmId) {
    id = alarmId;
    try { last = await api(`/api/console/alarms/${alarmId}`); render(last); }
    catch (e) { status(e.message, "err"); }
  }
  function close() { id = null; $("#detail").hidden = true; PW.setParams({sel: ""}); document.querySelectorAll("#summary tr.sel").forEach(r => r.classList.remove("sel")); }
  return {show, refresh: () => id && show(id), close};
})();

const PWLists = (() => {
  function render(view, data) {
    $("#summary-area").hidden = true; $("#lists").hidden = false;
    const back = `<p><a href="/">&lsaquo; back to the alarm summary</a></p>`;
    if (view === "shelved") {
      const rows = data.alarms.filter(a => a.state === "shelved");
      $("#lists").innerHTML = `<h2>Shelved alarms (${rows.length})</h2>${back}<table id="shelved-list"><thead><tr><th>priority</th><th>tag</th>
        <th>condition</th><th>shelved by</th><th>shelved at (UTC)</th><th>until (UTC)</th><th>reason</th><th></th></tr></thead><tbody>
        ${rows.map(a => `<tr id="shelved-${a.id}"><td>${PW.prioCell(a.priority)}</td><td>${esc(a.sensor)}<br><span class="muted">${esc(a.description || "")}</span></td>
          <td>${PW.condText(a)}</td><td>${esc(a.shelved_by || "")}</td><td>${esc(when(a.shelved_at))}</td><td>${esc(when(a.shelved_until))}</td>
          <td>${esc(a.state_reason || "")}</td><td>${may("unshelve") ? `<button class="act-unshelve" data-id="${a.id}">Unshelve</button>` : ""}</td></tr>`).join("")
        || `<tr><td colspan="8" class="muted">no shelved alarm</td></tr>`}</tbody></table>`;
    } else {
      const rows = data.alarms.filter(a => a.state === "suppressed" || a.state === "out_of_service");
      $("#lists").innerHTML = `<h2>Suppressed alarms (${rows.length}): what is hidden now, and why</h2>${back}<table id="suppressed-list"><thead><tr>
        <th>priority</th><th>tag</th><th>condition</th><th>condition now</th><th>hidden by</th><th>why</th></tr></thead><tbody>
        ${rows.map(a => `<tr id="suppressed-${a.id}"><td>${PW.prioCell(a.priority)}</td><td>${esc(a.sensor)}<br><span class="muted">${esc(a.description || "")}</span></td>
          <td>${PW.condText(a)}</td><td>${a.active ? "active" : "normal"}</td>
          <td>${a.state === "out_of_service" ? `out of service by ${esc(a.oos_by || "")}` : `${esc(a.suppressed_by || "")} is active`}</td>
          <td>${esc(a.state_reason || (a.state === "suppressed" ? "suppressed by design" : ""))}</td></tr>`).join("")
        || `<tr><td colspan="6" class="muted">nothing is suppressed</td></tr>`}</tbody></table>`;
    }
  }
  return {render};
})();
