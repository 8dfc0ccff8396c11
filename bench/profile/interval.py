#!/usr/bin/env python3
"""interval.py API_PORT SECONDS: heights/s and block-interval percentiles over SECONDS, from
the proposers' block timestamps (GET /blocks/H), plus RSS of blyan-node processes."""
import json, sys, time, urllib.request, statistics, subprocess
port, seconds = int(sys.argv[1]), float(sys.argv[2])
def get(path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return json.load(r)
def height():
    return get("/blocks/latest?txs=false")["height"]
h0 = height(); t0 = time.time()
time.sleep(seconds)
h1 = height(); t1 = time.time()
times = []
for h in range(h0, h1 + 1):
    b = get(f"/blocks/{h}?txs=false")
    times.append(b["time_ms"])
iv = sorted(b - a for a, b in zip(times, times[1:]))
def pct(p): return iv[min(len(iv) - 1, int(p * len(iv)))] if iv else None
rss = [int(x) for x in subprocess.run(["ps", "-C", "blyan-node", "-o", "rss="], capture_output=True, text=True).stdout.split()]
print(json.dumps({
    "heights": h1 - h0, "seconds": round(t1 - t0, 1), "heights_per_s": round((h1 - h0) / (t1 - t0), 2),
    "interval_ms_p50": statistics.median(iv) if iv else None, "p90": pct(0.9), "max": iv[-1] if iv else None,
    "rss_mib_mean": round(sum(rss) / len(rss) / 1024, 1) if rss else None, "rss_mib_max": round(max(rss) / 1024, 1) if rss else None,
    "nodes": len(rss), "load": open("/proc/loadavg").read().split()[:3]}))
