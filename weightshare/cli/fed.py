"""Federated commands: `fed` (SuperFedNAS in Flower's simulation) and `fed-app`
(a Flower App folder for a deployment through SuperLink + SuperNodes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from .core import (
    DEFAULT_SUPERNET,
    DataDirOpt,
    JsonOpt,
    SeedOpt,
    SetOpt,
    SupernetOpt,
    app,
    emit_json,
    parse_overrides,
)

FED_HELP = "See `weightshare fed --help`; the settings mirror `weightshare.fed.FedConfig`."


def _config(supernet: str, set_: list[str] | None, **kw: Any):
    from ..fed.config import FedConfig

    return FedConfig(supernet=supernet, supernet_args=parse_overrides(set_), **kw)


ClientsOpt = Annotated[int, typer.Option("--clients", min=1, help="Number of clients (SuperNodes).")]
PerRoundOpt = Annotated[int, typer.Option("--per-round", min=1, help="Clients sampled per round.")]
RoundsOpt = Annotated[int, typer.Option("--rounds", "-r", min=1, help="Federated rounds.")]
AlphaOpt = Annotated[float, typer.Option(
    "--alpha", help="Dirichlet label concentration of the client split: 0.1 strongly non-IID, "
    "100 about IID.")]
ModeOpt = Annotated[str, typer.Option(
    "--mode", help="superfednas (weight-shared SubNets per client) or fedavg (every client "
    "trains --subnet; the per-target baseline).")]
FedSubnetOpt = Annotated[str, typer.Option(
    "--subnet", metavar="JSON", help="fedavg: the SubNet all clients train (default largest).")]
LocalEpochsOpt = Annotated[int, typer.Option("--local-epochs", min=1,
                                             help="Local epochs per round (as the reference).")]
LrOpt = Annotated[float, typer.Option("--lr", help="Client SGD learning rate (plain SGD, "
                                      "constant; reference: 0.1).")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Client batch size.")]
TrainSubsetOpt = Annotated[int, typer.Option(
    "--train-subset", min=0, help="Use this many training images in all (0: every image).")]
CalibOpt = Annotated[int, typer.Option(
    "--calib-size", min=1, help="Server-side images held out of training for BN recalibration.")]
TestSubsetOpt = Annotated[int, typer.Option(
    "--test-subset", min=0, help="Evaluate on this many test images (0: all).")]
EvalEveryOpt = Annotated[int, typer.Option(
    "--eval-every", min=1, help="Evaluate the corner SubNets every N rounds (and at the end).")]
BnOpt = Annotated[str, typer.Option(
    "--bn", help="train: BN trained, aggregated and recalibrated before evaluation; identity: "
    "every BN fixed to the identity (the reference's default; evaluate without recalibration).")]
WeightingOpt = Annotated[str, typer.Option(
    "--weighting", help="equal: the largest SubNet's client beta, the others (1-beta)/(K-1) "
    "(FedAvg: all equal), as the reference; samples: times each client's share of the "
    "round's examples.")]
LargestStartOpt = Annotated[float, typer.Option(
    "--largest-start", help="Aggregation share (beta) of the largest SubNet's client in round "
    "1; it decays by cosine to 1/--per-round (reference: 0.9).")]
DecayFractionOpt = Annotated[float, typer.Option(
    "--decay-fraction", help="Fraction of the rounds over which beta decays (reference: 0.8; "
    "in a 40-round run 0.25 gave the small SubNets 0.5-2.8 points more, README).")]
MinNodesOpt = Annotated[int, typer.Option(
    "--min-nodes", min=0, help="Fewest connected nodes a round runs with once --node-wait has "
    "passed (0: --per-round).")]
NodeWaitOpt = Annotated[float, typer.Option(
    "--node-wait", min=0.0, help="Seconds a round waits for --per-round nodes to be connected.")]
ReplyTimeoutOpt = Annotated[float, typer.Option(
    "--reply-timeout", min=1.0, help="Seconds a round waits for replies (a node that "
    "disconnects is given up on within seconds).")]
DatasetOpt = Annotated[str, typer.Option("--dataset", help="fashion-mnist, cifar10, imagefolder.")]


@app.command("fed")
def fed(
    supernet: SupernetOpt = DEFAULT_SUPERNET,
    set_: SetOpt = None,
    clients: ClientsOpt = 20,
    per_round: PerRoundOpt = 8,
    rounds: RoundsOpt = 20,
    alpha: AlphaOpt = 0.1,
    mode: ModeOpt = "superfednas",
    subnet: FedSubnetOpt = "",
    local_epochs: LocalEpochsOpt = 5,
    batch_size: BatchOpt = 64,
    lr: LrOpt = 0.1,
    bn: BnOpt = "train",
    weighting: WeightingOpt = "equal",
    largest_start: LargestStartOpt = 0.9,
    decay_fraction: DecayFractionOpt = 0.8,
    train_subset: TrainSubsetOpt = 0,
    calib_size: CalibOpt = 2000,
    test_subset: TestSubsetOpt = 0,
    eval_every: EvalEveryOpt = 5,
    dataset: DatasetOpt = "fashion-mnist",
    data_dir: DataDirOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR",
                                      help="Run folder: checkpoint.pt, history.json, "
                                      "clients.json. An existing run there is resumed.")
                   ] = Path("runs/fed"),
    parallel: Annotated[int | None, typer.Option(
        "--parallel", min=1, help="Clients training at once (Ray actors; default: CPU cores "
        "/ --threads).")] = None,
    threads: Annotated[int, typer.Option("--threads", min=1,
                                         help="torch threads per client.")] = 1,
    max_client_macs: Annotated[float, typer.Option(
        "--max-client-macs", help="Stop once the clients have spent this many training MACs "
        "(0: run all rounds).")] = 0.0,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Train a SuperNet federated with SuperFedNAS, in Flower's simulation engine.

    Each round samples --per-round of --clients clients (Dirichlet(--alpha) label
    split of the dataset), assigns SubNets by the tracking sandwich (largest,
    smallest, random), sends each client only its SubNet's slice, and merges the
    replies with overlap-aware aggregation. The corner SubNets are evaluated
    every --eval-every rounds after BN recalibration; the checkpoint works with
    `search`, `export` and `serve` like a centrally trained one. Killed runs
    resume from the last checkpoint in --out. For real machines use `fed-app`.

    Example:

        weightshare fed --clients 20 --per-round 8 --rounds 50 --alpha 0.1 -o runs/fed
    """
    from ..fed.simulate import simulate
    from ..progress import progress as tqdm

    cfg = _config(supernet, set_, clients=clients, per_round=per_round, rounds=rounds,
                  alpha=alpha, mode=mode, subnet=subnet, local_epochs=local_epochs,
                  batch_size=batch_size, lr=lr, bn=bn, weighting=weighting,
                  largest_start=largest_start, decay_fraction=decay_fraction,
                  train_subset=train_subset, eval_every=eval_every,
                  calib_size=calib_size, test_subset=test_subset,
                  dataset=dataset, data_root=str(data_dir or ""), seed=seed)
    bar = tqdm(total=rounds, desc="rounds", disable=as_json)

    def on_round(row: dict[str, Any]) -> None:
        bar.n = row["round"]
        accs = {k[4:]: f"{v:.1f}" for k, v in row.items() if k.startswith("acc_")}
        bar.set_postfix(loss=f"{row.get('train_loss', float('nan')):.3f}", **accs)
        if accs:
            bar.write(f"round {row['round']}: " + ", ".join(f"{k} {v}%" for k, v in accs.items()))
        bar.refresh()

    history = simulate(cfg, out, parallel=parallel, threads=threads,
                       max_client_macs=max_client_macs, on_round=on_round, verbose=False)
    bar.close()
    last = history["rounds"][-1]
    if as_json:
        emit_json({"out": str(out), "last": last})
        return
    accs = ", ".join(f"{k[4:]} {v:.2f}%" for k, v in last.items() if k.startswith("acc_"))
    sizes = sorted(c["examples"] for c in json.loads((out / "clients.json").read_text())["clients"])
    typer.echo(f"client data (Dirichlet alpha {alpha:g}): {len(sizes)} clients, min {sizes[0]}, "
               f"median {sizes[len(sizes) // 2]}, max {sizes[-1]} examples (clients.json)")
    typer.echo(f"{len(history['rounds'])} rounds, {last['total_client_macs'] / 1e12:.3f} T "
               f"client training MACs; {accs}")
    typer.echo(f"checkpoint: {out / 'checkpoint.pt'}  (search it: weightshare frontier "
               f"--checkpoint {out / 'checkpoint.pt'} ...)")


