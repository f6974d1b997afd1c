"""`dlf report`: train (or reuse) every named model, run the experiments, write REPORT.md.

Each stage lives in its own run directory under DIR/runs/ or DIR/experiments/. A
stage whose directory holds a finished run of the same config is reused; one with a
checkpoint but no result is resumed; anything else is trained from scratch. So an
interrupted report continues where it stopped.
"""

from __future__ import annotations

import datetime
import sys
from dataclasses import dataclass
from pathlib import Path

from dlf import config as C
from dlf import presets
from dlf.data.sources import DATASETS
from dlf.engine.metrics import MetricsLog
from dlf.engine.plan import plan_run
from dlf.engine.tensor_io import read_json, write_json
from dlf.engine.trainer import train
from dlf.errors import DlfError
from dlf.fileio import atomic_write_text
from dlf.plots import plot_names_curves
from dlf.tables import markdown_table


@dataclass(frozen=True)
class Stage:
    preset: str
    label: str
    reference: str  # the figure the lectures / nanoGPT quote, for comparison
    quick_steps: int


STAGES = [
    Stage("names-bigram", "count bigram", "2.45", 0),
    Stage("names-bigram-neural", "neural bigram", "~2.45 (lecture ~2.49 incl. L2 term)", 30),
    Stage("names-mlp-manual", "MLP, manual backprop", "val ~2.10", 200),
    Stage("names-mlp", "MLP, dlf.nn layers + BatchNorm", "val ~2.0 (lecture 2.106)", 200),
    Stage("names-wavenet", "WaveNet (hierarchical)", "train ~1.9, val ~2.0 (lecture 1.769/1.994)",
          200),
    Stage("names-bow", "bag of words (causal mean + MLP)", "-", 60),
    Stage("names-rnn", "RNN (Elman cell)", "-", 60),
    Stage("names-gru", "GRU", "-", 60),
    Stage("names-transformer", "Transformer on names (whole names)", "makemore ~1.92", 60),
    Stage("shakespeare-transformer-cpu", "Transformer on Shakespeare (RoPE, ReLU², Muon, WSD)",
          "val ≤ 1.88 (the gpt-recipe target)", 30),
    Stage("shakespeare-transformer-cpu-gpt2", "the same shape in the GPT-2 design",
          "val ≤ 1.88 (the gpt-recipe target)", 30),
    Stage("shakespeare-transformer-cpu-bpe", "the GPT-2 design on BPE tokens", "-", 30),
]
# The character and the BPE model: one model, about equal training time, two tokenizers.
TOKENIZER_PAIR = ("shakespeare-transformer-cpu-gpt2", "shakespeare-transformer-cpu-bpe")
EXPERIMENTS = ["mlp-init", "wavenet-vs-flat", "names-zoo", "gpt-recipe"]
QUICK_EXPERIMENT_STEPS = 40
MICRO_QUICK_STEPS = 5  # dlf.micro's moons MLP; the full report trains the lecture's 100


def stage_config(stage: Stage, quick: bool, names: str | None, text: str | None) -> C.RunConfig:
    cfg = presets.load_preset(stage.preset)
    override = {"names": names, "shakespeare": text}.get(cfg.data.dataset)
    if override:  # the file stands in for the dataset, read in its format
        cfg.data.format = cfg.data.format or DATASETS[cfg.data.dataset].format
        cfg.data.dataset = str(Path(override).resolve())
    if quick:  # the same pipeline with a tiny budget: the schedule shrinks with it
        t = cfg.train
        C.shorten(t, min(t.max_steps, stage.quick_steps))
        t.eval_interval = max(1, t.max_steps)
        t.log_interval = max(1, t.max_steps // 20)
        t.eval_iters = min(t.eval_iters, 4)
        t.sample_tokens = min(t.sample_tokens, 200)
    return cfg


def _same_config(run_dir: Path, cfg: C.RunConfig) -> bool:
    """Whether the run in run_dir was planned from `cfg` (its config.toml is the plan's)."""
    try:
        saved = presets.load_toml(run_dir / "config.toml")
    except DlfError:
        return False
    plan, _ = plan_run(cfg)
    return C.to_dict(saved) == C.to_dict(plan.cfg)


def run_stage(cfg: C.RunConfig, run_dir: Path, progress: bool) -> tuple[dict, str]:
    """Train, resume or reuse; returns (result.json, what was done)."""
    if (run_dir / "result.json").exists() and _same_config(run_dir, cfg):
        return read_json(run_dir / "result.json"), "reused"
    if (run_dir / "state.safetensors").exists() and _same_config(run_dir, cfg):
        train(cfg, run_dir, resume=True, progress=progress)
        how = "resumed"
    else:
        train(cfg, run_dir, force=True, progress=progress)
        how = "trained"
    if not (run_dir / "result.json").exists():  # stopped by Ctrl-C: the report stops too
        raise KeyboardInterrupt
    return read_json(run_dir / "result.json"), how


def run_experiment_stage(name: str, out: Path, quick: bool, names: str | None,
                         text: str | None, progress: bool) -> tuple[dict, str]:
    from dlf.experiments import EXPERIMENTS as REGISTRY
    from dlf.experiments import run_experiment

    steps = QUICK_EXPERIMENT_STEPS if quick else None
    dataset = REGISTRY[name].dataset
    data = {"names": names, "shakespeare": text}.get(dataset)
    done = out / "results.json"
    if done.exists():
        prev = read_json(done)
        if prev.get("quick") == quick and prev.get("data") == (data or dataset) and \
                (steps is None or prev.get("steps") == steps):
            return prev, "reused"
    return run_experiment(name, out, data=data, quick=quick, steps=steps, progress=progress,
                          force=True), "ran"


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.4f}"


