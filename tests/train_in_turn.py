"""Several `dlf train` commands, one after another, in each process of one torchrun job.

`dlf train NAME.toml --nproc 2` has torchrun start 2 processes that each run
`dlf train NAME.toml`. This script, started by torchrun in the job's folder, runs
`dlf train NAME.toml --out NAME-2 --quiet` for every NAME given, in turn, in the same
processes (the process group is joined once): the tests pay the processes' start-up once
for several runs. Not a test module (pytest collects test_*.py only)."""

import sys

from dlf.cli import main

for name in sys.argv[1:]:
    code = main(["train", f"{name}.toml", "--out", f"{name}-2", "--quiet"])
    if code:
        sys.exit(code)
