"""Mutation testing of the core modules, each against its own tests (`make mutation`).

For every group below this script lays out a scratch project in build/mutation/GROUP/
(a copy of src/, tests/ and benchmarks/ plus a pyproject.toml whose [tool.mutmut] names
the group's modules and test files), runs `mutmut run` there and prints the score. mutmut
keeps its results in that folder, so a second run only tests mutants whose code changed.

    python tools/mutation.py              every group
    python tools/mutation.py optim nn     some groups
    python tools/mutation.py --list       the groups, their modules and tests
    python tools/mutation.py --retest data  only the mutants data's last run left undetected
    python tools/mutation.py --sample 300 engine   a random 300 of the group's mutants: an
                                          estimate of its score, with a 95% interval

Surviving mutants: `cd build/mutation/GROUP && mutmut results` lists them and
`mutmut show NAME` shows one. docs/testing.md records the scores and why each
surviving mutant is equivalent. Not part of `make test`: it takes hours on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ARCHITECTURE_BEHAVIOUR = [
    "test_manual_mlp_refuses_settings_it_would_ignore",
    "test_count_bigram_refuses_training_settings", "test_the_trainer_refuses_a_fitted_model",
    "test_autograd_regime_accepts_every_setting", "test_trainer_never_mutates_the_callers_config",
    "test_sample_arguments_out_of_range_are_one_line_errors",
    "test_max_new_tokens_is_honoured_not_replaced", "test_bench_rejects_a_zero_batch",
    "test_every_registered_model_declares_a_valid_regime", "test_declared_abilities_exist"]

# group: (modules to mutate, their tests). Smallest first: a partial run gives scores early.
GROUPS = {
    "optim": (["src/dlf/optim.py"], ["tests/test_optim.py"]),
    "sample": (["src/dlf/sample.py"],
               ["tests/test_sample.py", "tests/test_bpe_runs.py", "tests/test_sequences.py",
                "tests/test_transformer.py", "tests/test_api.py"]),
    # the training path: the plan, the loop and its parts (engine), and the files a run
    # writes and reads back (checkpoint); the same tests run both, but as two groups each
    # can be finished (or rerun) on its own
    "checkpoint": ([f"src/dlf/engine/{f}.py" for f in
                    ("checkpoint", "tensor_io", "metrics", "lossplot", "tensorboard", "rundir")],
                   ["tests/test_engine.py", "tests/test_reliability.py", "tests/test_faults.py",
                    "tests/test_session.py"]),
    "engine": ([f"src/dlf/engine/{f}.py" for f in
                ("session", "plan", "auto", "loop", "trainer", "steps", "batches", "clock",
                 "divergence", "results", "signals", "progress")],
               ["tests/test_engine.py", "tests/test_reliability.py", "tests/test_faults.py",
                "tests/test_session.py",
                "tests/test_bench.py", "tests/test_cli.py", "tests/test_bigram.py",
                # the behaviour tests of test_architecture; its others read the source,
                # which mutmut's copy holds with every mutant beside each function
                *(f"tests/test_architecture.py::{t}" for t in ARCHITECTURE_BEHAVIOUR)]),
    "nn": (["src/dlf/nn/*"], ["tests/test_nn.py"]),
    "manual": (["src/dlf/manual/*"], ["tests/test_manual.py"]),
    "data": (["src/dlf/data/*"], ["tests/test_data.py", "tests/test_bpe.py",
                                  "tests/test_bpe_runs.py"]),
    "micro": (["src/dlf/micro/*"], ["tests/test_micro.py"]),
}

PYPROJECT = """\
[tool.mutmut]
# mutmut's quiet mode swaps sys.stdout under the tests, and the tests that capture what the
# progress bar prints then fail the clean run; debug mode leaves output alone
debug = true
source_paths = ["src"]
only_mutate = {modules}
also_copy = ["benchmarks"]
pytest_add_cli_args_test_selection = {tests}
# subprocess tests would import the unmutated package; they run in `make test`. The table
# of bad inputs never ends under mutmut's runner (it passes in `make test`)
pytest_add_cli_args = ["-q", "-p", "no:cacheprovider", "-m", "not slow", "--deselect",
                       "tests/test_faults.py::test_bad_inputs_give_one_line_and_status_2"]
# torch is not fork-safe once its thread pools exist: fork workers from a clean server
process_isolation = "forkserver"

[tool.pytest.ini_options]
markers = ["slow: a subprocess or long test"]
"""


# `python -m mutmut` would import mutmut.__main__ twice; this is what the console script does
MUTMUT = [sys.executable, "-c", "import sys; from mutmut.__main__ import cli; sys.exit(cli())"]


def prepare(group: str) -> Path:
    modules, tests = GROUPS[group]
    work = ROOT / "build" / "mutation" / group
    work.mkdir(parents=True, exist_ok=True)
    for sub in ("src", "tests", "benchmarks"):  # some tests run a benchmark script
        # a fresh copy each run; mutmut compares files, so unchanged code keeps its results
        shutil.rmtree(work / sub, ignore_errors=True)
        shutil.copytree(ROOT / sub, work / sub,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (work / "pyproject.toml").write_text(PYPROJECT.format(modules=json.dumps(modules),
                                                          tests=json.dumps(tests)))
    refresh_mutants_copy(work, modules)
    return work


def refresh_mutants_copy(work: Path, modules: list[str]) -> None:
    """mutmut copies src/ into mutants/src/ once and then keeps any file already there, so a
    data file changed since (a preset, say) would stay stale and fail the tests: bring every
    file it does not mutate up to date. The mutated modules it regenerates itself."""
    mutated = {p.relative_to(work) for m in modules for p in work.glob(m) if p.suffix == ".py"}
    for f in (work / "src").rglob("*"):
        rel = f.relative_to(work)
        target = work / "mutants" / rel
        if (f.is_file() and rel not in mutated and target.is_file()
                and target.read_bytes() != f.read_bytes()):
            shutil.copy2(f, target)


# mutmut's exit codes of a mutant that no test detected: survived, no tests (33, or pytest's
# 5: nothing collected) and suspicious (35)
UNDETECTED = (0, 5, 33, 35)


def all_mutants(work: Path, modules: list[str]) -> list[str]:
    """Every mutant mutmut generated for the group's modules (from its .meta files)."""
    names = []
    for module in sorted(p for m in modules for p in work.glob(m) if p.suffix == ".py"):
        meta = work / "mutants" / (str(module.relative_to(work)) + ".meta")
        if meta.is_file():
            names += sorted(json.loads(meta.read_text())["exit_code_by_key"])
    return names


