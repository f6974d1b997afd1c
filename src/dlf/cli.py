"""`dlf` command line: parse, call the library, print. No logic lives here."""

from __future__ import annotations

import argparse
import json
import sys

from dlf.errors import DlfError

EPILOG = """examples:
  dlf presets                                  list the packaged configurations
  dlf train names-mlp                          train into runs/names-mlp
  dlf train names-mlp --set train.lr=0.05 --max-steps 2000 --out runs/try
  dlf sample runs/names-mlp -n 10 --seed 0     print 10 names
  dlf eval runs/names-mlp --split test --json
  dlf import gpt2 gpt2/ --out runs/gpt2        a Hugging Face GPT-2 as a run dir

Data: named datasets (names, shakespeare) are read from $DLF_DATA_DIR, then the
sha256-checked copy inside the package, then ~/.cache/dlf, else downloaded and
sha256-checked. --data PATH uses any UTF-8 file.
Exit status: 0 done; 2 bad input or a failed run (one line on stderr); 75 a training
stopped by SIGINT or SIGTERM after checkpointing (resumable with --resume); 130 aborted
by a second signal."""

# sysexits' EX_TEMPFAIL ("try again later"): a training stopped by SIGINT/SIGTERM after
# checkpointing; the same command with --resume continues it.
EXIT_INTERRUPTED = 75


TRAIN_DESCRIPTION = """\
Train a model. The run directory receives config.toml, tokenizer.json,
model.safetensors (best validation weights), state.safetensors (last step, for
--resume), metrics.jsonl, result.json, loss.png and samples.txt. Files follow the
umask (0644 under umask 022). One run at a time holds a directory (DIR/.lock,
released when it ends, also when it is killed); a second run on it exits 2.

Checkpoints: state.safetensors every train.checkpoint_interval steps (default 50,
under a minute of work on the CPU presets), at the end and at a stop; a killed run
loses the steps since. --resume auto continues the run in --out if there is one and
starts it otherwise: the one command of a job that torchrun restarts
(--max-restarts; docs/distributed.md).

Stopping: Ctrl-C (SIGINT) or SIGTERM (timeout, docker stop, a batch scheduler)
finishes the current step, checkpoints and exits with status 75: interrupted,
resumable. Run the same command with --resume to continue. A second signal aborts
at once (status 130; the last checkpoint stays).

Failures: a loss or gradient norm that is not finite, running out of memory (the
line names the setting to lower) or a file that cannot be written (a full disk)
end the run with one line and status 2, keeping the last good checkpoint. A loss
above 10x the first step's is flagged on the progress line and in result.json's
"warnings"."""


def _add_train(sub):
    p = sub.add_parser(
        "train", help="train a model from a preset or a TOML config",
        description=TRAIN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: dlf train names-mlp --set model.n_hidden=300 --set train.lr=0.05")
    p.add_argument("config", metavar="PRESET|CONFIG.toml",
                   help="a preset name (see `dlf presets`) or a path to a TOML config")
    p.add_argument("--data", metavar="PATH", help="train on this UTF-8 file instead of the "
                   "preset's dataset (set data.format=text for a character stream)")
    p.add_argument("--out", metavar="DIR", help="run directory (default: runs/<preset name>)")
    p.add_argument("--max-steps", type=int, metavar="N", help="override train.max_steps")
    p.add_argument("--device", metavar="D", help="auto (default), cpu or cuda")
    p.add_argument("--seed", type=int, metavar="S", help="override train.seed")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config value, e.g. train.lr=0.01 or model.n_embd=64 "
                   "(repeatable; the section may be left out when the key is unambiguous)")
    p.add_argument("--resume", nargs="?", const=True, default=False, choices=["auto"],
                   help="continue the run in --out from its state.safetensors; --resume auto: "
                   "continue it if --out holds one of this config, start it if --out holds "
                   "nothing (one command that both starts a job and continues it after a "
                   "restart)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing run in --out (its files are listed on stderr; "
                   "files dlf did not write are kept)")
    p.add_argument("--init-from", metavar="RUN_DIR",
                   help="start from another run's best weights and tokenizer with a fresh "
                   "optimizer (fine-tuning, e.g. a GPT-2 from `dlf import gpt2`); the model "
                   "must have that run's architecture")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="data-parallel training in N processes on this machine (torchrun; "
                   "CPU: gloo, the cores shared; CUDA: NCCL, one GPU each); the same as "
                   "torchrun --standalone --nproc_per_node N -m dlf train ...")
    p.add_argument("--max-restarts", type=int, default=0, metavar="N",
                   help="with --nproc (1 too) and --resume auto: when a process fails, torchrun "
                   "restarts the job up to N times and it continues from the last checkpoint "
                   "(train.checkpoint_interval)")
    p.add_argument("--no-probe", action="store_true",
                   help="do not time candidate micro-batches and attention kernels for "
                   "\"auto\" (train.probe = false): whole batches and the kernel rule")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write the logged records as TensorBoard scalars into "
                   "RUN/tensorboard/ (train.tensorboard = true; needs pip install "
                   "'dlf[tensorboard]'); view them with tensorboard --logdir RUN/tensorboard")
    p.add_argument("--diagnostics", action="store_true",
                   help="also record update:data ratios and write the tanh health plots "
                   "(activations, gradients, weight gradients, update ratios) at the end")


