"""Sampling does what the theory says: temperature scales the logits, top-k truncates them.

The reference is the closed form: a token is drawn with probability softmax(logits / T)
(restricted to the k largest logits with top-k). Empirical frequencies of N draws are
compared token by token with a 5-sigma binomial bound, sqrt(p (1 - p) / N) being the
standard deviation of a frequency; with V tokens a correct sampler fails by chance with
probability below V * 6e-7, and the seeds are fixed, so the test is deterministic."""

import itertools
import math

import pytest
import torch

from dlf.cli import main
from dlf.sample import check_sampling_args, next_token

N = 20_000  # draws per distribution: a 5-sigma band of at most 5 * 0.5 / sqrt(N) = 0.018
LOGITS = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -2.0, 0.25, 1.5])  # V = 8, all distinct
V = LOGITS.numel()


def draw(logits: torch.Tensor, temperature: float, top_k=None, seed=0) -> torch.Tensor:
    """N samples from one row of logits -> their empirical frequencies (V,)."""
    g = torch.Generator().manual_seed(seed)
    ids = next_token(logits.expand(N, -1), temperature, top_k, g)  # (N, 1)
    assert ids.shape == (N, 1) and ids.dtype == torch.long
    return torch.bincount(ids[:, 0], minlength=logits.numel()).double() / N


def assert_matches(freq: torch.Tensor, p: torch.Tensor) -> None:
    p = p.double()
    band = 5 * torch.sqrt(p * (1 - p) / N) + 1e-12  # zero-probability tokens: never drawn
    assert torch.all((freq - p).abs() <= band), (freq, p)


def entropy(p: torch.Tensor) -> float:
    p = p[p > 0]
    return float(-(p * p.log()).sum())


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_frequencies_follow_softmax_of_logits_over_temperature(temperature):
    assert_matches(draw(LOGITS, temperature), torch.softmax(LOGITS / temperature, -1))


def test_temperature_changes_the_distribution():
    # the bands are far narrower than the difference, so T must act (not just be accepted)
    sharp, plain = torch.softmax(LOGITS / 0.5, -1), torch.softmax(LOGITS, -1)
    assert (sharp - plain).abs().max() > 0.1
    assert not torch.all((draw(LOGITS, 0.5) - plain).abs() <= 5 * (0.25 / N) ** 0.5)


def test_temperature_zero_is_argmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 30, generator=g)
    for seed in range(3):
        ids = next_token(logits, 0.0, None, torch.Generator().manual_seed(seed))
        assert ids.shape == (500, 1)
        assert torch.equal(ids[:, 0], logits.argmax(-1))
    # top-k has nothing to add to greedy
    assert torch.equal(next_token(logits, 0.0, 3, g)[:, 0], logits.argmax(-1))


def test_entropy_rises_with_temperature_to_the_uniform_limit():
    """H(T) of softmax(z / T) increases with T from 0 (argmax) to ln V (uniform)."""
    temps = [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 1e4]
    H = [entropy(draw(LOGITS, t, seed=i)) for i, t in enumerate(temps)]
    assert H[0] == 0.0
    assert all(a < b for a, b in itertools.pairwise(H)), H
    # near-uniform: the plug-in entropy falls short of ln V by about chi2(V-1) / (2N),
    # mean (V-1) / (2N) < 2e-4; 0.01 is 50 of those; the T=1e4 distribution itself is
    # within max|z| / T = 2e-4 of uniform in log-probability
    assert abs(H[-1] - math.log(V)) < 0.01
    assert_matches(draw(LOGITS, 1e4, seed=9), torch.full((V,), 1 / V))


@pytest.mark.parametrize("k,temperature", [(1, 1.0), (3, 1.0), (3, 2.0), (5, 0.5)])
def test_top_k_samples_only_the_k_likeliest_in_their_proportions(k, temperature):
    freq = draw(LOGITS, temperature, top_k=k)
    top = torch.topk(LOGITS, k).indices
    outside = torch.ones(V, dtype=torch.bool)
    outside[top] = False
    assert freq[outside].sum() == 0  # never outside the k most likely
    p = torch.zeros(V)
    p[top] = torch.softmax(LOGITS[top] / temperature, -1)  # renormalised over the k
    assert_matches(freq, p)