def _samples(run_dir: Path, n: int = 10) -> list[str]:
    """What `dlf sample RUN -n n --seed 0` prints (text: one sample of about 400
    characters: 400 tokens, or 200 BPE tokens)."""
    from dlf.api import generate
    from dlf.engine.saved import load_run

    run = load_run(run_dir, device="cpu")
    if run.tokenizer.boundary is not None:
        return generate(run, n=n, seed=0)
    return generate(run, seed=0, max_new_tokens=400 if run.config.data.tokenizer == "char"
                    else 200)


def generate_report(out_dir: str | Path = "report", *, quick: bool = False,
                    names: str | None = None, text: str | None = None,
                    progress: bool | None = None, log=None) -> Path:
    """Run every stage and write DIR/REPORT.md; returns its path."""
    from dlf.bench import machine

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mach = machine()  # before any run changes torch's thread count
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    progress = sys.stderr.isatty() if progress is None else progress
    total = len(STAGES) + len(EXPERIMENTS) + 1
    rows, run_dirs = [], {}
    for i, stage in enumerate(STAGES, 1):
        cfg = stage_config(stage, quick, names, text)
        run_dir = out / "runs" / stage.preset
        log(f"[{i}/{total}] {stage.preset}: {stage.label} ...")
        result, how = run_stage(cfg, run_dir, progress)
        log(f"[{i}/{total}] {stage.preset}: {how}, val {_fmt(result['val_loss'])} "
            f"({result['wall_seconds']:.0f} s)")
        rows.append((stage, cfg, result))
        run_dirs[stage.preset] = run_dir
    experiments = {}
    for j, name in enumerate(EXPERIMENTS, len(STAGES) + 1):
        log(f"[{j}/{total}] experiment {name} ...")
        res, how = run_experiment_stage(name, out / "experiments" / name, quick, names, text,
                                        progress)
        log(f"[{j}/{total}] experiment {name}: {how} ({res.get('wall_seconds', 0):.0f} s)")
        experiments[name] = res
    log(f"[{total}/{total}] dlf.micro: scalar-autograd MLP on moons ...")
    micro = run_micro(quick)
    log(f"[{total}/{total}] dlf.micro: train accuracy {micro.accuracy:.0%} after "
        f"{micro.steps} steps ({micro.seconds:.0f} s)")

    names_runs = {s.label: MetricsLog(run_dirs[s.preset] / "metrics.jsonl").read()
                  for s, cfg, _ in rows if s.preset.startswith("names-")}
    plot_names_curves(names_runs, out / "names_loss.png")
    md = _markdown(out, rows, run_dirs, experiments, quick, mach, micro)
    atomic_write_text(out / "REPORT.md", md)
    write_json(out / "results.json", _summary(rows, quick, mach))
    log(f"report written: {out / 'REPORT.md'}")
    return out / "REPORT.md"


def _summary(rows, quick: bool, mach: dict) -> dict:
    """results.json: each stage's figures, and where and when they were measured (what
    tools/publish_results.py turns into docs/results.md's companions)."""
    return {"command": "dlf report" + (" --quick" if quick else ""), "quick": quick,
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
            "machine": _machine_line(mach),
            "runs": {stage.preset: {"label": stage.label, "reference": stage.reference,
                                    "num_parameters": r["num_parameters"],
                                    "val_loss": r["val_loss"], "test_loss": r["test_loss"],
                                    "val_nats_per_char": r.get("val_nats_per_char"),
                                    "steps": r["steps"], "train_seconds": r["train_seconds"],
                                    "wall_seconds": r["wall_seconds"]}
                     for stage, _, r in rows}}


def _machine_line(mach: dict) -> str:
    threads = f"{mach['threads']} torch thread" + ("s" if mach["threads"] != 1 else "")
    return (f"{mach['cpu']} ({mach['cores']} cores, {threads}), "
            f"torch {mach['torch']}" + (f", GPU {mach['cuda']}" if mach.get("cuda") else ""))


