"""benchmarks/sampling_ceiling.py: the analysis runs and reports every figure it names."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "sampling_ceiling.py"


@pytest.mark.slow
def test_quick_run_reports_consistent_figures():
    spec = importlib.util.spec_from_file_location("sampling_ceiling", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    r = mod.run(C=32, n_layer=1, n_head=2, block=16, reps=2)
    # 1 layer of 32 wide: (3 + 1 + 4 + 4) * 32 * 32 fp32 weights
    assert r["weights_mb"] == pytest.approx(12 * 32 * 32 * 4 / 1e6)
    for k in ("sum_gb_s", "eager_mv_gb_s", "compiled_mul_sum_gb_s",
              "compiled_decode_tokens_per_s", "mul_sum_compile_s", "decode_compile_s"):
        assert r[k] > 0, k
    ceiling = r["compiled_mul_sum_gb_s"] * 1e9 / (r["weights_mb"] * 1e6)
    assert r["ceiling_tokens_per_s_at_compiled_mul_sum"] == pytest.approx(ceiling)