def test_top_k_of_the_vocabulary_or_more_changes_nothing():
    a = next_token(LOGITS.expand(50, -1), 1.0, V, torch.Generator().manual_seed(4))
    b = next_token(LOGITS.expand(50, -1), 1.0, None, torch.Generator().manual_seed(4))
    c = next_token(LOGITS.expand(50, -1), 1.0, V + 7, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and torch.equal(a, c)


def test_top_k_per_row():
    # each row keeps its own k likeliest
    logits = torch.tensor([[5.0, 4.0, -9.0, -9.0], [-9.0, -9.0, 4.0, 5.0]]).repeat(500, 1)
    ids = next_token(logits, 1.0, 2, torch.Generator().manual_seed(0))[:, 0]
    assert set(ids[0::2].tolist()) <= {0, 1} and set(ids[1::2].tolist()) <= {2, 3}
    assert set(ids[0::2].tolist()) == {0, 1}  # both survive: the filter keeps k, not 1


def test_half_precision_logits_are_sampled_in_float():
    ids = next_token(LOGITS.to(torch.bfloat16).expand(10, -1), 0.0, None,
                     torch.Generator().manual_seed(0))
    assert ids.dtype == torch.long and torch.all(ids == 0)


@pytest.mark.parametrize("args", [(0.0, None, 1, 1), (2.5, 1, 1, 1), (1.0, None, 1, 5)])
def test_sampling_arguments_in_range_are_accepted(args):
    check_sampling_args(*args)  # the boundaries themselves are valid


# ----------------------------------------------------------------- the CLI passes them on


def sample(run, capsys, *args):  # run: conftest's bigram_run
    capsys.readouterr()
    assert main(["sample", str(run), "-n", "40", *args]) == 0
    return capsys.readouterr().out


def test_cli_temperature_zero_is_greedy(bigram_run, capsys):
    greedy = sample(bigram_run, capsys, "--temperature", "0", "--seed", "0")
    assert greedy == sample(bigram_run, capsys, "--temperature", "0", "--seed", "1")
    assert len(set(greedy.splitlines())) == 1  # argmax from one start: one name, 40 times
    # ... while temperature 1 varies with the seed
    assert sample(bigram_run, capsys, "--seed", "0") != sample(bigram_run, capsys, "--seed", "1")


def test_cli_top_k_one_is_deterministic(bigram_run, capsys):
    # one candidate per step: the seed cannot matter, even where the bigram counts tie
    one = sample(bigram_run, capsys, "--top-k", "1", "--seed", "5")
    assert one == sample(bigram_run, capsys, "--top-k", "1", "--seed", "6")
    assert len(set(one.splitlines())) == 1


def test_top_k_keeps_exactly_k_when_logits_tie():
    logits = torch.tensor([1.0, 3.0, 3.0, 3.0, 0.0]).expand(2000, -1)
    for k in (1, 2):
        ids = next_token(logits, 1.0, k, torch.Generator().manual_seed(0))[:, 0]
        assert set(ids.tolist()) <= {1, 2, 3} and len(set(ids.tolist())) == k


def test_cli_high_temperature_spreads_the_first_letter(bigram_run, capsys):
    """The first letters of names at T = 100 are near uniform over the vocabulary; at
    T = 0.3 they concentrate on the likeliest: the entropies differ by far more than
    sampling noise (40 draws)."""
    def first_letter_entropy(t):
        names = sample(bigram_run, capsys, "--temperature", str(t), "-n", "200").splitlines()
        counts = torch.tensor([sum(1 for n in names if n[:1] == c)
                               for c in sorted({n[:1] for n in names})], dtype=torch.double)
        return entropy(counts / counts.sum())
    assert first_letter_entropy(100) > first_letter_entropy(0.3) + 0.5


# ----------------------------------------------------------------- samples.txt


def test_write_samples_for_line_data(bigram_run, tmp_path):
    from dlf.engine.results import write_samples
    from dlf.engine.rundata import prepare_data
    from dlf.engine.saved import load_run
    from dlf.sample import sample

    run = load_run(bigram_run, device="cpu")
    data = prepare_data(run.config, tokenizer=run.tokenizer)
    t = run.config.train
    t.num_samples = 12
    result = write_samples(tmp_path / "s.txt", run.model, data, t)
    expected = sample(run.model, run.tokenizer, n=12, seed=t.seed)
    assert (tmp_path / "s.txt").read_text() == "\n".join(expected) + "\n"
    novel = sum(s not in set(data.train_items) for s in expected) / 12
    assert result == {"novel_fraction": novel}
    t.num_samples = 0
    assert write_samples(tmp_path / "s.txt", run.model, data, t) == {}
    assert (tmp_path / "s.txt").read_text() == ""


def test_write_samples_and_streaming_for_text_data(tmp_path, text_file, capsys):
    from dlf.engine.results import write_samples
    from dlf.engine.rundata import prepare_data
    from dlf.engine.saved import load_run
    from dlf.sample import sample

    out = tmp_path / "run"
    tiny = ["data.format=text", "model.block_size=8", "model.n_embd=8", "model.n_head=2",
            "model.n_layer=1", "train.max_steps=2", "train.eval_interval=2",
            "train.eval_iters=1", "train.batch_size=4", "train.sample_tokens=5",
            "train.threads=1", "train.warmup_steps=0", "train.dtype=fp32"]
    assert main(["train", "shakespeare-transformer-cpu-gpt2", "--data", str(text_file), "--out", str(out),
                 "--quiet", *[a for kv in tiny for a in ("--set", kv)]]) == 0
    capsys.readouterr()
    run = load_run(out, device="cpu")
    data = prepare_data(run.config, tokenizer=run.tokenizer)
    t = run.config.train
    t.sample_tokens = 40
    assert write_samples(tmp_path / "s.txt", run.model, data, t) == {}
    pieces = []
    (text,) = sample(run.model, run.tokenizer, seed=t.seed, max_new_tokens=40,
                     stream=pieces.append)
    assert (tmp_path / "s.txt").read_text() == text + "\n"
    assert len(pieces) == 40 and "".join(pieces) == text
    # the uncached loop streams the same characters
    uncached = []
    assert sample(run.model, run.tokenizer, seed=t.seed, max_new_tokens=40,
                  stream=uncached.append, use_cache=False) == [text]
    assert uncached == pieces
    # a prompt is kept in front, and the stream carries only what was generated
    pieces.clear()
    (with_prompt,) = sample(run.model, run.tokenizer, seed=1, prompt="to ", max_new_tokens=5,
                            stream=pieces.append)
    assert with_prompt == "to " + "".join(pieces) and len(pieces) == 5


@pytest.mark.parametrize("args,message", [
    ((1.0, None, 1, 0), "-n/--num must be >= 1, got 0"),
    ((-0.5, None, 1, 1), "--temperature must be >= 0, got -0.5"),
    ((float("nan"), None, 1, 1), "--temperature must be a finite number, got nan"),
    ((float("inf"), None, 1, 1), "--temperature must be a finite number, got inf"),
    ((1.0, 0, 1, 1), "--top-k must be >= 1, got 0"),
    ((1.0, None, 0, 1), "--max-new-tokens must be >= 1, got 0"),
])
def test_sampling_arguments_out_of_range_are_named(args, message):
    from dlf.errors import DlfError

    with pytest.raises(DlfError) as e:
        check_sampling_args(*args)
    assert str(e.value) == message


class Counting:
    """A hand-made model over V = 5 tokens whose next token is (last token + 1) mod 5, as
    logits (n, V), or (n, T, V) with every position's own prediction when `sequence`; it
    records the contexts it is given. No parameters, no buffers."""

    block_size, V = 3, 5

    def __init__(self, sequence=False):
        self.sequence, self.seen, self.training = sequence, [], True

    def eval(self):
        self.training = False

    def train(self, mode=True):
        self.training = mode

    def __call__(self, idx):
        self.seen.append(idx.tolist())
        nxt = torch.nn.functional.one_hot((idx + 1) % self.V, self.V).float()  # (n, T, V)
        return (nxt if self.sequence else nxt[:, -1, :]), None

    def parameters(self):
        return []

    def state_dict(self):
        return {}


def greedy(logits):
    return logits.argmax(dim=-1, keepdim=True)


@pytest.mark.parametrize("sequence", [False, True])
def test_window_decoding_reads_the_last_block_and_its_last_position(sequence):
    from dlf.sample import generate_ids

    model = Counting(sequence)
    out = generate_ids(model, torch.tensor([[0, 1, 2, 3], [4, 0, 1, 2]]), 4, greedy,
                       fixed_window=True)
    assert out == [[4, 0, 1, 2], [3, 4, 0, 1]]
    assert model.seen[0] == [[1, 2, 3], [0, 1, 2]]  # the last block_size tokens
    assert all(len(row) == 3 for ctx in model.seen for row in ctx)


def test_a_row_that_stops_ends_alone_and_the_others_go_on():
    """Row 0 picks the stop token (4) at its second step; row 1 at its fifth; each row's
    ids stop before its stop token, and no row loses or gains an id when another stops."""
    from dlf.sample import generate_ids

    streamed = []
    out = generate_ids(Counting(), torch.tensor([[2], [0]]), 8, greedy, fixed_window=True,
                       stop_token=4)
    assert out == [[3], [1, 2, 3]]
    one = generate_ids(Counting(), torch.tensor([[0]]), 8, greedy, fixed_window=True,
                       stop_token=4, stream=streamed.append)
    assert one == [[1, 2, 3]] and streamed == [1, 2, 3]


def test_the_device_of_a_model_is_its_tensors_or_the_cpu():
    from dlf.nn import Linear
    from dlf.sample import _device_of

    assert _device_of(Counting()) == torch.device("cpu")  # no tensors at all
    with torch.device("meta"):
        layer = Linear(2, 3)
    assert _device_of(layer) == torch.device("meta")

    class BuffersOnly(Counting):
        def state_dict(self):
            return {"counts": torch.zeros(2, device="meta")}

    assert _device_of(BuffersOnly()) == torch.device("meta")