def _tokenizer_rows(rows) -> list[str]:
    """The character and the BPE Shakespeare models side by side, in nats per character."""
    pair = {stage.preset: (cfg, r) for stage, cfg, r in rows if stage.preset in TOKENIZER_PAIR}
    if len(pair) < 2:
        return []
    lines = ["## Characters or BPE tokens", "",
             ("The same Transformer on Shakespeare, trained for about the same time on "
              "characters and on byte-level BPE tokens (vocabulary learned from the train "
              "split). Loss per token does not compare across tokenizers; nats per "
              "character does: the summed loss of the evaluated tokens over the characters "
              "they decode to."), "",
             ]
    header = ["tokens", "vocabulary", "context", "steps", "train time", "val nats/token",
              "val nats/char", "val bits/char"]
    table = []
    for preset in TOKENIZER_PAIR:
        cfg, r = pair[preset]
        ratio = r["val_loss"] / r["val_nats_per_char"]  # characters per token (val)
        table.append([f"{cfg.data.tokenizer} (`{preset}`)", f"{r['vocab_size']:,}",
                      f"{cfg.model.block_size} tokens, ~{cfg.model.block_size * ratio:.0f} chars",
                      f"{r['steps']:,}", f"{r['train_seconds']:.0f} s", _fmt(r["val_loss"]),
                      _fmt(r["val_nats_per_char"]), _fmt(r["val_bits_per_char"])])
    return [*lines, *markdown_table(header, table), ""]


def run_micro(quick: bool):
    """Lesson 0's scalar-autograd MLP on the moons, the lecture's 100 steps (quick: fewer).
    Trained afresh by every report: it takes well under a minute."""
    from dlf.micro import train_moons

    return train_moons(MICRO_QUICK_STEPS) if quick else train_moons()


def micro_table(r) -> list[str]:
    """The markdown table of run_micro's result (a dlf.micro.MoonsResult)."""
    first = "-" if r.first_perfect_step is None else f"{r.first_perfect_step:,}"
    header = ["model", "dataset", "parameters", "train accuracy", "reference", "steps",
              "first step at 100%", "wall"]
    row = ["MLP 2-16-16-1 on scalar Values, hinge loss + L2", f"moons ({len(r.y)} points)",
           f"{len(r.model.parameters()):,}", f"{r.accuracy:.1%}", "100% (micrograd demo)",
           f"{r.steps:,}", first, f"{r.seconds:.0f} s"]
    return ["## Scalar autograd (`dlf.micro`, lesson 0)", "", *markdown_table(header, [row]),
            ""]


def _markdown(out: Path, rows, run_dirs, experiments, quick: bool, mach: dict,
              micro) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# dlf results" + (" (quick: tiny budgets, not the real figures)" if quick else ""),
        "",
        (f"Generated {now} by `dlf report{' --quick' if quick else ''}` on "
         f"{_machine_line(mach)}."),
        "",
    ]
    header = ["model", "dataset", "parameters", "train", "val", "test", "val nats/char",
              "reference", "steps", "wall"]
    table = []
    for stage, cfg, r in rows:
        ds = Path(cfg.data.dataset).name if "/" in cfg.data.dataset else cfg.data.dataset
        table.append([f"{stage.label} (`{stage.preset}`)", ds, f"{r['num_parameters']:,}",
                      _fmt(r["train_loss"]), _fmt(r["val_loss"]), _fmt(r["test_loss"]),
                      _fmt(r.get("val_nats_per_char")), stage.reference, f"{r['steps']:,}",
                      f"{r['wall_seconds']:.0f} s"])
    lines += [*markdown_table(header, table), "", ("Losses are mean cross-entropy in nats per token of each run's best-"
                   "validation weights (a token is a character, except for the BPE model); "
                   "val nats/char puts every model on one scale. Names splits are exact, "
                   "Shakespeare uses `train.eval_iters` fixed batches."), "",
              *_tokenizer_rows(rows),
              *micro_table(micro),
              "## Names models", "", "![names loss curves](names_loss.png)", ""]
    sh = [s for s, _, _ in rows if not s.preset.startswith("names-")]
    for s in sh:
        rel = run_dirs[s.preset].relative_to(out) / "loss.png"
        lines += [f"## {s.label}", "", f"![{s.preset} loss]({rel.as_posix()})", ""]
    from dlf.experiments import EXPERIMENTS as REGISTRY

    for name in experiments:
        rel = Path("experiments") / name
        md_path = out / rel / "results.md"
        body = md_path.read_text(encoding="utf-8") if md_path.exists() else ""
        body = "\n".join(ln for ln in body.splitlines() if not ln.startswith("# "))
        lines += [f"## Experiment: {name}", "", body.strip(), "",
                  f"![{name} figure]({(rel / REGISTRY[name].figure).as_posix()})", ""]
    lines += ["## Samples (seed 0)", ""]
    for stage, _, _ in rows:
        samples = _samples(run_dirs[stage.preset])
        lines += [f"**{stage.label}**", "", "```", *samples, "```", ""]
    lines += ["## Configurations", "",
              ("Each run directory under `runs/` holds its resolved `config.toml`, "
               "`metrics.jsonl`, `result.json` and checkpoints; rerun a stage with "
               "`dlf train runs/<name>/config.toml --out DIR`."), ""]
    return "\n".join(lines) + "\n"