def _add_sample(sub):
    p = sub.add_parser(
        "sample", help="generate from a trained run",
        description="Generate from a run directory's best weights. Names models print one "
        "item per line; text models stream text as it is generated (a BPE model's "
        "characters whole, even when a token ends inside one).")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("-n", "--num", type=int, default=None,
                   help="number of samples (default: 20 for line data, 1 for text)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="divide logits by T: <1 sharper, >1 more random, 0 greedy (default 1)")
    p.add_argument("--top-k", type=int, default=None, help="sample only from the K likeliest")
    p.add_argument("--prompt", default="", help="text the samples start with")
    p.add_argument("--seed", type=int, default=0, help="same seed, same samples (default 0)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="tokens to generate, characters for a character-level run "
                   "(default: 50 per name, 500 for text)")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument("--no-cache", action="store_true",
                   help="sequence models (transformer, rnn, gru): recompute the whole "
                   "window each step instead of using the KV cache / hidden state")


def _add_eval(sub):
    p = sub.add_parser(
        "eval", help="loss of a trained run on a split or a file",
        description="Mean cross-entropy of the run's best weights, in nats per token and in "
        "nats and bits per character (the same for a character-level run; for BPE, the "
        "summed loss over the characters the evaluated tokens decode to), and perplexity "
        "(e to the nats per token). Line data is evaluated exactly over the split; text data "
        "over train.eval_iters fixed batches. --data FILE evaluates a whole file instead, "
        "every token once: text in consecutive block_size windows, lines one by one.",
        epilog="example: dlf eval runs/gpt2 --data tinyshakespeare.txt")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--split", choices=["train", "val", "test"], default="val",
                   help="which split of the run's own data (default val)")
    p.add_argument("--data", metavar="FILE", help="evaluate on this whole UTF-8 file through "
                   "the run's tokenizer instead of a split (an imported run has no data of its "
                   "own)")
    p.add_argument("--json", action="store_true", help='print {"split" or "data": ..., '
                   '"loss": ..., "nats_per_char": ..., "bits_per_char": ..., "perplexity": ...}')
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")


def _add_gradcheck(sub):
    p = sub.add_parser(
        "gradcheck", help="check the hand-written backward pass against autograd",
        description="Run one batch of the manual-backprop MLP in float64 and compare every "
        "hand-written gradient (each intermediate and parameter, plus the fused cross-entropy "
        "and BatchNorm forms) with autograd's. Exits 1 if any max difference is >= 1e-10 "
        "(dlf.manual.GRADCHECK_LIMIT).")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--torch-batchnorm", action="store_true",
                   help="normalise with the biased variance (1/n) as torch.nn.BatchNorm1d "
                   "instead of the lecture's 1/(n-1)")
    p.add_argument("--json", action="store_true",
                   help="print a list of {name, exact, approx, max_abs_diff}")


