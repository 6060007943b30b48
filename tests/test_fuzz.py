"""``jaxcnn.fuzz``: the crash-isolating runner, the comparison, the documented differences,
every failure the fuzzer ever found (now passing), the files older releases wrote, the lowering
forms at the edges of their shapes, group_norm's edges and refusals, and a bounded random sample
of every op and path (the CI sample: its seed rotates with the commit, so each commit fuzzes
new configurations). The newer families on fixed cases: tests/test_fuzz_families.py.
"""
from __future__ import annotations

import collections
import importlib.util
import json
import math
import os
import pathlib
import subprocess

import jax
import numpy as np
import pytest

from fuzz_helpers import assert_named_cases, named, run_batch
from helpers import full_tier
from jaxcnn.fuzz import checks, command, configs, runner, torch_side
from jaxcnn.fuzz.configs import FuzzCase

HERE = pathlib.Path(__file__).parent
REGRESSIONS = HERE / "fuzz_regressions.json"
PASSING = ("ok", "refused", "documented", "skipped")   # skipped: a path this jax cannot run
CHECKED_SHARD_MAP = hasattr(jax, "shard_map")   # check_vma: JAX 0.6 on
HAS_TORCH = importlib.util.find_spec("torch") is not None


# ----------------------------------------------------------------------------- the runner


MISBEHAVE = f"{HERE / 'fuzz_targets.py'}:misbehave"   # abort, raise, hang or answer


@pytest.mark.slow   # four worker processes, each paying JAX's import
def test_runner_isolates_aborts_and_goes_on():
    plan = ["answer", "abort", "answer", "raise", "abort", "answer"]
    results = runner.run(MISBEHAVE, [dict(do=d, value=i) for i, d in enumerate(plan)],
                         processes=2, chunk=3)
    assert [r["config"]["value"] for r in results] == list(range(len(plan)))
    assert [r["status"] for r in results] == ["ok", "crash", "ok", "error", "crash", "ok"]
    assert [r["twice"] for r in results if r["status"] == "ok"] == [0, 4, 10]
    assert "exit status -6" in results[1]["detail"]
    assert "ValueError: w: planted" in results[3]["detail"]


@pytest.mark.slow
def test_runner_records_a_hang_as_a_crash():
    results = runner.run_chunk(MISBEHAVE, [dict(do="answer", value=1),
                                                         dict(do="hang", value=2)], timeout=15)
    assert [r["status"] for r in results] == ["ok", "crash"]
    assert "timeout" in results[1]["detail"]


# ----------------------------------------------------------------------------- the comparison


def test_relative_error_scales_by_the_reference_and_matches_infinities():
    b = np.array([1.0, -4.0, np.inf])
    assert checks.relative_error(b + np.array([0.0, 1e-3, 0.0]), b) == pytest.approx(2.5e-4)
    assert checks.relative_error(np.array([1.0, -4.0, 0.0]), b) == np.inf
    assert checks.relative_error(b, b[:2]) == np.inf          # shapes differ
    assert checks.relative_error(np.zeros((0, 3)), np.zeros((0, 3))) == 0.0


def test_a_refusal_must_name_its_argument():
    assert checks._named("padding: expected one of ...")
    assert not checks._named("Cannot lower jaxpr with verifier errors")
    assert not checks._named("operands could not be broadcast together")


def test_expected_pads_by_hand():
    # SAME, L = 7, stride 2, kernel 3, dilation 2 (extent 5): ceil(7/2) = 4 outputs need
    # 3·2 + 5 − 7 = 4 padding, split 2 / 2. Even extent 4 on L = 6, stride 1: 3 → 1 / 2.
    assert torch_side.expected_pads("same", [7], [3], [2], [2]) == [(2, 2)]
    assert torch_side.expected_pads("SAME", [6], [4], [1], [1]) == [(1, 2)]
    assert torch_side.expected_pads("CAUSAL", [5, 5], [3, 2], [1, 1], [2, 1]) == [(4, 0), (1, 0)]
    assert torch_side.expected_pads([[1, 2], 3], [5, 5], [3, 3], [1, 1], [1, 1]) == [(1, 2), (3, 3)]


