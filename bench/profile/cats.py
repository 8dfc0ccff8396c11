#!/usr/bin/env python3
"""cats.py PERF_DATA: share of samples per category (from perf report --sort dso,sym)."""
import re, subprocess, sys, collections
out = subprocess.run(["perf", "report", "-i", sys.argv[1], "--sort", "dso,sym", "--stdio"], capture_output=True, text=True).stdout
cats = collections.Counter()
rules = [
 ("ed25519 signature checks", r"curve25519|ed25519|scalar_mul|FieldElement|EdwardsPoint|sha2::sha512"),
 ("TLS/AEAD (rustls, aws-lc)", r"chacha|poly1305|rustls|aws_lc|aes_|gcm|ring::"),
 ("gossipsub", r"libp2p_gossipsub"),
 ("yamux/multistream/swarm", r"yamux|multistream|libp2p_swarm|libp2p_core|libp2p_tcp|libp2p_identify|libp2p_ping|libp2p_kad|libp2p_request"),
 ("protobuf/cbor/serde", r"quick_protobuf|prost|serde|cbor|asynchronous_codec"),
 ("tokio/futures runtime", r"tokio|futures|mio::|futures_timer|parking_lot|crossbeam"),
 ("hashing (sip, sha256, blake)", r"sip::|sha256|blake|Hasher"),
 ("hash maps/iterators", r"hashbrown|core::iter|btree|alloc::vec|slice::sort"),
 ("rocksdb", r"rocksdb|librocksdb"),
 ("malloc/free/memcpy (libc)", r"malloc|free|memmove|memcpy|memcmp|memset|_int_|unlink_chunk|cfree"),
 ("tracing/logging", r"tracing|fmt::|log::"),
 ("kernel: network (tcp, ip, netfilter, loopback)", r"\[k\].*(tcp|ip_|ipt_|nf_|inet|skb|sock|net_rx|dev_queue|loopback|softirq|__napi|netif|conntrack|sk_)"),
 ("kernel: scheduling, syscalls, futex, timers", r"\[k\].*(sched|task_switch|futex|syscall|spin|schedule|hrtimer|irq|epoll|clock|tick|wake|vfs_|rcu|halt|entry|pick_next|update_|enqueue|dequeue)"),
 ("kernel: other", r"\[k\]"),
 ("consensus/node (blyan)", r"blyan"),
]
total = 0.0
for line in out.splitlines():
    m = re.match(r"\s+([\d.]+)%\s+(\S+)\s+(\[.\])\s+(.*)", line)
    if not m: continue
    pct = float(m.group(1)); total += pct
    text = f"{m.group(2)} {m.group(3)} {m.group(4)}"
    for name, rx in rules:
        if re.search(rx, text):
            cats[name] += pct; break
    else:
        cats["other (" + m.group(2) + ")"] += pct
for name, pct in cats.most_common(18):
    print(f"{pct:6.1f}%  {name}")
print(f"{total:6.1f}%  total listed")
