#!/usr/bin/env python3
"""Turns a bench/seeds/run sitting (RESULTS/fanout.jsonl) into a dated markdown section,
appended to OUT and printed.

    python3 bench/seeds/report.py RESULTS OUT STAMP
"""

import json
import os
import statistics
import subprocess
import sys

results, out, stamp = sys.argv[1:4]
env = os.environ
rows = [json.loads(line) for line in open(os.path.join(results, "fanout.jsonl"))]
NAMES = {"offline": "serverless-offline + dynalite", "switchboard": "switchboard"}


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, nd=0):
    return "—" if x is None else f"{x:,.{nd}f}"


def run(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def version(package):
    path = os.path.join("bench", "seeds", "node_modules", package, "package.json")
    try:
        return json.load(open(path))["version"]
    except OSError:
        return "?"


servers = list(dict.fromkeys(r["server"] for r in rows))
clients_list = sorted({r["clients"] for r in rows})
rounds = sorted({r["round"] for r in rows})
whole = lambda r: r["delivery_ratio"] >= 1.0

cpu = open("/proc/cpuinfo").read()
model = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("model name")), "?")
loads = [float(r["load"].split()[0]) for r in rows]
lines = [
    f"\n## Sitting {stamp}: the seeds' system on serverless-offline and on switchboard (issue 14)\n",
    f"`bench/seeds/run`. Machine: {os.cpu_count()} cores ({model}), shared with other work: load "
    f"average (1 min) {min(loads):.1f} to {max(loads):.1f}, median {statistics.median(loads):.1f} over the steps; "
    f"node {run('node', '--version')}, serverless {version('serverless')}, serverless-offline "
    f"{version('serverless-offline')}, dynalite {version('dynalite')}, @aws-sdk "
    f"{version('@aws-sdk/client-apigatewaymanagementapi')}; switchboard at `{run('git', 'rev-parse', '--short', 'HEAD')}`.",
    f"{len(rounds)} rounds, the servers interleaved (their order turned each round); each step a fresh "
    f"server, {env.get('SENDERS', '4')} senders, {env.get('PAYLOAD', '64')}-byte messages to every other "
    f"client, {env.get('WARMUP', '5')} s of warm-up not counted, {env.get('DURATION', '15')} s measured, up to "
    f"{env.get('DRAIN', '5')} s of drain; a ladder stops at its first step that is not delivered whole. "
    f"Raw JSON lines in `{results}/` (not committed).\n",
    "Highest offered rate delivered whole (every message to every recipient), median of the rounds, "
    "and the figures of the steps at that rate; then the highest rate delivered whole with a p99 of "
    "250 ms or less:\n",
    "| clients | server | deliveries/s delivered whole | per round | p50 ms | p99 ms | CPU µs/delivery (process tree) | switchboard process alone | whole, p99 ≤ 250 ms |",
    "|---:|---|---:|---|---:|---:|---:|---:|---:|",
]
best = {}
best_fast = {}
for clients in clients_list:
    for server in servers:
        per_round = []
        fast_per_round = []
        at_best = []
        for rnd in rounds:
            steps = [r for r in rows if r["server"] == server and r["clients"] == clients and r["round"] == rnd]
            ok = [r for r in steps if whole(r)]
            if not steps:
                continue
            top = max(ok, key=lambda r: r["target"]) if ok else None
            per_round.append(top["target"] if top else 0)
            fast = [r["target"] for r in ok if r["latency"]["p99_us"] <= 250_000]
            fast_per_round.append(max(fast) if fast else 0)
            if top:
                at_best.append(top)
        if not per_round:
            continue
        best[(clients, server)] = med(per_round)
        best_fast[(clients, server)] = med(fast_per_round)
        own = "—"
        if server.startswith("switchboard"):
            own = fmt(med([r["server_cpu_us_per_delivery"] for r in at_best]), 1)
        lines.append("| {:,} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            clients, NAMES.get(server, server), fmt(med(per_round)),
            ", ".join(f"{t:,}" for t in per_round),
            fmt(med([r["latency"]["p50_us"] / 1000 for r in at_best]), 1),
            fmt(med([r["latency"]["p99_us"] / 1000 for r in at_best]), 1),
            fmt(med([r["server_tree_cpu_us_per_delivery"] for r in at_best]), 1),
            own, fmt(med(fast_per_round))))
if "offline" in servers and "switchboard" in servers:
    lines += ["", "| clients | switchboard / serverless-offline, deliveries/s delivered whole | the same, p99 ≤ 250 ms |",
              "|---:|---:|---:|"]
    ratio = lambda a, b: "—" if not a or not b else f"{a / b:.1f}×"
    for clients in clients_list:
        lines.append(f"| {clients:,} | "
                     + ratio(best.get((clients, "switchboard")), best.get((clients, "offline"))) + " | "
                     + ratio(best_fast.get((clients, "switchboard")), best_fast.get((clients, "offline"))) + " |")

lines += ["", "Every step (medians over the rounds that reached it):\n",
          "| clients | server | offered/s | delivered/s | delivery ratio | p50 ms | p99 ms | CPU µs/delivery (tree) | switchboard process | rounds whole | load |",
          "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
for clients in clients_list:
    for server in servers:
        for target in sorted({r["target"] for r in rows if r["server"] == server and r["clients"] == clients}):
            rs = [r for r in rows if r["server"] == server and r["clients"] == clients and r["target"] == target]
            lines.append("| {:,} | {} | {:,} | {} | {} | {} | {} | {} | {} | {}/{} | {} |".format(
                clients, NAMES.get(server, server), target,
                fmt(med([r["delivered_per_sec"] for r in rs])),
                fmt(med([r["delivery_ratio"] for r in rs]), 4),
                fmt(med([r["latency"]["p50_us"] / 1000 for r in rs]), 1),
                fmt(med([r["latency"]["p99_us"] / 1000 for r in rs]), 1),
                fmt(med([r["server_tree_cpu_us_per_delivery"] for r in rs]), 1),
                fmt(med([r["server_cpu_us_per_delivery"] for r in rs]), 1) if server.startswith("switchboard") else "—",
                sum(1 for r in rs if whole(r)), len(rs),
                ", ".join(r["load"].split()[0] for r in rs)))

lines += ["", "Commands (bench/seeds/run runs these; `$PID` is the server's process id):\n", "```sh",
          "bench/seeds/peer.sh PORT    # serverless offline start, dynalite on PORT+1, AWS_ENDPOINT_URL_* set",
          "switchboard serve --listen 127.0.0.1:PORT --config bench/seeds/serverless.yml --data-dir DIR",
          "switchboard bench fanout --url URL --clients N --senders {s} --rate R --warmup {w} --duration {d} "
          "--drain {dr} --payload {p} --connect-concurrency 4 --pid $PID --json --hold".format(
              s=env.get("SENDERS", "4"), w=env.get("WARMUP", "5"), d=env.get("DURATION", "15"),
              dr=env.get("DRAIN", "5"), p=env.get("PAYLOAD", "64")),
          "```"]
text = "\n".join(lines) + "\n"
with open(out, "a") as f:
    f.write(text)
print(text)