def _add_bench(sub):
    from typing import get_args

    from dlf.config import DType

    DTYPES = get_args(DType)
    p = sub.add_parser(
        "bench", help="measure training and sampling speed",
        description="Speed measurements (not tests). `train`: tokens/s, achieved GFLOP/s "
        "(matmul FLOPs of forward + backward) and MFU against a matmul peak measured in the "
        "same process and dtype. `sample`: tokens/s with and without the KV cache.")
    bsub = p.add_subparsers(dest="bench_command", metavar="WHAT", required=True)
    t = bsub.add_parser("train", help="training throughput and MFU")
    t.add_argument("--preset", default="shakespeare-transformer",
                   help="preset whose model and batch to time (default shakespeare-transformer)")
    t.add_argument("--dtype", choices=DTYPES, default="bf16")
    t.add_argument("--steps", type=int, default=10, help="timed steps after one warm-up")
    t.add_argument("--batch-size", type=int, default=None, help="default: the preset's")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--device", default="auto")
    t.add_argument("--json", action="store_true", help="print one JSON object")
    t.add_argument("--threads", type=int, default=0, help="torch threads (default: one per core)")
    t.add_argument("--no-probe", action="store_true",
                   help="time the rules' micro-batch and attention, not the probe's "
                   "(train.probe = false)")
    t.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="also run the benchmark data-parallel in N processes (torchrun) and "
                   "report the scaling against 1 process")
    s = bsub.add_parser("sample", help="generation speed with and without the KV cache")
    s.add_argument("--preset", default="shakespeare-transformer")
    s.add_argument("--new-tokens", type=int, default=1000)
    s.add_argument("--dtype", choices=DTYPES, default="fp32")
    s.add_argument("--device", default="auto")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.add_argument("--threads", type=int, default=0, help="torch threads (default: one per core)")


def _add_diagnose(sub):
    p = sub.add_parser(
        "diagnose", help="health plots of a trained tanh network (MLP, WaveNet)",
        description="Write activations.png, activation_grads.png, weight_grads.png (one fixed "
        "training batch through the best weights) and update_ratio.png (a scratch copy of the "
        "last checkpoint trained --steps more steps) plus diagnostics.json into the run "
        "directory. Nothing else in the run directory changes.")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--steps", type=int, default=200,
                   help="steps to measure update:data ratios over (0: skip; default 200)")
    p.add_argument("--device", default="auto")


def _add_attention(sub):
    p = sub.add_parser(
        "attention", help="draw a Transformer run's attention for a prompt",
        description="Write a PNG grid of every head's attention probabilities (rows: layers, "
        "columns: heads; row t of a map is what position t attends to) for the prompt, from "
        "the run's best weights.")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--prompt", required=True, help="the text to attend over (at most "
                   "block_size tokens, each character known to the run's tokenizer)")
    p.add_argument("--layer", type=int, default=None, help="only this layer (default: all)")
    p.add_argument("--out", metavar="FILE", help="default: RUN_DIR/attention.png")
    p.add_argument("--device", default="auto")