def sampled(work: Path, modules: list[str], n: int, seed: int, env: dict) -> list[str]:
    """`n` of the group's mutants drawn at random (seeded). mutmut generates the mutants and
    measures which tests cover which function before it filters by name: a filter that
    matches nothing does just that (and then stops with an assertion, which is expected)."""
    subprocess.run([*MUTMUT, "run", "--max-children", "1", "no-such-mutant"], cwd=work,
                   env=env, check=False, stdout=subprocess.DEVNULL)
    names = all_mutants(work, modules)
    if not names:
        raise SystemExit(f"mutmut generated no mutants in {work}")
    drawn = sorted(random.Random(seed).sample(names, min(n, len(names))))
    print(f"== {work.name}: {len(drawn)} of {len(names)} mutants drawn (seed {seed})", flush=True)
    return drawn


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion k / n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def undetected(work: Path, modules: list[str]) -> list[str]:
    """The mutants of the group's modules that the last run left undetected (mutmut's .meta
    files; a module that left the group keeps its old one, which is skipped)."""
    names = []
    for module in sorted(p for m in modules for p in work.glob(m) if p.suffix == ".py"):
        meta = work / "mutants" / (str(module.relative_to(work)) + ".meta")
        if not meta.is_file():
            continue
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        names += [name for name, code in codes.items() if code in UNDETECTED]
    return names


def score(work: Path) -> dict:
    subprocess.run([*MUTMUT, "export-cicd-stats"], cwd=work, check=True,
                   stdout=subprocess.DEVNULL)
    stats = json.loads((work / "mutants" / "mutmut-cicd-stats.json").read_text())
    return stats


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("groups", nargs="*", metavar="GROUP",
                    help=f"default: all ({', '.join(GROUPS)})")
    ap.add_argument("--list", action="store_true", help="print the groups and exit")
    ap.add_argument("--max-children", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--retest", action="store_true",
                    help="test only the mutants that the last run left undetected (survived, "
                         "not covered, suspicious), e.g. after adding tests: mutmut never "
                         "retests a result it has unless its function changed")
    ap.add_argument("--sample", type=int, metavar="N",
                    help="test a random N of each group's mutants (an estimate of the score, "
                         "printed with its 95%% interval)")
    ap.add_argument("--seed", type=int, default=0, help="the draw of --sample (default 0)")
    args = ap.parse_args(argv)
    if args.sample is not None and (args.sample < 1 or args.retest):
        ap.error("--sample needs N >= 1 and cannot be combined with --retest")
    unknown = [g for g in args.groups if g not in GROUPS]
    if unknown:
        ap.error(f"unknown group {unknown[0]!r}; groups: {', '.join(GROUPS)}")
    if args.list:
        for g, (modules, tests) in GROUPS.items():
            print(f"{g:10} {' '.join(modules)}  <-  {' '.join(tests)}")
        return 0
    env = dict(os.environ)
    # the tests must import the mutated copy, not a dlf that PYTHONPATH points at
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and not (Path(p) / "dlf").is_dir())
    env["MPLBACKEND"] = "Agg"
    failed = False
    for group in args.groups or list(GROUPS):
        work = prepare(group)
        names = undetected(work, GROUPS[group][0]) if args.retest else []
        if args.sample:
            names = sampled(work, GROUPS[group][0], args.sample, args.seed, env)
        if args.retest and not names:
            print(f"== {group}: no undetected mutants to retest", flush=True)
        print(f"== {group}: mutmut run in {work.relative_to(ROOT)}"
              + (f" ({len(names)} {'drawn' if args.sample else 'undetected'} mutants)"
                 if names else ""), flush=True)
        r = subprocess.run([*MUTMUT, "run", "--max-children", str(args.max_children), *names],
                           cwd=work, env=env, check=False)
        if r.returncode != 0:
            print(f"== {group}: mutmut exited {r.returncode}", flush=True)
            failed = True
            continue
        s = score(work)
        # a mutant that hangs (timeout) or crashes the interpreter (segfault) is detected
        killed = s["killed"] + s["timeout"] + s["segfault"]
        # a mutant that no selected test runs is a survivor too
        tested = killed + s["survived"] + s["suspicious"] + s["no_tests"]
        pct = 100 * killed / tested if tested else 0.0
        if args.sample:  # only the drawn mutants have verdicts
            lo, hi = wilson(killed, tested)
            print(f"== {group}: sample estimate {pct:.1f}% (95% interval {100 * lo:.1f}% "
                  f"to {100 * hi:.1f}%)", flush=True)
        print(f"== {group}: {killed}/{tested} killed ({pct:.1f}%); "
              f"survived {s['survived']}, suspicious {s['suspicious']}, "
              f"not covered by the tests {s['no_tests']}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