def test_draws_are_reproducible_and_cover_every_op():
    first, again = configs.draw_many(64, seed=5), configs.draw_many(64, seed=5)
    assert first == again != configs.draw_many(64, seed=6)
    assert all(isinstance(c, configs.FuzzCase) for c in first)
    assert {c.op for c in first} == set(configs.OPS)
    rounds = collections.Counter(c.op for c in configs.draw_many(3 * len(configs.rotation()), seed=5))
    assert rounds["conv_float32"] == 21 and rounds["conv"] == 3, rounds
    assert {c.impl for c in first if c.impl is not None} == {"lax", "manual"}


def test_ops_added_later_keep_the_older_draws():
    """``sharded_float32`` and ``pool_float32`` draw from streams of their own at the end of each
    round: the other ops draw what the list without them draws, in order, and a shorter run is
    a prefix of a longer one."""
    later = set(configs.OWN_STREAM)
    older = tuple(op for op in configs.OPS if op not in later)
    drawn = configs.draw_many(3 * len(configs.rotation()), seed=9)
    kept = [c.replace(index=None) for c in drawn if c.op not in later]
    assert kept == [c.replace(index=None) for c in configs.draw_many(len(kept), seed=9, ops=older)]
    assert configs.draw_many(40, seed=9) == drawn[:40]
    pools = configs.draw_many(200, seed=9, ops=("pool_float32",))
    assert {c.inner for c in pools} == {"max_pool", "avg_pool"} and {c.n for c in pools} == {1, 2, 3}
    native_like = [c for c in pools if c.channels_last and c.channels >= 8 and c.batch > 0]
    assert 0.6 * len(pools) < len(native_like) < 0.95 * len(pools)
    assert any(c.ties for c in pools) and any(not c.channels_last for c in pools)


