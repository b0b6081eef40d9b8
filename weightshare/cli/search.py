"""Specialize commands: accuracy predictor, search, frontier, finetune (latency tables:
`weightshare.cli.latency`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from .core import (
    DataDirOpt,
    JsonOpt,
    SeedOpt,
    app,
    emit_json,
    fmt_count,
)

# ---------------------------------------------------------------------------------------------
# Specialize: accuracy predictor, search, frontier (latency tables: cli/latency.py)
# ---------------------------------------------------------------------------------------------

CheckpointOpt = Annotated[
    Path, typer.Option("--checkpoint", "-c", metavar="CKPT", help="SuperNet checkpoint.")
]
TableOpt = Annotated[
    Path | None,
    typer.Option("--latency-table", "-t", metavar="TABLE",
                 help="Latency table from `weightshare latency-table build` (needed for latency limits and "
                 "the latency objective)."),
]
DatasetNameOpt = Annotated[
    str | None,
    typer.Option("--dataset", help="Dataset name (default: the one the checkpoint was trained on)."),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu | cuda | cuda:N.")]
ThreadsOpt = Annotated[
    int | None, typer.Option("--threads", min=1, help="torch CPU threads (default: torch's).")
]
MaxLatencyOpt = Annotated[
    float | None, typer.Option("--max-latency-ms", help="Latency limit (ms, from the table).")
]
MaxMacsOpt = Annotated[float | None, typer.Option("--max-macs", help="MACs limit (e.g. 20e6).")]
MaxParamsOpt = Annotated[float | None, typer.Option("--max-params", help="Parameter limit.")]
ObjectiveOpt = Annotated[
    str | None,
    typer.Option("--objective", help="Cost to minimize beside accuracy: latency | macs | params "
                 "(default: the capped one; for frontier, latency with a table, else macs)."),
]
MeasuredOpt = Annotated[
    bool, typer.Option("--measured", help="Rank by measured accuracy (BN recalibration + held-out "
                       "top-1 per SubNet; slow) instead of the fitted predictor.")
]
PopulationOpt = Annotated[int, typer.Option("--population", min=2, help="NSGA-II population.")]
GenerationsOpt = Annotated[int, typer.Option("--generations", min=1, help="NSGA-II generations.")]


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _load_for_search(checkpoint: Path, table: Path | None, measured: bool, dataset: str | None,
                     data_dir: Path | None, device: str):
    """(checkpoint, evaluator, accuracy source, dataset or None) for search and frontier."""
    from ..checkpoint import load_checkpoint
    from ..search.latency_table import load_latency_table
    from ..search.nsga import Evaluator
    from ..search.specialize import accuracy_fn, dataset_for

    ck = load_checkpoint(checkpoint, map_location=device)
    net = ck.supernet.eval()
    lut = load_latency_table(table, net) if table is not None else None
    data = dataset_for(ck, dataset, data_dir) if measured else None
    fn, source = accuracy_fn(net, checkpoint, measured=measured, dataset=data, device=device)
    return ck, Evaluator(net, fn, lut), source, data


def _caps(max_latency_ms: float | None, max_macs: float | None,
          max_params: float | None) -> dict[str, float]:
    caps = {"max_latency_ms": max_latency_ms, "max_macs": max_macs, "max_params": max_params}
    return {k: v for k, v in caps.items() if v is not None}


def _fmt_candidate(c: Any, verified: Any = None) -> str:
    """A candidate for people: measured numbers first, the predictions beside them."""
    lat = f", {c.costs['latency_ms']:.3f} ms" if "latency_ms" in c.costs else ""
    acc = f"acc {c.acc:.2f} % (predicted)"
    if verified is not None and verified.measured_acc is not None:
        acc = (f"acc {verified.measured_acc:.2f} % measured on {verified.acc_images} test images "
               f"(predicted {c.acc:.2f} %)")
    if verified is not None and verified.measured_ms is not None:
        lat = f", {verified.measured_ms:.3f} ms measured (table {c.costs['latency_ms']:.3f} ms)"
    return f"{acc}, {fmt_count(c.costs['macs'])} MACs, {fmt_count(c.costs['params'])} params{lat}"


predictor_app = typer.Typer(help="Accuracy predictor of a checkpoint's SubNets.",
                            no_args_is_help=True)
app.add_typer(predictor_app, name="predictor")


@predictor_app.command("fit")
def predictor_fit(
    checkpoint: CheckpointOpt,
    samples: Annotated[int, typer.Option("--samples", "-n", min=6, help="SubNets to measure.")
                       ] = 1000,
    kind: Annotated[
        str, typer.Option("--kind", help="auto (MLP or linear, whichever ranks a validation "
                          "slice better) | mlp (OFA: 3 x 400) | linear.")
    ] = "auto",
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Training epochs.")] = 200,
    dataset: DatasetNameOpt = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "cpu",
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Measure SubNets and fit an accuracy predictor, saved beside the checkpoint.

    Each SubNet's BN statistics are recalibrated on one half of the held-out calib
    split and its top-1 is measured on the other half (never the test split). The
    measurements are appended to CKPT.predictor.jsonl as they are made, so an
    interrupted run resumes and a later run with more --samples reuses them. The
    model (CKPT.predictor.safetensors + .json) is scored on SubNets it was not
    fitted on: RMSE and Kendall tau.

    Example:

        weightshare predictor fit -c runs/deps/checkpoint.pt --samples 1000
    """
    from ..checkpoint import load_checkpoint
    from ..deployment import dataset_for
    from ..search.predictor import fit_and_save, predictor_paths

    ck = load_checkpoint(checkpoint, map_location=device)
    data = dataset_for(ck, dataset, data_dir)
    pred = fit_and_save(ck.supernet.eval(), data, checkpoint, samples, kind=kind, seed=seed,
                        epochs=epochs, device=device, progress=not as_json)
    rep = pred.report
    assert rep is not None
    paths = predictor_paths(checkpoint)
    if as_json:
        emit_json({**rep.to_dict(), "weights": str(paths["weights"]), "meta": str(paths["meta"]),
                   "samples_file": str(paths["samples"])})
        return
    typer.echo(f"fitted a {rep.kind} predictor on {rep.n_fit} SubNets "
               f"(samples: {paths['samples']})")
    typer.echo(f"on {rep.n_test} unseen SubNets: RMSE {rep.rmse:.3f} points, "
               f"Kendall tau {rep.kendall_tau:.3f}")
    typer.echo(f"saved {paths['weights']} and {paths['meta']}")


