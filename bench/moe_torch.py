#!/usr/bin/env python3
"""The MoE forward pass in PyTorch beside candle's, on the same weights, in one run.

Runs `blyan-node bench-infer --json --dir DIR` (which generates the default model into DIR and
times candle's forward pass over a fixed 32-token sequence), then loads the very same
safetensors files with PyTorch, runs the same forward pass on the same tokens, checks the
logits agree, and times it the same way (median of N after one warm-up pass).

Not a test dependency: install PyTorch yourself (CPU is enough), e.g.
    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch safetensors numpy
    /tmp/torchenv/bin/python bench/moe_torch.py --node target/release/blyan-node
"""

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from safetensors.torch import load_file


def load_model(directory, model="bench"):
    files = {}
    for path in glob.glob(os.path.join(directory, "*.json")):
        with open(path) as handle:
            manifest = json.load(handle)
        data = path[: -len(".json")] + ".safetensors"
        files[manifest["name"]] = load_file(data)
    base = files[f"{model}/base"]
    return files, base


def rms_norm(x, weight):
    return x / torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + 1e-5) * weight


def forward(config, files, base, tokens, model="bench"):
    n = len(tokens)
    d = config["dim"]
    ids = torch.tensor(tokens, dtype=torch.long)
    x = base["embed"][ids] + base["pos"][:n]
    mask = torch.full((n, n), float("-inf")).triu(1)
    for layer in range(config["layers"]):
        p = f"l{layer}."
        h = rms_norm(x, base[p + "attn_norm"])
        q, k, v = h @ base[p + "wq"], h @ base[p + "wk"], h @ base[p + "wv"]
        scores = (q @ k.T) / (d ** 0.5) + mask
        x = x + torch.softmax(scores, dim=-1) @ v @ base[p + "wo"]
        h = rms_norm(x, base[p + "ffn_norm"])
        probs = torch.softmax(h @ base[p + "router"], dim=-1)
        weights, chosen = torch.topk(probs, config["top_k"], dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        out = torch.zeros_like(x)
        for expert in range(config["experts"]):
            rows, slot = (chosen == expert).nonzero(as_tuple=True)
            if rows.numel() == 0:
                continue
            e = files[f"{model}/l{layer}/e{expert}"]
            hidden = torch.nn.functional.silu(h[rows] @ e["w1"]) * (h[rows] @ e["w3"])
            out.index_add_(0, rows, (hidden @ e["w2"]) * weights[rows, slot].unsqueeze(1))
        x = x + out
    return rms_norm(x[n - 1 :], base["final_norm"]) @ base["head"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--node", default="target/release/blyan-node", help="the blyan-node binary")
    parser.add_argument("--runs", type=int, default=20, help="timed forward passes each")
    parser.add_argument("--dir", help="model directory (default: a temporary one)")
    args = parser.parse_args()
    directory = args.dir or tempfile.mkdtemp(prefix="blyan-moe-")
    threads = os.cpu_count()
    torch.set_num_threads(threads)
    result = subprocess.run(
        [args.node, "bench-infer", "--json", "--dir", directory, "--runs", str(args.runs)],
        check=True,
        capture_output=True,
        text=True,
    )
    candle = json.loads(result.stdout)
    config = candle["config"]
    files, base = load_model(directory)
    tokens = candle["sequence"]
    with torch.inference_mode():
        logits = forward(config, files, base, tokens)[0]
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            forward(config, files, base, tokens)
            times.append((time.perf_counter() - started) * 1000)
    reference = torch.tensor(candle["logits"])
    difference = (logits - reference).abs().max().item()
    scale = reference.abs().max().item()
    torch_ms = statistics.median(times)
    candle_ms = candle["forward_median_ms"]
    print(f"model: {config['layers']} layers x {config['experts']} experts (top {config['top_k']}), "
          f"dim {config['dim']}, hidden {config['hidden']}, {len(tokens)} tokens; {threads} threads")
    print(f"logits: max |torch - candle| = {difference:.3g} (largest logit {scale:.3g}); "
          f"same next token: {int(logits.argmax()) == int(reference.argmax())}")
    print(f"forward pass median of {args.runs}: candle {candle_ms:.2f} ms, "
          f"PyTorch {torch.__version__} {torch_ms:.2f} ms; candle/PyTorch = {candle_ms / torch_ms:.2f}")
    print(f"expert load: cold {candle['load_cold_median_ms']:.2f} ms, warm {candle['load_warm_median_ms']:.2f} ms; "
          f"generation {candle['tokens_per_s']:.1f} tokens/s")
    if difference > 1e-3 * max(scale, 1.0):
        print("FAIL: the two forward passes disagree", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
