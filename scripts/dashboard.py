# Writes monitoring/dashboard.json (Grafana): python3 scripts/dashboard.py. Edit this, not the JSON.
import json
DS = {"type": "prometheus", "uid": "${datasource}"}
T = '{job=~"$job",instance=~"$instance"}'
TB = 'job=~"$job",instance=~"$instance"'
E = '{job=~"$exporter"}'
panels = []
y = 0
def row(title):
    global y
    panels.append({"type": "row", "title": title, "collapsed": False, "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "id": len(panels) + 1, "panels": []})
    y += 1
def panel(title, kind, targets, unit, w=12, x=0, h=8, desc="", extra=None, newline=True):
    global y
    p = {
        "type": kind, "title": title, "description": desc, "datasource": DS,
        "gridPos": {"h": h, "w": w, "x": x, "y": y}, "id": len(panels) + 1,
        "targets": [dict(datasource=DS, refId=chr(65 + i), **t) for i, t in enumerate(targets)],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "showLegend": True, "calcs": ["mean", "max"]}, "tooltip": {"mode": "multi", "sort": "desc"}},
    }
    if extra: p.update(extra)
    panels.append(p)
    if newline: y += h
def t(expr, legend, **kw):
    d = {"expr": expr, "legendFormat": legend}
    d.update(kw)
    return d

for proto, label, key in [("icmp", "ICMP echo", "{{instance}} {{ip}}"), ("tcp", "TCP SYN", "{{instance}} {{ip}}:{{tcp_port}}")]:
    m = f"{proto}_probe"
    row(f"{label}: loss and latency per target")
    panel("Loss (from the counters)", "timeseries", [t(f"1 - increase({m}_packets_recv_total{T}[$__rate_interval]) / increase({m}_packets_sent_total{T}[$__rate_interval])", key)],
          "percentunit", desc="Share of probes whose outcome became final in the interval and went unanswered: exact, probes in flight are in neither counter.", newline=False)
    panel("Latency percentiles (classic buckets)", "timeseries", [
        t(f"histogram_quantile({q}, sum by (job, instance, ip{', tcp_port' if proto == 'tcp' else ''}, le) (rate({m}_rtt_seconds_bucket{T}[$__rate_interval])))", f"p{int(float(q)*100)} {key}")
        for q in ["0.5", "0.9", "0.99"]], "s", x=12,
        desc="From the -buckets histogram (10 µs to the timeout by default); empty when Prometheus scrapes native histograms, see the native panel.")
    panel("Latency heatmap", "heatmap", [t(f"sum by (le) (increase({m}_rtt_seconds_bucket{T}[$__rate_interval]))", "{{le}}", format="heatmap")],
          "s", desc="How many answers fell in each bucket per interval, all selected targets together.", newline=False,
          extra={"options": {"calculate": False, "yAxis": {"unit": "s"}, "cellGap": 1, "color": {"scheme": "Oranges", "mode": "scheme"}}})
    # clamp_min: rounding can take E[x²] - E[x]² a hair below 0 when every RTT is equal.
    sd = (f"sqrt(clamp_min(increase({m}_latency_squared_seconds_total{T}[$__rate_interval]) / increase({m}_packets_recv_total{T}[$__rate_interval])"
          f" - (increase({m}_latency_seconds_total{T}[$__rate_interval]) / increase({m}_packets_recv_total{T}[$__rate_interval]))^2, 0))")
    mean = f"increase({m}_latency_seconds_total{T}[$__rate_interval]) / increase({m}_packets_recv_total{T}[$__rate_interval])"
    panel("Mean ± standard deviation", "timeseries", [t(mean, f"mean {key}"), t(f"{mean} + {sd}", f"+σ {key}"), t(f"{mean} - {sd}", f"-σ {key}")], "s", x=12,
          desc="From the latency sums: the mean and deviation of every answer in the interval, no bucket rounding.")
    panel("Latency percentiles (native histogram)", "timeseries", [
        t(f"histogram_quantile({q}, sum by (job, instance, ip{', tcp_port' if proto == 'tcp' else ''}) (rate({m}_rtt_seconds{T}[$__rate_interval])))", f"p{int(float(q)*100)} {key}")
        for q in ["0.5", "0.9", "0.99"]], "s", w=12, newline=False,
        desc="For Prometheus started with --enable-feature=native-histograms (the exporter then sends each target's native histogram: about 9 % resolution, no bucket tuning).")
    panel("Window gauges: loss and samples", "timeseries", [t(f"{m}_loss_ratio{T}", f"loss {key}"), t(f"{m}_samples_count{T}", f"samples {key}")], "short", x=12,
          desc="The reference's window over the last 250 probes (narrowed after a change in loss).")

