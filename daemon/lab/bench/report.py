"""The results as one rich table (and the targets they are judged against)."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

GiB = 2**30

TARGETS = {
    "e2e_rate": 100_000,  # readings/s sustained, everything on
    "e2e_vs_copy2": 0.4,  # of the 2-connection COPY limit (aim 0.6)
    "alarm_p99": 1.0,  # s, at 50 % load
    "store_p99": 2.0,  # s, at 50 % load
    "rss": 1 * GiB,  # at 50,000 sensors
    "query_p95_ms": 300.0,
}


def latency_runs(res: dict) -> list[dict]:
    """The latency phases of a result (a list; older results hold one run as a dict)."""
    lat = res.get("latency")
    return [] if not lat else ([lat] if isinstance(lat, dict) else lat)


def half_load(res: dict) -> dict | None:
    """The run the targets are judged on: at 50 % of the measured maximum."""
    runs = latency_runs(res)
    return next((r for r in runs if r.get("load", 0.5) == 0.5), runs[0] if runs else None)


def _f(x, fmt="{:,.0f}") -> str:
    return "—" if x is None else fmt.format(x)


def _ok(cond) -> str:
    return "" if cond is None else ("[green]met[/green]" if cond else "[red]missed[/red]")


def verdicts(res: dict) -> dict:
    out = {}
    e2e = {r["sensors"]: r for r in res.get("e2e", [])}
    big = e2e.get(max(e2e)) if e2e else None
    copy2 = next((c["rows_per_s"] for c in res.get("copy_limit", []) if c["connections"] == 2), None)
    if big:
        out["e2e_rate"] = big["rate"] >= TARGETS["e2e_rate"]
        out["rss"] = big["peak_rss"] < TARGETS["rss"]
        if copy2:
            out["e2e_vs_copy2"] = big["rate"] / copy2 >= TARGETS["e2e_vs_copy2"]
    lat = half_load(res)
    if lat:
        out["alarm_p99"] = lat["alarm"]["p99"] is not None and lat["alarm"]["p99"] < TARGETS["alarm_p99"]
        out["store_p99"] = lat["store"]["p99"] is not None and lat["store"]["p99"] < TARGETS["store_p99"]
    naive = res.get("naive", {}).get("rate")
    if big:
        res["ratios"] = {"plantwatch_vs_copy2": big["rate"] / copy2 if copy2 else None,
                         "plantwatch_vs_naive": big["rate"] / naive if naive else None}
    q = res.get("queries")
    if q:
        out["query_p95_ms"] = max(q["area_7d"]["p95_ms"], q["site_7d"]["p95_ms"]) < TARGETS["query_p95_ms"]
    return out


def render(res: dict, console: Console | None = None) -> None:
    console = console or Console()
    m = res["machine"]
    v = verdicts(res)
    res["verdicts"] = v
    t = Table(title=f"plantwatch bench ({res['mode']}) — {m['nproc']} × {m['cpu']}, {m['ram_gib']} GiB RAM, "
                    f"Python {m['python']}, {'TimescaleDB' if m.get('timescaledb') else 'PostgreSQL'}, "
                    f"fsync {'on' if res['settings']['fsync'] else 'OFF'}", show_lines=False)
    for col in ("what", "result", "detail", "target"):
        t.add_column(col)
    copy = {c["connections"]: c for c in res.get("copy_limit", [])}
    b = res.get("broker_raw")
    t.add_section()
    if b:
        t.add_row("broker raw, QoS 1", f"{b['msg_per_s']:,.0f} msg/s",
                  f"= {b['readings_per_s']:,.0f} readings/s; {b['per_message']} readings, {b['bytes_per_message']} B per msg; {b['client']}", "")
    for c in (1, 2):
        if c in copy:
            x = copy[c]
            t.add_row(f"database COPY limit, {c} conn", f"{x['rows_per_s']:,.0f} rows/s",
                      f"batches of {x['batch']:,}; DB CPU {x['db_cpu_us_per_row']:.2f} µs/row", "")
    t.add_section()
    copy2 = copy.get(2, {}).get("rows_per_s")
    naive = res.get("naive", {}).get("rate")
    e2e = res.get("e2e", [])
    for r in e2e:
        cpu = r["cpu_us_per_reading"]
        ratio = f"; {r['rate'] / copy2:.2f} of COPY(2)" if copy2 else ""
        ratio += f"; {r['rate'] / naive:,.0f}× naive" if naive else ""
        biggest = r is e2e[-1]
        t.add_row(f"plantwatch end to end, {r['sensors']:,} sensors",
                  f"{r['rate']:,.0f} readings/s",
                  f"steady {r['steady_rate']:,.0f}/s; {r['rows']:,}/{r['published']:,} rows "
                  f"{'[green]all accounted[/green]' if r['accounted'] else '[red]MISMATCH[/red]'}{ratio}; CPU µs/reading "
                  f"daemon {cpu['daemon']:.2f}, DB {cpu['db']:.2f}, broker {cpu['broker']:.2f}",
                  (f"≥ 100k/s {_ok(v.get('e2e_rate'))}; ≥ 0.4 COPY {_ok(v.get('e2e_vs_copy2'))}" if biggest else ""))
    if e2e:
        r = e2e[-1]
        t.add_row(f"daemon peak RSS, {r['sensors']:,} sensors", f"{r['peak_rss'] / 2**20:,.0f} MiB",
                  f"peak (VmHWM, includes loading the config); {r.get('rss_end', 0) / 2**20:,.0f} MiB after the run",
                  f"< 1 GiB {_ok(v.get('rss'))}")
    sc = res.get("seal_cost")
    if sc:
        cpu = sc["cpu_us_per_reading"]
        t.add_row(f"sealing cost, {sc['sensors']:,} sensors", f"{sc['cost_pct']:.1f} % of the rate",
                  f"{sc['rate_off']:,.0f}/s off, {sc['rate_on']:,.0f}/s on (median of {sc['rounds']}); CPU µs/reading "
                  f"daemon {cpu['daemon'][0]:.2f} → {cpu['daemon'][1]:.2f}, DB {cpu['db'][0]:.2f} → {cpu['db'][1]:.2f}",
                  f"≤ {sc['target_pct']:g} % {_ok(sc['cost_pct'] <= sc['target_pct'])}")
    runs = latency_runs(res)
    if runs:
        t.add_section()
    for lat in runs:
        half = lat is half_load(res)
        for key, label, tgt, vk in (("store", "publish → stored", "< 2 s", "store_p99"),
                                    ("alarm", "publish → alarm raised", "< 1 s", "alarm_p99")):
            x = lat[key]
            load = f" ({lat['load']:.0%} load)" if "load" in lat else ""
            why = lat.get("why_empty", {}).get(key)
            detail = (f"p50 {_f(x['p50'], '{:.3f}')} s, max {_f(x['max'], '{:.3f}')} s, n={x['n']}" if why is None
                      else f"[yellow]no sample: {why}[/yellow]")
            f = lat.get("facts")
            if why is None and f and not f["drained"]:
                detail += f"; [yellow]the daemon fell behind: {f['stored_end']:,.0f} of {f['published']:,} stored[/yellow]"
            t.add_row(f"{label} at {lat['rate_sent']:,.0f}/s{load}", f"p99 {_f(x['p99'], '{:.3f}')} s", detail,
                      f"p99 {tgt} {_ok(v.get(vk))}" if half else "")
    if naive:
        t.add_section()
        t.add_row("naive baseline (1 insert/reading)", f"{naive:,.0f} readings/s", f"{res['naive']['rows']:,} rows", "")
    q = res.get("queries")
    if q:
        t.add_section()
        for k, label in (("area_7d", "dashboard: area, 7 days"), ("site_7d", "dashboard: whole site, 7 days"),
                         ("sensor_raw_1h", "drill-down: 1 sensor raw, 1 h")):
            x = q[k]
            t.add_row(label, f"p95 {x['p95_ms']:.0f} ms",
                      f"p50 {x['p50_ms']:.0f} ms; {x['rows_returned']:,} rows back; table {q['rows']:,} rows, "
                      f"{q['sensors']:,} sensors, rollups 1m {q['rollup_1m_rows']:,} / 1h {q['rollup_1h_rows']:,}",
                      f"< 300 ms {_ok(v.get('query_p95_ms'))}" if k != "sensor_raw_1h" else "")
    console.print(t)