@app.command("fed-app")
def fed_app(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="Folder to write the app to.")],
    supernet: SupernetOpt = DEFAULT_SUPERNET,
    set_: SetOpt = None,
    clients: ClientsOpt = 2,
    per_round: PerRoundOpt = 2,
    rounds: RoundsOpt = 3,
    alpha: AlphaOpt = 0.1,
    local_epochs: LocalEpochsOpt = 5,
    bn: BnOpt = "train",
    weighting: WeightingOpt = "equal",
    largest_start: LargestStartOpt = 0.9,
    decay_fraction: DecayFractionOpt = 0.8,
    train_subset: TrainSubsetOpt = 0,
    eval_every: EvalEveryOpt = 5,
    min_nodes: MinNodesOpt = 0,
    node_wait: NodeWaitOpt = 120.0,
    reply_timeout: ReplyTimeoutOpt = 3600.0,
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR",
                                      help="Where the ServerApp writes its run folder.")
                   ] = Path("runs/fed-deploy"),
    seed: SeedOpt = 0,
) -> None:
    """Write a Flower App folder to run SuperFedNAS through Flower's deployment engine.

    The folder's pyproject.toml names `weightshare.fed.app:server_app` and
    `:client_app` and holds every setting in `[tool.flwr.app.config]` (override
    any with `flwr run DIR CONN --run-config "rounds=10"`). Start a SuperLink and
    one SuperNode per client (each with `--node-config "partition-id=I
    num-partitions=N"`), point a Flower connection at the SuperLink, then `flwr
    run` the folder; README "Federated" lists the exact commands.

    Example:

        weightshare fed-app fedapp --clients 2 --per-round 2 --rounds 3 --train-subset 2000
    """
    from ..fed.app import write_flower_app

    cfg = _config(supernet, set_, clients=clients, per_round=per_round, rounds=rounds,
                  alpha=alpha, local_epochs=local_epochs, bn=bn, weighting=weighting,
                  largest_start=largest_start, decay_fraction=decay_fraction,
                  train_subset=train_subset, eval_every=eval_every, min_nodes=min_nodes,
                  node_wait=node_wait, reply_timeout=reply_timeout, seed=seed)
    path = write_flower_app(directory, cfg, out)
    typer.echo(f"wrote {path}; run it with: flwr run {directory} <connection> --stream")