row("The exporters themselves (their /metrics)")
panel("Engine up", "stat", [t(f"icmp_engine_up{E}", "{{instance}}")], "short", w=6, newline=False,
      extra={"options": {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background"}, "fieldConfig": {"defaults": {"unit": "short", "mappings": [], "thresholds": {"mode": "absolute", "steps": [{"color": "red", "value": None}, {"color": "green", "value": 1}]}}, "overrides": []}})
panel("Targets probed", "timeseries", [t(f"icmp_active_probes{E}", "icmp {{instance}}"), t(f"tcp_active_probes{E}", "tcp {{instance}}")], "short", w=9, x=6, newline=False)
panel("Probes sent per second", "timeseries", [t(f"rate(icmp_packets_sent_total{E}[$__rate_interval])", "icmp {{instance}}"), t(f"rate(tcp_packets_sent_total{E}[$__rate_interval])", "tcp {{instance}}")], "pps", w=9, x=15)
panel("Probes leaving more than 1 ms late", "timeseries", [
    t(f'rate(icmp_send_schedule_late_total{{job=~"$exporter",over="0.001"}}[$__rate_interval]) / ignoring(over) rate(icmp_packets_sent_total{E}[$__rate_interval])', "icmp {{instance}}"),
    t(f'rate(tcp_send_schedule_late_total{{job=~"$exporter",over="0.001"}}[$__rate_interval]) / ignoring(over) rate(tcp_packets_sent_total{E}[$__rate_interval])', "tcp {{instance}}")],
    "percentunit", w=8, newline=False, desc="A busy host: spacing and rate suffer, RTTs stay exact (kernel stamps).")
panel("Answers dropped in the exporter's receive queue", "timeseries", [t(f"rate(icmp_receive_queue_drops_total{E}[$__rate_interval])", "icmp {{instance}}"), t(f"rate(tcp_receive_queue_drops_total{E}[$__rate_interval])", "tcp {{instance}}")],
      "pps", w=8, x=8, newline=False, desc="Loss while this rises is the host's, not the network's.")
panel("CPU (cores)", "timeseries", [t(f"rate(process_cpu_seconds_total{E}[$__rate_interval])", "{{instance}}")], "short", w=4, x=16, newline=False)
panel("Resident memory", "timeseries", [t(f"process_resident_memory_bytes{E}", "{{instance}}")], "bytes", w=4, x=20)
panel("Scrape time (p99 per path)", "timeseries", [t(f"histogram_quantile(0.99, sum by (instance, path, le) (rate(http_request_duration_seconds_bucket{E}[$__rate_interval])))", "{{instance}} {{path}}")], "s", w=12, newline=False)
panel("Event loop lag (p99)", "timeseries", [t(f"nodejs_eventloop_lag_p99_seconds{E}", "{{instance}}")], "s", w=12, x=12)

def var(name, label, query, multi=True):
    return {"name": name, "label": label, "type": "query", "datasource": DS, "query": {"query": query, "refId": name}, "definition": query,
            "refresh": 2, "includeAll": True, "multi": multi, "allValue": ".*", "current": {"text": "All", "value": "$__all"}, "sort": 1}

dash = {
    "title": "icmp-exporter", "uid": "icmp-exporter", "description": "Loss, latency and the exporters' health, from icmp-exporter (monitoring/dashboard.json)",
    "tags": ["icmp-exporter", "network", "blackbox"], "timezone": "", "editable": True, "schemaVersion": 39, "version": 1,
    "time": {"from": "now-6h", "to": "now"}, "refresh": "1m", "graphTooltip": 1,
    "templating": {"list": [
        {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus", "current": {}, "hide": 0},
        var("job", "Probe job", 'label_values({__name__=~"(icmp|tcp)_probe_packets_sent_total"}, job)'),
        var("instance", "Target", 'label_values({__name__=~"(icmp|tcp)_probe_packets_sent_total",job=~"$job"}, instance)'),
        var("exporter", "Exporter job", "label_values(icmp_engine_up, job)"),
    ]},
    "annotations": {"list": []},
    "panels": panels,
}
open(__import__("os").path.join(__import__("os").path.dirname(__file__), "..", "monitoring", "dashboard.json"), "w").write(json.dumps(dash, indent=2, ensure_ascii=False) + "\n")
print(len(panels), sum(len(p.get("targets", [])) for p in panels))
