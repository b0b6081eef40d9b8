"""Serving executors: the same SubNet through each path, and the bytes each path holds.

For 3 SubNets of a SuperNet (smallest, a seeded sample, largest), at batch 1
and 16, one thread, interleaved rounds (noise hits every variant alike):

- ``torch_elastic``: `supernet(x, subnet)`, the elastic forward before this
  change (slices and kernel transforms recomputed per call);
- ``torch``: the `torch` executor's plan (weights bound once per SubNet);
- ``onnxruntime``: the `onnxruntime` executor (`run` on a torch tensor);
- ``standalone_ort``: a plain `onnxruntime.InferenceSession` over the same
  exported ONNX file, ORT_ENABLE_ALL, fed a numpy array: what a user deploys.

The goal is onnxruntime / standalone <= 1.2. Memory: one SuperNet, each
executor's extra bytes, the same SubNets as separate extracted models.

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/serving_executors.py
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS_DIR, interleaved_latency, markdown_table, write_results  # noqa: E402

import weightshare as ws  # noqa: E402
from weightshare.export import export_onnx  # noqa: E402
from weightshare.serve.executors import ExecutorConfig, make_executor  # noqa: E402
from weightshare.serve.runtime import module_bytes  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--supernet", default="ofa_mbv3_small")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(0)
    # Latency does not depend on the weights' values: a seeded, untrained SuperNet.
    net = ws.create_supernet(args.supernet).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    space = net.space
    subnets = {"s0": space.smallest(), "s1": space.sample(random.Random(0)),
               "s2": space.largest()}
    import onnxruntime as ort

    rows, records = [], []
    with tempfile.TemporaryDirectory(prefix="ws-bench-ort-") as tmp:
        torch_ex = make_executor("torch", net, subnets)
        ort_ex = make_executor("onnxruntime", net, subnets, ExecutorConfig(
            threads=1, cache_dir=tmp, checkpoint_sha256="benchmark", background=False))
        ort_ex.start()
        standalone = {}
        for name, cfg in subnets.items():
            path = Path(tmp) / f"{name}.onnx"
            export_onnx(net.extract(cfg), path, net.input_shape(cfg), exporter="torchscript")
            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            so.intra_op_num_threads = so.inter_op_num_threads = 1
            standalone[name] = ort.InferenceSession(str(path), so,
                                                    providers=["CPUExecutionProvider"])
        for name, cfg in subnets.items():
            for b in args.batches:
                x = torch.randn(b, *net.input_shape(cfg))
                xn = x.numpy()
                sess = standalone[name]
                fns = {
                    "torch_elastic": lambda x=x, cfg=cfg: net(x, cfg),
                    "torch": lambda x=x, n=name: torch_ex.run(x, n),
                    "onnxruntime": lambda x=x, n=name: ort_ex.run(x, n),
                    "standalone_ort": lambda s=sess, xn=xn: s.run(None, {"input": xn}),
                }
                with torch.inference_mode():
                    lat = interleaved_latency(fns, rounds=args.rounds, runs=args.runs)
                    ref = net.extract(cfg)(x)
                    diff = float((ort_ex.run(x, name) - ref).abs().max())
                    diff_torch = float((torch_ex.run(x, name) - ref).abs().max())
                ms = {k: round(v["median_ms"], 3) for k, v in lat.items()}
                rec = {"subnet": name, "macs": net.cost(cfg).macs, "batch": b,
                       "torch_elastic_ms": ms["torch_elastic"], "torch_ms": ms["torch"],
                       "onnxruntime_ms": ms["onnxruntime"],
                       "standalone_ort_ms": ms["standalone_ort"],
                       "torch_speedup_vs_elastic": round(ms["torch_elastic"] / ms["torch"], 2),
                       "onnxruntime_over_standalone": round(
                           ms["onnxruntime"] / ms["standalone_ort"], 3),
                       "max_abs_diff_onnxruntime": diff, "max_abs_diff_torch": diff_torch,
                       "p99_ms": {k: round(v["p99_ms"], 3) for k, v in lat.items()}}
                records.append(rec)
                rows.append([name, f"{rec['macs'] / 1e6:.1f} M", b, rec["torch_elastic_ms"],
                             rec["torch_ms"], rec["torch_speedup_vs_elastic"],
                             rec["onnxruntime_ms"], rec["standalone_ort_ms"],
                             rec["onnxruntime_over_standalone"]])
                print(rows[-1], flush=True)
        supernet = module_bytes(net)
        norms = 0  # untrained: no per-SubNet statistics (a trained one adds a few KB each)
        separate = sum(module_bytes(net.extract(c)) for c in subnets.values())
        tmem, omem = torch_ex.memory(), ort_ex.memory()
        memory = {
            "supernet_bytes": supernet + norms,
            "torch": supernet + norms + tmem["extra_bytes"],
            "torch_plan_extra_bytes": tmem["extra_bytes"],
            "onnxruntime": supernet + norms + omem["extra_bytes"],
            "onnxruntime_session_bytes": {n: s["file_bytes"] for n, s in omem["sessions"].items()},
            "onnxruntime_session_rss_delta_bytes": {n: s["rss_delta_bytes"]
                                                    for n, s in omem["sessions"].items()},
            "separate_models": separate,
        }
    table = markdown_table(
        ["SubNet", "MACs", "batch", "torch elastic ms (before)", "torch plan ms (after)",
         "speed-up", "onnxruntime executor ms", "standalone ort ms", "executor / standalone"],
        rows)
    mem_rows = [["one SuperNet (torch executor)", memory["torch"]],
                ["  of which plan copies", memory["torch_plan_extra_bytes"]],
                ["SuperNet + onnxruntime sessions", memory["onnxruntime"]],
                ["separate extracted models", memory["separate_models"]]]
    notes = ("Medians of interleaved rounds, one thread. Bytes:\n\n"
             + markdown_table(["held", "bytes"], mem_rows)
             + "\nonnxruntime sessions are counted by their optimised graph's size (the "
             "initialisers each session owns). The JSON's RSS growth per session is not a "
             "measure of it: the session that wrote the graph is freed just before the "
             "serving one opens it, and the allocator reuses its pages (it reads 0 here).")
    write_results("serving_executors", {"executors": records, "memory_by_executor": memory,
                                        "onnxruntime_version": ort.__version__},
                  table, args.out, title="Serving executors: torch plan vs onnxruntime",
                  notes=notes)
    print(table)
    print(notes)


if __name__ == "__main__":
    main()
