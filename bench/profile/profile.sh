#!/usr/bin/env bash
# profile.sh N: a process devnet of N validators (release), 60 s of block intervals, then a
# 20 s system-wide perf profile (perf from the distribution; needs root or
# kernel.perf_event_paranoid <= 0), node0's /metrics; the devnet is stopped and purged at the end.
# Needs a release build (cargo build --release --workspace --bins). OUT (default
# target/profile) gets nN/summary, dso.txt, sym.txt, perf.data, metrics0.txt;
# bench/profile/cats.py OUT/nN/perf.data groups the samples as docs/PERFORMANCE.md does.
set -u
N=${1:?usage: bench/profile/profile.sh VALIDATORS}
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
out=${OUT:-target/profile}/n$N${TAG:-}; mkdir -p $out
start=$SECONDS
target/release/devnet up --backend process --nodes "$N" --wait-height 20 --name "scale$N" > "$out/up.log" 2>&1
rc=$?
echo "up rc=$rc in $((SECONDS - start)) s" | tee "$out/summary"
if [ "$rc" -ne 0 ]; then
  target/release/devnet down --name "scale$N" --purge > /dev/null 2>&1
  exit "$rc"
fi
python3 "$here/interval.py" 27000 60 | tee -a $out/summary
perf record -a -F 499 -o $out/perf.data -- sleep 20 > /dev/null 2>&1
perf report -i $out/perf.data --sort dso --stdio 2>/dev/null | grep -v "^#" | grep -v "^$" | head -25 > $out/dso.txt
perf report -i $out/perf.data --sort dso,sym --stdio 2>/dev/null | grep -v "^#" | grep -v "^$" | head -80 > $out/sym.txt
curl -s localhost:27000/metrics > $out/metrics0.txt
curl -s localhost:27000/net_info > $out/net_info0.json
target/release/devnet down --name scale$N --purge > /dev/null 2>&1