@app.command()
def search(
    checkpoint: CheckpointOpt,
    latency_table: TableOpt = None,
    max_latency_ms: MaxLatencyOpt = None,
    max_macs: MaxMacsOpt = None,
    max_params: MaxParamsOpt = None,
    targets: Annotated[
        Path | None,
        typer.Option("--targets", metavar="YAML",
                     help="Many targets at once: a YAML list of {name, max_latency_ms, max_macs, "
                     "max_params}; they share the predictor and the table."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="PATH",
                     help="Write the chosen SubnetConfig JSON here (for `export --subnet`); with "
                     "--targets, a folder that gets NAME.json per target."),
    ] = None,
    objective: ObjectiveOpt = None,
    measured: MeasuredOpt = False,
    dataset: DatasetNameOpt = None,
    data_dir: DataDirOpt = None,
    population: PopulationOpt = 100,
    generations: GenerationsOpt = 50,
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify",
                           help="Re-measure each pick before reporting it: its latency on this "
                           "machine (stepping down to a cheaper SubNet until it meets the cap) "
                           "and its test accuracy after BN recalibration.")
    ] = True,
    device: DeviceOpt = "cpu",
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Find the most accurate SubNet within a latency / MACs / parameter budget, with no
    training: NSGA-II over the space, ranked by the fitted accuracy predictor.

    The search believes its predictor and latency table, so it picks the SubNets they
    flatter most; by default every pick is then measured (`--no-verify` skips that):
    a pick over its latency cap is replaced by the next cheaper one, and the accuracy
    shown is measured on the test set, with the prediction beside it.

    Give the limits with --max-latency-ms (needs --latency-table), --max-macs,
    --max-params, or many targets with --targets. A limit below the smallest SubNet's
    cost is refused, naming the smallest achievable value. -o writes the SubNet for
    `weightshare export --subnet`.

    Example:

        weightshare search -c ckpt.pt -t cpu_table.json --max-latency-ms 5 -o subnet.json
    """
    from ..search.common import atomic_write_text
    from ..search.specialize import specialize_targets
    from ..search.targets import Target, load_targets

    caps = _caps(max_latency_ms, max_macs, max_params)
    if targets is not None and caps:
        raise ValueError("give either --targets or --max-latency-ms/--max-macs/--max-params")
    goals = (load_targets(targets) if targets is not None
             else [Target("target", **caps)] if caps else None)
    if goals is None:
        raise ValueError("give a limit (--max-latency-ms, --max-macs, --max-params) or --targets; "
                         "for the whole frontier use `weightshare frontier`")
    ck, evaluator, source, data = _load_for_search(checkpoint, latency_table, measured, dataset,
                                                   data_dir, device)
    measure_ms = measure_acc = None
    if verify:
        from ..search.specialize import dataset_for, latency_fn, measured_test_accuracy

        if evaluator.table is not None:
            measure_ms = latency_fn(evaluator.net, evaluator.table)
        data = data if data is not None else dataset_for(ck, dataset, data_dir)
        measure_acc = measured_test_accuracy(evaluator.net, data, device=device)
    results = specialize_targets(evaluator.net, evaluator, goals, objective=objective,
                                 pop_size=population, generations=generations, seed=seed,
                                 progress=not as_json, measure_ms=measure_ms,
                                 measure_acc=measure_acc)
    written = []
    if output is not None:
        for r in results:
            path = output / f"{r.target.name}.json" if targets is not None else output
            atomic_write_text(path, r.best.subnet.to_json() + "\n")
            written.append(str(path))
    if as_json:
        rows = [{**r.to_dict(), "accuracy_source": source} for r in results]
        for row, path in zip(rows, written or [None] * len(rows), strict=True):
            row["output"] = path
        emit_json(rows if targets is not None else rows[0])
        return
    for i, r in enumerate(results):
        typer.echo(f"{r.target.name} {r.target.constraints}: {_fmt_candidate(r.best, r.verified)} "
                   f"[{source}; {r.result.evaluations} evaluations, {r.seconds:.1f} s]")
        for rej in (r.verified.rejected if r.verified else None) or []:
            typer.echo(f"  stepped down: a pick predicted at {rej['predicted_ms']:.3f} ms measured "
                       f"{rej['measured_ms']:.3f} ms")
        typer.echo(f"  {r.best.subnet.to_json()}")
        if written:
            typer.echo(f"  wrote {written[i]} (weightshare export -c {checkpoint} --subnet "
                       f"{written[i]} -o {Path(written[i]).with_suffix('.onnx')})")


@app.command()
def frontier(
    checkpoint: CheckpointOpt,
    output: Annotated[
        Path, typer.Option("--output", "-o", metavar="FRONTIER.json", help="Frontier file.")
    ],
    latency_table: TableOpt = None,
    max_latency_ms: MaxLatencyOpt = None,
    max_macs: MaxMacsOpt = None,
    max_params: MaxParamsOpt = None,
    objective: ObjectiveOpt = None,
    measured: MeasuredOpt = False,
    remeasure: Annotated[
        bool, typer.Option("--remeasure/--no-remeasure",
                           help="Re-measure the frontier's true test top-1 after BN recalibration.")
    ] = True,
    keep_dominated: Annotated[
        bool, typer.Option("--keep-dominated", help="Keep SubNets that another one beats in "
                           "measured accuracy at no more cost (dropped by default; listed in "
                           "the file under dominated_when_measured).")
    ] = False,
    plot: Annotated[
        Path | None, typer.Option("--plot", metavar="PNG", help="Plot (default: FRONTIER.png).")
    ] = None,
    save: Annotated[
        bool, typer.Option("--save/--no-save", help="Store the frontier SubNets' recalibrated "
                           "BN statistics in the checkpoint (for serving).")
    ] = True,
    dataset: DatasetNameOpt = None,
    data_dir: DataDirOpt = None,
    population: PopulationOpt = 100,
    generations: GenerationsOpt = 50,
    device: DeviceOpt = "cpu",
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Search the whole accuracy-vs-cost Pareto frontier in one NSGA-II run, re-measure the
    frontier SubNets' true accuracy, and write them as JSON plus a plot.

    The file is a list of {subnet, predicted_acc, measured_acc, macs, params, latency_ms},
    by increasing cost: what serving deploys. Limits (--max-*) keep the frontier within a
    budget. The plot shows accuracy vs latency (with a table) and vs MACs.

    Example:

        weightshare frontier -c ckpt.pt -t cpu_table.json -o frontier.json
    """
    from ..checkpoint import save_checkpoint
    from ..deployment import dataset_for
    from ..search.common import supernet_identity
    from ..search.frontier import measure_frontier, measured_pareto, plot_frontier, save_frontier
    from ..search.nsga import cost_key, feasible, nsga2_search, require_feasible
    from ..search.targets import Target, check_feasible

    caps = _caps(max_latency_ms, max_macs, max_params)
    ck, evaluator, source, data = _load_for_search(checkpoint, latency_table, measured, dataset,
                                                   data_dir, device)
    net = evaluator.net
    constraints: dict[str, float] = {}
    if caps:
        target = Target("frontier", **caps)
        check_feasible(target, evaluator.costs(net.space.smallest()))
        constraints = target.constraints
    obj = objective or ("latency" if evaluator.table is not None else "macs")
    t0 = time.perf_counter()
    result = require_feasible(nsga2_search(net.space, evaluator, objective=obj,
                                           constraints=constraints, pop_size=population,
                                           generations=generations, seed=seed,
                                           progress=not as_json), "the frontier search")
    search_s = time.perf_counter() - t0
    if remeasure and data is None:
        data = dataset_for(ck, dataset, data_dir)
    # The corners within the limits join the candidates: a predictor that underrates the
    # largest SubNet would otherwise leave the most accurate one off the frontier.
    cands = list(result.pareto)
    known = {c.subnet for c in cands}
    for corner in evaluator([net.space.smallest(), net.space.largest()]):
        if corner.subnet not in known and feasible(corner, constraints):
            cands.append(corner)
            known.add(corner.subnet)
    points = measure_frontier(net, cands, data if remeasure else None, device=device,
                              progress=not as_json)
    dropped: list = []
    if remeasure and not keep_dominated:
        points, dropped = measured_pareto(points, cost_key(result.objective))
        for p in dropped:  # never deployed: their BN statistics would only bloat the file
            net.subnet_norms.pop(p.subnet, None)
    table = evaluator.table
    save_frontier(output, points, supernet=supernet_identity(net), extra={
        "objective": result.objective, "constraints": constraints, "accuracy_source": source,
        "evaluations": result.evaluations, "search_s": search_s,
        "searched": len(cands), "dominated_when_measured": [p.to_dict() for p in dropped],
        "latency_table": ({"path": str(latency_table), "device": table.device,
                           "batch": table.batch, "threads": table.threads}
                          if table is not None else None),
    })
    plot_path = plot_frontier(points, plot or output.with_suffix(".png"),
                              title=f"{net.name}: {len(points)} Pareto SubNets ({source})")
    if save and remeasure:
        save_checkpoint(checkpoint, net, train_state=ck.train_state, meta=ck.meta)
    if as_json:
        emit_json({"path": str(output), "plot": str(plot_path), "evaluations": result.evaluations,
                   "search_s": search_s, "frontier": [p.to_dict() for p in points]})
        return
    typer.echo(f"{len(points)} Pareto SubNets from {result.evaluations} evaluations "
               f"({search_s:.1f} s, accuracy {source})"
               + (f"; {len(dropped)} of {len(cands)} dropped as dominated once measured"
                  if dropped else ""))
    typer.echo(f"{'MACs':>10}  {'params':>9}  {'lat ms':>7}  {'pred %':>6}  {'test %':>6}")
    for p in points:
        lat = f"{p.latency_ms:7.3f}" if p.latency_ms is not None else f"{'-':>7}"
        meas = f"{p.measured_acc:6.2f}" if p.measured_acc is not None else f"{'-':>6}"
        typer.echo(f"{fmt_count(p.macs):>10}  {fmt_count(p.params):>9}  {lat}  "
                   f"{p.predicted_acc:6.2f}  {meas}")
    typer.echo(f"wrote {output} and {plot_path}")