def test_group_norm_draws_keep_three_elements_a_group_and_reach_both_refusals():
    """Legal draws hold ≥ 3 elements a group (with fewer, dx cancels past the tolerance:
    configs.draw_group_norm), over 0–3 spatial axes and both layouts; some draw a
    non-divisor, some an empty axis."""
    drawn = configs.draw_many(300, seed=5, ops=("group_norm",))
    legal = [c for c in drawn if c.channels % c.groups == 0 and 0 not in c.sizes]
    assert all(c.channels // c.groups * math.prod(c.sizes) >= 3 for c in legal)
    assert {c.n for c in legal} == {0, 1, 2, 3}
    assert {c.channels_last for c in legal} == {c.affine for c in legal} == {False, True}
    assert any(c.channels % c.groups for c in drawn)
    assert any(0 in c.sizes for c in drawn)
    assert len(legal) > 0.8 * len(drawn)


@pytest.mark.parametrize("name,config,fixed", [
    ("max_pool padding up to half the dilated window",
     dict(op="max_pool", n=1, sizes=[9], window=[2], stride=None, padding=[2], dilation=[3], ceil_mode=False),
     dict(padding=[1])),
    ("max_pool window entirely in the padding",
     dict(op="max_pool", n=2, sizes=[2, 3], window=[2, 2], stride=[1, 1], padding=[1, 1],
          dilation=[3, 3], ceil_mode=False),
     dict(sizes=[4, 4])),
    ("avg_pool3d input smaller than the window",
     dict(op="avg_pool", n=3, sizes=[2, 2, 5], window=[2, 3, 4], stride=[1, 1, 1], padding=[1, 1, 1],
          dilation=[1, 1, 1], ceil_mode=True),
     dict(sizes=[2, 3, 5])),
    ("conv_transpose output size 0",
     dict(op="conv_transpose", n=1, batch=1, sizes=[1], kernel=[2], stride=[2], dilation=[1],
          padding="FULL"),
     dict(padding=0)),
    ("conv_transpose output_padding unchecked on an empty batch",
     dict(op="conv_transpose", n=1, batch=0, sizes=[3], kernel=[2], stride=[1], dilation=[3],
          padding=0, output_padding=[3]),
     dict(batch=1)),
    ("group_norm empty spatial axis", dict(op="group_norm", n=2, batch=2, sizes=[3, 0]),
     dict(sizes=[3, 1])),
])
def test_documented_differences_pick_their_configurations(name, config, fixed):
    """Each difference picks its example, and one change (to a configuration both libraries
    treat alike) un-picks it."""
    assert torch_side.differences(FuzzCase.from_dict(config)) == [name]
    assert name not in torch_side.differences(FuzzCase.from_dict({**config, **fixed}))


# ----------------------------------------------------------------------------- regressions


def _regressions() -> list[dict]:
    return json.loads(REGRESSIONS.read_text())


def test_every_failure_ever_found_now_passes(batch):
    pytest.importorskip("torch")
    cases = _regressions()
    results = batch["regressions"]
    assert len(results) == len(cases)
    for case, result in zip(cases, results):
        assert result["status"] in PASSING, (case["found"], result)
        assert result["status"] == case["now"], (case["found"], result["status"], result.get("detail"))


OLD_RESULTS = HERE / "fuzz_old_results.jsonl"   # results.jsonl as the fuzzer wrote it before FuzzCase


def test_files_the_fuzzer_wrote_load_as_cases_and_round_trip():
    """results.jsonl (a result a line), failures.json (a list of results) and the regressions
    file, each as an older release wrote it: every configuration loads as a ``FuzzCase`` whose
    JSON form is the file's, key for key; a bare list of configurations loads too."""
    for text in (OLD_RESULTS.read_text(), REGRESSIONS.read_text(),
                 json.dumps([json.loads(line) for line in OLD_RESULTS.read_text().splitlines()])):
        entries = json.loads(text) if text.startswith("[") else [json.loads(l) for l in text.splitlines()]
        written = [e["config"] for e in entries]
        loaded = configs.load(text)
        assert [c.to_dict() for c in loaded] == written
        assert [list(c.to_dict()) for c in loaded] == [list(w) for w in written]
        assert configs.load(json.dumps(written)) == loaded
    assert {c.op for c in configs.load(OLD_RESULTS.read_text())} == {
        "conv", "max_pool", "conv_float32", "lax.conv_general_dilated", "sharded_input"}


def test_replay_runs_a_files_configurations(monkeypatch, tmp_path):
    """``jaxcnn fuzz --replay FILE`` sends the file's configurations, as written, to the workers."""
    seen = {}
    monkeypatch.setattr(runner, "run", lambda target, drawn, **options: seen.update(drawn=drawn) or [
        {"config": c, "status": "ok", "errors": {}, "worst": 0.0} for c in drawn])
    assert command.main(["--replay", str(OLD_RESULTS), "--out", str(tmp_path)]) == 0
    assert seen["drawn"] == [json.loads(line)["config"] for line in OLD_RESULTS.read_text().splitlines()]
    assert f"--replay {OLD_RESULTS}`: 5 configurations" in (tmp_path / "summary.md").read_text()


# ----------------------------------------------------------------------------- forms at the edges

def _edge(op: str, n: int, **changes) -> dict:
    base = dict(op=op, n=n, impl="lax", channels_last=False, batch=2, groups=1, channels=3,
                out_channels=2, kernel=[3] * n, stride=[1] * n, dilation=[1] * n, padding=0,
                sizes=[3] * n, bias=False, padding_mode="zeros", seed=7, second_order=False)
    if op == "conv_transpose":
        base["output_padding"] = [0] * n
    return {**base, **changes}


EDGES = {
    f"{what} {n}d {layout}": _edge(op, n, channels_last=layout == "channels_last", **changes)
    for n in (1, 2, 3) for layout in ("channels_first", "channels_last")
    for what, op, changes in [
        ("kernel as large as the input", "conv", {}),
        ("kernel as large as the padded input", "conv", dict(sizes=[1] * n, padding=1)),
        ("stride beyond the kernel", "conv", dict(kernel=[2] * n, stride=[5] * n, sizes=[7] * n)),
        ("output of size 1, dilated", "conv", dict(kernel=[2] * n, dilation=[3] * n, sizes=[4] * n)),
        ("depthwise, smallest input", "conv", dict(channels=4, out_channels=8, groups=4, sizes=[3] * n)),
        ("few channels (im2col), strided", "conv", dict(channels=2, stride=[2] * n, sizes=[5] * n, padding=1)),
        ("many samples, one output", "conv", dict(batch=5, sizes=[3] * n)),
        ("empty batch", "conv", dict(batch=0, sizes=[4] * n)),
        ("transpose of size-1 input, stride beyond kernel", "conv_transpose",
         dict(sizes=[1] * n, kernel=[2] * n, stride=[4] * n, output_padding=[3] * n)),
        ("transpose cropped to size 1", "conv_transpose",
         dict(sizes=[2] * n, kernel=[2] * n, stride=[2] * n, padding=[[1, 2]] * n)),
    ]
}


@pytest.mark.slow
def test_lowering_forms_at_the_edges_of_their_shapes():
    """Every form that applies (and the one choose picks, both impls) against the one-lax-call
    piece, plus PyTorch and the reference, at shapes random search rarely draws."""
    pytest.importorskip("torch")
    results = runner.run(command.TARGET, [{**c, "name": k} for k, c in EDGES.items()],
                         processes=2, chunk=len(EDGES) // 2 + 1)
    for result in results:
        name = result["config"]["name"]
        assert result["status"] == "ok", (name, result)
        forms = [k for k in result["errors"] if k.startswith("form:")]
        if result["config"]["batch"]:
            assert len(forms) >= 8, (name, forms)   # every piece, its forms and the chosen ones
        assert "torch:y" in result["errors"], name


# ----------------------------------------------------------------------------- group_norm

def _group_norm(**changes) -> dict:
    base = dict(op="group_norm", n=2, channels_last=False, batch=2, channels=6, groups=3,
                sizes=[3, 2], eps=1e-5, affine=True, seed=7, second_order=False)
    return {**base, **changes}


GROUP_NORM = {   # name: (configuration, status, what the result must hold)
    "no spatial axis, channels last, order 2": (
        _group_norm(n=0, sizes=[], channels=9, channels_last=True, second_order=True), "ok",
        ["torch:d2", "torch:d5", "reference:d5"]),
    "no scale or bias, 3d, instance norm": (
        _group_norm(n=3, sizes=[2, 1, 3], groups=6, affine=False, eps=0.1), "ok",
        ["torch:d0", "reference:d0"]),
    "groups not a divisor": (_group_norm(groups=4), "refused", ["groups:"]),
    "empty spatial axis": (_group_norm(sizes=[3, 0], channels_last=True), "documented",
                           ["x:", "group_norm empty spatial axis"]),
}


def test_group_norm_against_torch_and_reference_and_its_refusals(batch):
    """Values and gradients (every argument, order 2) against PyTorch and the reference;
    a non-divisor refused by all, jaxcnn naming ``groups``; an empty axis refused by jaxcnn
    alone, naming ``x``, as documented."""
    pytest.importorskip("torch")
    assert_named_cases(GROUP_NORM, batch["group_norm"])


EMPTY_GROUP_NORM = [_group_norm(batch=0, channels_last=layout) for layout in (False, True)]


def test_group_norm_on_an_empty_batch(batch):
    """N = 0 in both layouts: an empty result and empty gradients on every side (found by
    wiring group_norm into the fuzzer: channels first, jaxcnn and the reference reshaped the
    empty array with -1 and raised ZeroDivisionError; PyTorch returns an empty array)."""
    pytest.importorskip("torch")
    results = batch["empty_group_norm"]
    assert [r["status"] for r in results] == ["ok", "ok"], results


# ----------------------------------------------------------------------------- the CI sample

def _rotating_seed() -> int:
    """The commit's hash as the seed (each commit fuzzes new configurations), overridable by
    ``JAXCNN_FUZZ_SEED``; 0 outside a git checkout."""
    if "JAXCNN_FUZZ_SEED" in os.environ:
        return int(os.environ["JAXCNN_FUZZ_SEED"])
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True,
                              text=True, check=True).stdout.strip()
        return int(head[:8], 16)
    except (OSError, subprocess.CalledProcessError, ValueError):
        return 0


# The full tier (CI) fuzzes 10 rounds of every op and path (~1 min on 2 cores), the default tier 1
# (each op drawn once; the fixed cases of tests/test_fuzz_families.py meet every family there);
# JAXCNN_FUZZ_N sets the count.
FULL_SAMPLE = 10 * len(configs.rotation())
CI_SAMPLE = int(os.environ.get("JAXCNN_FUZZ_N", str(FULL_SAMPLE if full_tier() else len(configs.rotation()))))


def test_random_sample_of_every_op(batch):
    """No draw fails, most are compared; in the full tier every op and the newer families' paths
    too: float32 through the native kernels (where they exist) and XLA, batch-sharded under jit
    through the kernels per shard, the sharded runs under jit and inside a checked shard_map
    (the default tier's one round draws some too rarely to require each: the fixed cases of
    tests/test_fuzz_families.py meet every family)."""
    pytest.importorskip("torch")
    from jaxcnn._compat import custom_partitioning
    from jaxcnn._conv import native
    wanted = ({"xla", "jit (auto)", "pool_float32 xla"}
              | ({"native", "pool_float32 native"} if native.available() else set())
              | ({"shard_map (auto) check_vma"} if CHECKED_SHARD_MAP else set())
              | ({"jit (auto) native"} if native.available() and custom_partitioning() else set()))
    seed = _rotating_seed()
    results = batch["sample"]
    assert [r["config"]["index"] for r in results] == list(range(CI_SAMPLE))
    table = _assert_no_failures(results, seed)
    ok = sum(r["status"] == "ok" for r in results)
    assert ok >= CI_SAMPLE // 2, table          # most draws are legal and really compared
    if not full_tier():
        return
    ops = {r["config"]["op"] for r in results if r["status"] == "ok"}
    paths = _compared_paths(results)
    if ops != set(configs.OPS) or not wanted <= paths:
        # A commit's draws may compare no configuration of some op or path (both of one op's
        # draws refused, say): the covering seed's sample, which compares each, fills the gap.
        results = command.fuzz(FULL_SAMPLE, COVERING_SEED)
        table = _assert_no_failures(results, COVERING_SEED)
        ops |= {r["config"]["op"] for r in results if r["status"] == "ok"}
        paths |= _compared_paths(results)
    assert ops == set(configs.OPS), table
    assert wanted <= paths, (sorted(paths), table)


def _compared_paths(results: list[dict]) -> set[str]:
    """The paths compared (``ok``), and float32 pooling's apart (``pool_float32 native``):
    conv_float32 alone meets ``native`` and ``xla``, the pooling kernels are their own."""
    ok = [r for r in results if r["status"] == "ok" and "path" in r]
    return ({r["path"] for r in ok}
            | {f"pool_float32 {r['path']}" for r in ok if r["config"]["op"] == "pool_float32"})


COVERING_SEED = 0   # its 10-round sample compares every op on every path (checked by the test above)


def _assert_no_failures(results: list[dict], seed: int) -> str:
    """No draw failed (each passed, was refused as documented or skipped); the summary table."""
    failures = [r for r in results if r["status"] not in PASSING]
    table = command.markdown(command.summarize(results))
    assert not failures, (f"seed {seed}: {len(failures)} failures; reproduce with "
                          f"`python -m jaxcnn fuzz --n {len(results)} --seed {seed}`\n{table}\n"
                          + "\n".join(json.dumps(f, default=str)[:1500] for f in failures[:5]))
    return table


def test_fuzz_command_runs_its_draws_through_the_target(monkeypatch):
    """``jaxcnn fuzz``'s run (the sample above is the same draws, run in the batch below)."""
    seen = {}
    monkeypatch.setattr(runner, "run", lambda target, drawn, **options: seen.update(
        target=target, drawn=drawn, **options) or ["result"])
    assert command.fuzz(7, 3, processes=3) == ["result"]
    assert seen["target"] == command.TARGET
    assert seen["drawn"] == [c.to_dict() for c in configs.draw_many(7, 3)]
    assert seen["processes"] == 3


# ----------------------------------------------------------------------------- one batch

def _batch_groups() -> dict[str, list[dict]]:
    """Every configuration the tests above run through ``command.TARGET``, by test (the ones
    that compare with PyTorch only where it is installed)."""
    if not HAS_TORCH:
        return {}
    return dict(regressions=[case["config"] for case in _regressions()],
                group_norm=named(GROUP_NORM), empty_group_norm=EMPTY_GROUP_NORM,
                sample=[c.to_dict() for c in configs.draw_many(CI_SAMPLE, _rotating_seed())])


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> dict[str, list[dict]]:
    """The results of ``_batch_groups``, by test (``fuzz_helpers.run_batch``)."""
    return run_batch(tmp_path_factory, "fuzz-batch", _batch_groups())