def _add_experiment(sub):
    from dlf.experiments import EXPERIMENTS

    p = sub.add_parser(
        "experiment", help="how design choices change learning",
        description="Train the variants of an experiment and write results.md (a table with a "
        "computed interpretation), results.json and loss_curves.png. Experiments: "
        + "; ".join(f"{k}: {v.description}" for k, v in EXPERIMENTS.items()))
    p.add_argument("name", choices=list(EXPERIMENTS))
    p.add_argument("--out", metavar="DIR", help="default: runs/experiments/<name>")
    p.add_argument("--data", metavar="PATH", help="a data file instead of the experiment's "
                   "dataset (names; tinyshakespeare for gpt-recipe)")
    p.add_argument("--quick", action="store_true", help="about 100 steps per variant (a smoke "
                   "run, not the figures)")
    p.add_argument("--steps", type=int, help="steps per variant (overrides --quick)")
    p.add_argument("--force", action="store_true", help="replace existing variant runs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_report(sub):
    p = sub.add_parser(
        "report", help="reproduce the whole results table in one command",
        description="Train (or reuse, when a run directory is complete and its config matches) "
        "every named model, run the experiments and write DIR/REPORT.md with the results "
        "table, loss curves, experiment tables and samples. An interrupted report resumes "
        "where it stopped.")
    p.add_argument("--out", metavar="DIR", default="report", help="default: report/")
    p.add_argument("--quick", action="store_true",
                   help="the same pipeline with tiny budgets (a smoke test, not the figures)")
    p.add_argument("--names", metavar="PATH", help="a lines file instead of the names dataset")
    p.add_argument("--text", metavar="PATH", help="a text file instead of tinyshakespeare")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


TOKENIZER_DESCRIPTION = """\
Train and use a byte-level BPE tokenizer (dlf.data.bpe). The text is split by a regex
(--pattern: gpt4, the default, GPT-4's cl100k split; gpt2; or none, one chunk), each
chunk is UTF-8 bytes (ids 0..255), and training learns vocab-size - 256 - specials merges;
special tokens take the last ids. The file is versioned JSON (merges, pattern, specials).
`import` reads GPT-4's or GPT-2's published vocabulary into the same format, with the
ids their own libraries give."""

IMPORT_DESCRIPTION = """\
Read an outside vocabulary into dlf's tokenizer file, keeping its ids (dlf.data.bpe_files):
a tiktoken rank file (merges recovered from the ranks), GPT-2's vocab.json + merges.txt,
or Hugging Face's tokenizer.json. tiktoken's cl100k_base file, known by its sha256, brings
GPT-4's split and special tokens (<|endoftext|> 100257, <|fim_prefix|> 100258,
<|fim_middle|> 100259, <|fim_suffix|> 100260, <|endofprompt|> 100276); --pattern and
--special replace them. A bad file is refused before --out is touched."""


def _add_tokenizer(sub):
    p = sub.add_parser(
        "tokenizer", help="train, import, use and inspect a byte-level BPE tokenizer",
        description=TOKENIZER_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: dlf tokenizer train shakespeare --vocab-size 1024 --out tok.json")
    tsub = p.add_subparsers(dest="tokenizer_command", metavar="VERB", required=True)
    t = tsub.add_parser("train", help="learn merges from a text file",
                        description="Learn merges from FILE (a UTF-8 file or a dataset name) "
                        "and write the tokenizer to --out.")
    t.add_argument("file", metavar="FILE", help="a UTF-8 text file or a dataset name")
    t.add_argument("--vocab-size", type=int, required=True, metavar="N",
                   help="256 byte tokens + merges + special tokens")
    t.add_argument("--out", required=True, metavar="TOK.json", help="where to write it")
    t.add_argument("--pattern", default="gpt4", metavar="P",
                   help="split pattern: gpt4 (default), gpt2 or none")
    t.add_argument("--special", action="append", default=[], metavar="TOKEN",
                   help="register a special token such as <|endoftext|> (repeatable)")
    i = tsub.add_parser(
        "import", help="read GPT-4's or GPT-2's vocabulary (tiktoken, Hugging Face files)",
        description=IMPORT_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: dlf tokenizer import --tiktoken cl100k_base.tiktoken --out "
        "cl100k.json")
    source = i.add_mutually_exclusive_group(required=True)
    source.add_argument("--tiktoken", metavar="FILE",
                        help="a tiktoken rank file: a token in base64 and its rank a line")
    source.add_argument("--gpt2", nargs=2, metavar=("VOCAB", "MERGES"),
                        help="GPT-2's vocab.json and merges.txt")
    source.add_argument("--hf-json", metavar="TOKENIZER_JSON",
                        help="Hugging Face's tokenizer.json of a byte-level BPE")
    i.add_argument("--pattern", metavar="P",
                   help="split pattern: gpt4, gpt2 or none (needed for a rank file other than "
                   "cl100k_base's; --gpt2 default gpt2; --hf-json reads it from the file)")
    i.add_argument("--special", action="append", metavar="NAME=ID",
                   help="a special token of a rank file and its id (repeatable; replaces "
                   "cl100k_base's five)")
    i.add_argument("--out", required=True, metavar="TOK.json", help="where to write it")
    i.add_argument("--force", action="store_true",
                   help="replace --out when it is a tokenizer file of dlf's")
    e = tsub.add_parser("encode", help="print the ids of a text",
                        description="Print the token ids of TEXT, separated by spaces.")
    e.add_argument("tokenizer", metavar="TOK.json")
    e.add_argument("text", metavar="TEXT")
    e.add_argument("--allow-special", action="store_true",
                   help="encode special tokens' text as their ids (default: it is an error)")
    d = tsub.add_parser("decode", help="print the text of ids",
                        description="Print the text of token ids (separated by spaces or "
                        "commas, in one argument or several).")
    d.add_argument("tokenizer", metavar="TOK.json")
    d.add_argument("ids", nargs="+", metavar="IDS")
    s = tsub.add_parser("stats", help="compression on a file, first and last merges",
                        description="Characters and bytes per token of FILE, and the "
                        "tokenizer's first and last merges.")
    s.add_argument("tokenizer", metavar="TOK.json")
    s.add_argument("file", metavar="FILE", help="a UTF-8 text file or a dataset name")
    s.add_argument("--merges", type=int, default=5, metavar="K",
                   help="how many first and last merges to show (default 5)")


def _add_import(sub):
    p = sub.add_parser(
        "import", help="make a run directory from another library's checkpoint",
        description="Read a checkpoint in another library's layout and write a dlf run "
        "directory (config.toml, model.safetensors, tokenizer.json) that dlf sample, dlf eval "
        "and dlf.load_run use like any run. Nothing is written when the checkpoint is refused.")
    isub = p.add_subparsers(dest="import_format", metavar="FORMAT", required=True)
    g = isub.add_parser(
        "gpt2", help="a Hugging Face GPT-2 directory (any size)",
        description="DIR holds config.json, model.safetensors or pytorch_model.bin (read "
        "with weights only: no code runs), and vocab.json + merges.txt or tokenizer.json, as "
        "Hugging Face's save_pretrained writes them (docs/gpt2.md).",
        epilog="example: dlf import gpt2 ~/models/gpt2 --out runs/gpt2")
    g.add_argument("dir", metavar="DIR", help="the Hugging Face GPT-2 directory")
    g.add_argument("--out", required=True, metavar="RUN_DIR", help="the run directory to write")
    g.add_argument("--force", action="store_true",
                   help="replace a run in --out (only the files a dlf run holds)")


def _add_export(sub):
    p = sub.add_parser(
        "export", help="write a run's model in another library's layout",
        description="Write a run's model in another library's layout. Nothing is written when "
        "the run is refused.")
    esub = p.add_subparsers(dest="export_format", metavar="FORMAT", required=True)
    g = esub.add_parser(
        "gpt2", help="a Transformer in GPT-2's design, as Hugging Face's GPT2LMHeadModel",
        description="Write config.json and model.safetensors into DIR, loadable by Hugging "
        "Face's GPT2LMHeadModel.from_pretrained(DIR). The run's Transformer must have GPT-2's "
        "design: learned positions, LayerNorm, biases, no qk_norm, GELU.",
        epilog="example: dlf export gpt2 runs/shakespeare-transformer exported/")
    g.add_argument("run", metavar="RUN_DIR", help="the run whose best weights to write")
    g.add_argument("dir", metavar="DIR", help="the directory to write (created if needed)")
    g.add_argument("--force", action="store_true",
                   help="replace config.json and model.safetensors in DIR")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dlf",
        description="deep-learning-foundations: language models from first principles "
        "(bigram, MLP, WaveNet, Transformer), trained fast and made visible.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    from dlf import __version__

    parser.add_argument("--version", action="version", version=f"dlf {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("presets", help="list the packaged presets",
                   description="List the packaged presets with one-line descriptions.")
    _add_train(sub)
    _add_sample(sub)
    _add_eval(sub)
    _add_gradcheck(sub)
    _add_bench(sub)
    _add_diagnose(sub)
    _add_attention(sub)
    _add_experiment(sub)
    _add_report(sub)
    _add_tokenizer(sub)
    _add_import(sub)
    _add_export(sub)
    return parser


def cmd_presets(args) -> int:
    from dlf import presets
    from dlf.tables import text_table

    def seconds(s):
        return "-" if s is None else f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min"

    rows = [[r["name"], r["model"], f"{r['parameters']:,}", r["data"], f"{r['steps']:,}",
             "-" if r["val_loss"] is None else f"{r['val_loss']:.3f}",
             seconds(r["train_seconds"])] for r in presets.table()]
    header = ["preset", "model", "params", "data", "steps", "val", "train time"]
    print("\n".join(text_table(header, rows, left=(0, 1, 3))))
    m = presets.measured()
    if m["runs"]:
        print(f"\nval (nats per token) and train time: `{m['command']}` on {m['machine']}, "
              f"{m['date']} (docs/results.md); - : not part of it.")
    print("Old names still work: " + ", ".join(sorted(presets.ALIASES)) + ".")
    return 0


def cmd_train(args) -> int:
    from pathlib import Path

    from dlf import config as C
    from dlf import presets
    from dlf.engine.distributed import World
    from dlf.engine.trainer import train

    cfg = presets.resolve(args.config)
    if args.data:
        cfg.data.dataset = str(Path(args.data).resolve())
    C.apply_overrides(cfg, args.set)
    if args.max_steps is not None:
        cfg.train.max_steps = args.max_steps
    if args.seed is not None:
        cfg.train.seed = args.seed
    if args.device:
        cfg.train.device = args.device
    if args.tensorboard:
        cfg.train.tensorboard = True
    if args.no_probe:
        cfg.train.probe = False
    out = Path(args.out or Path("runs") / cfg.name)
    progress = False if args.quiet else None
    if args.nproc != 1 or args.max_restarts:
        return _launch(args, cfg, out)
    if args.diagnostics:
        from dlf.diagnostics import train_with_diagnostics

        r = train_with_diagnostics(cfg, out, resume=args.resume, force=args.force,
                                   init_from=args.init_from, progress=progress)
    else:
        r = train(cfg, out, resume=args.resume, force=args.force, init_from=args.init_from,
                  progress=progress)
    if r.get("interrupted"):
        return EXIT_INTERRUPTED
    if World.from_env().rank != 0:  # a data-parallel job reports once, from rank 0
        return 0
    test = f", test {r['test_loss']:.4f}" if r.get("test_loss") is not None else ""
    if cfg.data.tokenizer != "char":  # losses per token; per character for comparison
        test += f" nats/token; val {r['val_nats_per_char']:.4f} nats/char"
    print(f"{cfg.name}: train {r['train_loss']:.4f}, val {r['val_loss']:.4f}{test} "
          f"({r['steps']} steps, {r['wall_seconds']:.1f} s wall, {r['train_seconds']:.1f} s in steps, "
          f"{r['num_parameters']:,} parameters)")
    print(f"run directory: {out}")
    return 0


def _launch(args, cfg, out) -> int:
    """`--nproc N` (and `--max-restarts`): plan the job once here and check its run
    directory (every refusal before any process starts), then start N processes
    (torchrun)."""
    from dlf.engine.launch import check_job, launch_local, strip_launch_options

    checks = ()
    if args.diagnostics:
        from dlf.diagnostics import diagnosable

        checks = (diagnosable,)
    plan = check_job(cfg, out, args.nproc, resume=args.resume, force=args.force,
                     init_from=args.init_from, max_restarts=args.max_restarts, checks=checks)
    return launch_local(args.nproc, strip_launch_options(args.argv), plan.threads,
                        args.max_restarts)


def cmd_sample(args) -> int:
    from dlf.api import generate
    from dlf.engine.saved import load_run
    from dlf.sample import check_sampling_args

    run = load_run(args.run, device=args.device)
    common = {"temperature": args.temperature, "top_k": args.top_k, "prompt": args.prompt,
              "max_new_tokens": args.max_new_tokens, "use_cache": not args.no_cache}
    if run.tokenizer.boundary is not None:  # line data: one item per line
        n = 20 if args.num is None else args.num
        print("\n".join(generate(run, n=n, seed=args.seed, **common)))
        return 0
    n = 1 if args.num is None else args.num  # text: continuations streamed as they grow
    check_sampling_args(args.temperature, args.top_k, args.max_new_tokens or 1, n)
    run.tokenizer.encode(args.prompt)  # an unknown character is refused before any output

    def write(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    for i in range(n):  # the same samples as generate(run, n=n, seed=seed): i seeded seed + i
        sys.stdout.write(args.prompt)
        generate(run, n=1, seed=args.seed + i, stream=write, **common)
        sys.stdout.write("\n" if i == n - 1 else "\n\n---\n\n")
    return 0


def cmd_eval(args) -> int:
    import math

    import torch

    from dlf.engine.evaluate import file_nats, split_nats
    from dlf.engine.rundata import prepare_data
    from dlf.engine.saved import load_run

    run = load_run(args.run, device=args.device)
    what = {"split": args.split}
    if args.data:
        nats, targets = file_nats(run.model, run.tokenizer, run.config.data, args.data,
                                     run.device, run.config.train.dtype)
        what = {"data": args.data, "tokens": targets}
    elif not run.config.data.dataset:
        raise DlfError(f"{args.run} has no data set of its own (it was imported): "
                       "evaluate it on a file with --data FILE")
    else:
        data = prepare_data(run.config, tokenizer=run.tokenizer)
        ds = getattr(data, args.split)
        if ds is None:
            raise DlfError(f"{run.config.data.dataset} is text data with no test split "
                           "(90/10 train/val); use --split val")
        chars = torch.tensor(run.tokenizer.token_chars())  # (V,) characters of each token id
        nats = split_nats(run.model, ds, run.config.train, run.device, token_chars=chars)
    bits = nats.per_char / math.log(2)
    perplexity = math.exp(nats.per_token)
    if args.json:
        print(json.dumps({**what, "loss": nats.per_token, "nats_per_char": nats.per_char,
                          "bits_per_char": bits, "perplexity": perplexity}))
    else:
        where = (f"{args.data} ({what['tokens']:,} tokens)" if args.data else args.split)
        print(f"{where} loss: {nats.per_token:.4f} nats/token (perplexity {perplexity:.2f}), "
              f"{nats.per_char:.4f} nats/char ({bits:.4f} bits/char)")
    return 0


def cmd_gradcheck(args) -> int:
    from dlf.manual.mlp import (
        GRADCHECK_LIMIT,
        ManualMLPConfig,
        format_gradcheck_table,
        gradcheck,
    )

    rows = gradcheck(batch_size=args.batch_size, seed=args.seed,
                     config=ManualMLPConfig(bessel=not args.torch_batchnorm))
    worst = max(r["max_abs_diff"] for r in rows)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(format_gradcheck_table(rows))
        print(f"\n{len(rows)} gradients, largest difference {worst:.2e} "
              f"({'ok' if worst < GRADCHECK_LIMIT else 'FAILED'}: limit {GRADCHECK_LIMIT:g}, "
              "float64)")
    return 0 if worst < GRADCHECK_LIMIT else 1


def cmd_bench(args) -> int:
    import torch

    from dlf import bench
    from dlf.engine.distributed import World

    if args.threads < 0:
        raise DlfError("--threads must be >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.bench_command == "train" and args.nproc != 1:
        r = bench.bench_train_scaling(args.nproc, args.argv)
        if args.json:
            print(json.dumps(r))
            return 0
        rows = [("1 process", r["one"]), ("1 process", r["one_share"]),
                (f"{r['nproc']} processes", r["many"])]
        for label, x in rows:
            if x is not None:
                print(f"{label:<12} {x['tokens_per_second']:>10,.0f} tokens/s  ({x['threads']} "
                      f"threads each, {x['device']}, {x['dtype']}, MFU {x['mfu']:.1%})")
        print(f"speedup over 1 process: {r['speedup']:.2f}x; scaling efficiency "
              f"{r['efficiency']:.0%} (N-process tokens/s / (N x one process's with "
              f"{'one GPU' if r['one_share'] is None else 'C/N threads'}))")
        return 0
    if args.bench_command == "train":
        overrides = [*args.set, *(["train.probe=false"] if args.no_probe else [])]
        r = bench.bench_train(args.preset, dtype=args.dtype, steps=args.steps,
                              batch_size=args.batch_size, device=args.device,
                              overrides=overrides)
        if World.from_env().rank != 0:  # a torchrun job reports once
            return 0
        if args.json:
            print(json.dumps(r))
        else:
            print(f"{r['preset']} ({r['num_parameters']:,} parameters), batch {r['batch_size']} "
                  f"x block {r['block_size']}, {r['dtype']} on {r['device']} "
                  f"({r['threads']} threads, {r['cpu']})")
            print(f"  attention {r['attention']}, micro-batch {r['micro_batch']} "
                  "(train.micro_batch / model.attention; \"auto\" resolved for this machine)")
            print(f"  {r['seconds_per_step'] * 1e3:.1f} ms/step, "
                  f"{r['tokens_per_second']:,.0f} tokens/s")
            print(f"  {r['gflops']:.1f} GFLOP/s achieved, matmul peak {r['peak_gflops']:.1f} "
                  f"GFLOP/s -> MFU {r['mfu']:.1%}")
        return 0
    r = bench.bench_sample(args.preset, new_tokens=args.new_tokens, dtype=args.dtype,
                           device=args.device)
    if args.json:
        print(json.dumps(r))
    else:
        print(f"{r['preset']}: {r['new_tokens']} new tokens, block {r['block_size']}, "
              f"{r['dtype']}, {r['threads']} threads")
        print(f"  KV cache:    {r['cached_tokens_per_second']:,.1f} tokens/s")
        print(f"  no cache:    {r['uncached_tokens_per_second']:,.1f} tokens/s")
        print(f"  speedup:     {r['speedup']:.1f}x (identical tokens: {r['identical_tokens']})")
    return 0


def cmd_diagnose(args) -> int:
    from dlf.diagnostics import diagnose_run

    for path in diagnose_run(args.run, steps=args.steps, device=args.device):
        print(path)
    return 0


def cmd_attention(args) -> int:
    from dlf.diagnostics import attention_figure

    print(attention_figure(args.run, args.prompt, layer=args.layer, out=args.out,
                           device=args.device))
    return 0


def cmd_experiment(args) -> int:
    from pathlib import Path

    from dlf.experiments import run_experiment

    out = Path(args.out or Path("runs") / "experiments" / args.name)
    result = run_experiment(args.name, out, data=args.data, quick=args.quick, steps=args.steps,
                            progress=not args.quiet and sys.stderr.isatty(), force=args.force)
    print((out / "results.md").read_text(encoding="utf-8"))
    files = [f for f in result["files"] if not f.endswith("/")]
    print(f"written: {out}/" + ", ".join(files))
    return 0


def cmd_report(args) -> int:
    from dlf.report import generate_report

    path = generate_report(args.out, quick=args.quick, names=args.names, text=args.text,
                           progress=False if args.quiet else None)
    print(path)
    return 0


def cmd_tokenizer(args) -> int:
    from dlf.data import bpe, load_corpus

    if args.tokenizer_command == "train":
        text, _ = load_corpus(args.file, format="text")
        tok = bpe.train(text, args.vocab_size, args.pattern, args.special)
        tok.save(args.out)
        short = (f" (the text has no more pairs to merge: vocabulary {tok.vocab_size:,}, "
                 f"not {args.vocab_size:,})" if tok.vocab_size < args.vocab_size else "")
        print(f"{len(tok.merges):,} merges learned from {len(text):,} characters, vocabulary "
              f"{tok.vocab_size:,}{short}; written to {args.out}")
        return 0
    if args.tokenizer_command == "import":
        from dlf.data import bpe_files

        specials = None if args.special is None else dict(map(_special_id, args.special))
        bpe_files.check_output(args.out, args.force)
        tok, what = bpe_files.import_tokenizer(
            tiktoken=args.tiktoken, gpt2=args.gpt2, hf_json=args.hf_json,
            pattern=args.pattern, special_tokens=specials)
        tok.save(args.out)
        print(f"{what}; written to {args.out}")
        return 0
    tok = bpe.BPETokenizer.load(args.tokenizer)
    if args.tokenizer_command == "encode":
        print(" ".join(map(str, tok.encode(args.text, allowed_special="all"
                                            if args.allow_special else ()))))
    elif args.tokenizer_command == "decode":
        print(tok.decode(bpe.parse_ids(" ".join(args.ids))))
    else:
        text, _ = load_corpus(args.file, format="text")
        r = bpe.stats(tok, text, shown=args.merges)
        print(f"{args.tokenizer}: {tok!r}")
        print(f"{args.file}: {r['characters']:,} characters, {r['bytes']:,} bytes -> "
              f"{r['tokens']:,} tokens: {r['characters_per_token']:.3f} characters per token "
              f"({r['bytes_per_token']:.3f} bytes)")
        for title, merges in (("first merges", r["first_merges"]),
                              ("last merges", r["last_merges"])):
            if merges:
                print(f"{title}:\n" + "\n".join(f"  {m}" for m in merges))
    return 0


def _special_id(arg: str) -> tuple[str, int]:
    """``--special NAME=ID`` as ``(NAME, ID)``."""
    name, _, i = arg.rpartition("=")
    if not name or not i.isdigit():
        raise DlfError(f"--special expects NAME=ID (such as <|endoftext|>=100257), got {arg!r}")
    return name, int(i)


def cmd_import(args) -> int:
    from dlf.hub import describe, import_gpt2

    print(describe(import_gpt2(args.dir, args.out, force=args.force)))
    return 0


def cmd_export(args) -> int:
    from dlf.hub import describe, export_gpt2

    print(describe(export_gpt2(args.run, args.dir, force=args.force)))
    return 0


COMMANDS = {"presets": cmd_presets, "train": cmd_train, "sample": cmd_sample, "eval": cmd_eval,
            "gradcheck": cmd_gradcheck, "bench": cmd_bench, "diagnose": cmd_diagnose,
            "attention": cmd_attention, "experiment": cmd_experiment, "report": cmd_report,
            "tokenizer": cmd_tokenizer, "import": cmd_import, "export": cmd_export}


def main(argv=None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv  # `--nproc` relaunches the same command line
    if args.command is None:
        parser.print_help()
        return 0
    handler = COMMANDS[args.command]
    try:
        return handler(args)
    except DlfError as e:
        import os

        rank = os.environ.get("RANK", "0") if os.environ.get("WORLD_SIZE", "1") != "1" else "0"
        where = f" (rank {rank})" if rank != "0" else ""
        print(f"dlf: error{where}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dlf: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `dlf sample ... | head`: stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