@app.command()
def finetune(
    checkpoint: CheckpointOpt,
    subnet: Annotated[
        str, typer.Option("--subnet", metavar="SUBNET", help="SubnetConfig JSON (text or file), "
                          "'largest' / 'smallest', or what `search` writes (-o) or prints "
                          "(--json), or a frontier file (pick with --target).")
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", metavar="OUT.pt", help="Fine-tuned checkpoint to "
                           "write (resumed when it holds an unfinished run of the same SubNet).")
    ],
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Epochs of fine-tuning.")] = 3,
    target: Annotated[
        str | None, typer.Option("--target", help="Which SubNet of a many-target search JSON "
                                 "(its name) or of a frontier file (its index).")
    ] = None,
    lr: Annotated[float, typer.Option("--lr", min=0.0, help="Peak learning rate (cosine decay "
                                      "to 0).")] = 0.01,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Batch size.")] = 128,
    kd_ratio: Annotated[
        float, typer.Option("--kd-ratio", min=0.0, help="Weight of distillation from the "
                            "source SuperNet's largest SubNet (0: plain cross-entropy).")
    ] = 1.0,
    save_every: Annotated[
        int | None, typer.Option("--save-every", min=1, help="Also save every N steps (default: "
                                 "each epoch).")
    ] = None,
    dataset: DatasetNameOpt = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "cpu",
    threads: ThreadsOpt = None,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune one SubNet a few epochs further with knowledge distillation from the
    SuperNet's largest SubNet, and report its test accuracy before and after.

    The SubNet is trained through the SuperNet's shared weights (cosine learning rate,
    SGD + Nesterov), so OUT is a SuperNet checkpoint specialized to that SubNet:
    `weightshare export -c OUT --subnet SUBNET` exports the fine-tuned network
    (other SubNets of OUT are no longer meaningful). OUT is written atomically every
    epoch; running the same command again resumes an interrupted run. Accuracy is
    top-1 on the test split after BN recalibration on the calib split.

    Example:

        weightshare search -c ckpt.pt -t cpu_table.json --max-latency-ms 5 -o subnet.json
        weightshare finetune -c ckpt.pt --subnet subnet.json --epochs 3 -o tuned.pt
        weightshare export -c tuned.pt --subnet subnet.json -o tuned.onnx
    """
    from ..checkpoint import load_checkpoint
    from ..deployment import dataset_for
    from ..search.finetune import FinetuneConfig, load_subnet_choice
    from ..search.finetune import finetune as run_finetune

    _set_threads(threads)
    ck = load_checkpoint(checkpoint, map_location=device)
    cfg = load_subnet_choice(subnet, ck.supernet.space, target)
    data = dataset_for(ck, dataset, data_dir)
    settings = FinetuneConfig(epochs=epochs, lr=lr, batch_size=batch_size, kd_ratio=kd_ratio,
                              seed=seed)
    del ck  # finetune loads the source itself (it is the teacher)
    res = run_finetune(checkpoint, cfg, data, output, settings, device=device,
                       save_every=save_every, progress=not as_json)
    if as_json:
        emit_json(res.to_dict())
        return
    resumed = f", resumed at step {res.resumed_from_step}" if res.resumed_from_step else ""
    typer.echo(f"fine-tuned {res.epochs} epochs ({res.steps} steps, {res.seconds:.1f} s{resumed})")
    typer.echo(f"test top-1: {res.acc_before:.2f} % before -> {res.acc_after:.2f} % after "
               f"({res.acc_after - res.acc_before:+.2f})")
    typer.echo(f"wrote {output}; export with: weightshare export -c {output} --subnet "
               f"'{cfg.to_json()}' -o {output.with_suffix('.onnx')}")
