"""``jaxcnn.fuzz``: the crash-isolating runner, the comparison, the documented differences,
every failure the fuzzer ever found (now passing), the lowering forms at the edges of their
shapes, group_norm's edges and refusals, the newer families (float32 and the native kernels,
the jax.lax drop-ins, the sharded runs) on fixed cases, and a bounded random sample of every
op and path (the CI sample: its seed rotates with the commit, so each commit fuzzes new
configurations).
"""
from __future__ import annotations

import collections
import fcntl
import importlib.util
import json
import math
import os
import pathlib
import random
import subprocess

import jax
import numpy as np
import pytest

from helpers import full_tier
from jaxcnn.fuzz import (checks, command, configs, drop_in, float32, runner, sharded_float32, sharding,
                         torch_side, worker)
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
    _assert_named_cases(GROUP_NORM, batch["group_norm"])


def _named(cases: dict) -> list[dict]:
    """``cases``' configurations, each with its name."""
    return [{**c, "name": k} for k, (c, *_) in cases.items()]


def _assert_named_cases(cases: dict, results: list[dict]) -> None:
    """``cases``: name → (configuration, status, holds): the error keys an ``ok`` result must
    hold, or the start of the refusal and then the documented differences it names."""
    assert [r["config"]["name"] for r in results] == list(cases)
    for result in results:
        name = result["config"]["name"]
        _, status, holds = cases[name]
        assert result["status"] == status, (name, result)
        if status == "ok":
            assert all(key in result["errors"] for key in holds), (name, result["errors"])
        else:
            assert result["refusal"].startswith(holds[0]), (name, result["refusal"])
            assert result.get("differences", []) == holds[1:], (name, result)


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
# (each op drawn once; the fixed cases above meet every family there); JAXCNN_FUZZ_N sets the count.
FULL_SAMPLE = 10 * len(configs.rotation())
CI_SAMPLE = int(os.environ.get("JAXCNN_FUZZ_N", str(FULL_SAMPLE if full_tier() else len(configs.rotation()))))


def test_random_sample_of_every_op(batch):
    """No draw fails, most are compared; in the full tier every op and the newer families' paths
    too: float32 through the native kernels (where they exist) and XLA, batch-sharded under jit
    through the kernels per shard, the sharded runs under jit and inside a checked shard_map (the
    default tier's one round draws some too rarely to require each: its fixed cases above meet
    every family)."""
    pytest.importorskip("torch")
    from jaxcnn._compat import custom_partitioning
    from jaxcnn._conv import native
    wanted = ({"xla", "jit (auto)"} | ({"native"} if native.available() else set())
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
    paths = {r["path"] for r in results if r["status"] == "ok" and "path" in r}
    if ops != set(configs.OPS) or not wanted <= paths:
        # A commit's draws may compare no configuration of some op or path (both of one op's
        # draws refused, say): the covering seed's sample, which compares each, fills the gap.
        results = command.fuzz(FULL_SAMPLE, COVERING_SEED)
        table = _assert_no_failures(results, COVERING_SEED)
        ops |= {r["config"]["op"] for r in results if r["status"] == "ok"}
        paths |= {r["path"] for r in results if r["status"] == "ok" and "path" in r}
    assert ops == set(configs.OPS), table
    assert wanted <= paths, (sorted(paths), table)


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


# ----------------------------------------------------------------------------- the newer families

def test_float32_error_is_relative_to_the_magnitude_of_each_sum():
    """|a − b| / Σ|terms| element by element: a cancelling sum (b = 1e-3 of Σ|terms| = 10)
    keeps a float32-sized error small, a wrong term (0.5 off) is flagged, an element with
    nothing summed must be exactly zero."""
    b, magnitude = np.array([1e-3, 4.0, 0.0]), np.array([10.0, 4.0, 0.0])
    assert float32.magnitude_error(b + np.array([1e-6, 0.0, 0.0]), b, magnitude) == pytest.approx(1e-7)
    assert float32.magnitude_error(b + np.array([0.0, 0.5, 0.0]), b, magnitude) > float32.TOLERANCE
    assert float32.magnitude_error(b + np.array([0.0, 0.0, 1e-30]), b, magnitude) == np.inf
    assert float32.magnitude_error(np.array([np.nan, 4.0, 0.0]), b, magnitude) == np.inf


def _float32(**changes) -> dict:
    base = dict(op="conv_float32", n=2, impl="lax", channels_last=True, batch=2, groups=1,
                channels=16, out_channels=32, kernel=[3, 3], stride=[1, 1], dilation=[1, 1],
                padding="SAME", bias=True, padding_mode="zeros", sizes=[7, 6], seed=3,
                second_order=False)
    return {**base, **changes}


FLOAT32 = {"native": _float32(), "channels first": _float32(channels_last=False),
           "few channels": _float32(channels=3), "3d strided": _float32(
               n=3, kernel=[2, 3, 1], stride=[2, 1, 1], dilation=[1, 1, 2], sizes=[5, 4, 3],
               padding=[[1, 0], [1, 1], [0, 0]])}


def test_float32_conv_takes_the_native_kernels_where_they_apply_and_agrees_with_torch(batch):
    """The path is read from the lowered program: native where ``_conv.native`` applies (on a
    jax with ``jax.ffi`` and a compiler), XLA for channels first or few channels."""
    pytest.importorskip("torch")
    from jaxcnn._conv import native
    results = batch["float32"]
    assert [r["config"]["name"] for r in results] == list(FLOAT32)
    paths = {r["config"]["name"]: r["path"] for r in results}
    assert all(r["status"] == "ok" and set(r["errors"]) == {"torch:y", "torch:d0", "torch:d1", "torch:d2"}
               for r in results), results
    path = "native" if native.available() else "xla"
    assert paths == {"native": path, "channels first": "xla", "few channels": "xla", "3d strided": path}


def _drop_in(**changes) -> dict:
    base = dict(op="lax.conv_general_dilated", n=2, impl="lax", seed=5, second_order=True,
                batch=2, channels=4, out_channels=6, kernel=[2, 3], sizes=[5, 6],
                rhs_dilation=[1, 2], dimension_numbers=["NHWC", "HWIO", "NHWC"], precision="highest",
                dtype="float64", groups=2, batch_groups=1, window_strides=[2, 1],
                lhs_dilation=None, preferred_element_type=None, padding=[[1, -1], [0, 2]])
    return {**base, **changes}


DROP_IN = {   # name: (configuration, status, what the result must hold)
    "grouped, cropped, rhs-dilated, order 2": (_drop_in(), "ok", ["jax.lax:d3"]),
    "batch groups, lhs dilation, permuted layouts": (
        _drop_in(groups=1, batch_groups=2, lhs_dilation=[2, 1], dimension_numbers=["HCWN", "IHOW", "WNCH"],
                 second_order=False, impl="manual"), "ok", ["jax.lax:d1"]),
    "string padding with lhs dilation": (_drop_in(padding="SAME", lhs_dilation=[2, 2]), "refused", ["padding:"]),
    "both group counts": (_drop_in(batch_groups=2, out_channels=4), "refused", ["batch_group_count:"]),
    "conv_transpose, transposed kernel": (
        dict(_drop_in(op="lax.conv_transpose", groups=1, strides=[2, 3], transpose_kernel=True,
                      out_channels=3, padding="VALID", use_consistent_padding=False)), "ok", ["jax.lax:d1"]),
}


def test_drop_ins_against_jax_lax_and_their_refusals(batch):
    """Values, both VJPs and the second order against jax.lax's autodiff; what lax refuses,
    jaxcnn.lax refuses too, naming the argument."""
    _assert_named_cases(DROP_IN, batch["drop_in"])


@pytest.mark.x64   # checks.check compares in float64 (and turns x64 on itself, as a worker does)
def test_drop_in_conv_transpose_refuses_lower_case_padding_as_lax_does():
    """Found by the fuzzer: jaxcnn.lax.conv_transpose took padding='same' (lower case) with a
    stride, which jax.lax.conv_transpose refuses; at stride 1 both take it."""
    config = dict(_drop_in(op="lax.conv_transpose", groups=1, strides=[2, 1], transpose_kernel=False,
                           out_channels=3, padding="same", use_consistent_padding=False,
                           dimension_numbers=None, second_order=False))
    assert checks.check(config)["status"] == "refused"
    assert checks.check({**config, "strides": [1, 1]})["status"] == "ok"


def test_sharded_tiling_by_hand():
    """L = 12 in 2 shards of 6: kernel 3 tiles with lo + hi = 2 (SAME) or 1 at stride 2;
    padding (0, 0) gives 10 outputs, not 12; a halo of 4 does not fit a shard of 3."""
    conv = dict(op="sharded.conv", inner="conv", n=1, shards=2, spatial_axis=0, kernel=[3],
                stride=[1], dilation=[1], sizes=[12], padding="SAME", padding_mode="zeros", batch=1)
    tiles = lambda config: sharding.tiles(FuzzCase.from_dict(config))
    assert tiles(conv)
    assert tiles({**conv, "stride": [2], "padding": [[1, 0]]})
    assert not tiles({**conv, "padding": [[0, 0]]})
    assert not tiles({**conv, "kernel": [5], "dilation": [2], "sizes": [6], "padding": "SAME"})
    pool = dict(op="sharded.max_pool", inner="max_pool", n=1, shards=4, spatial_axis=0, window=[3],
                stride=[1], dilation=[1], sizes=[12], padding=[1], ceil_mode=False)
    assert tiles(pool) and not tiles({**pool, "padding": [0]})


def test_worker_forces_cpu_devices_for_the_sharded_configurations(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_foo=1")
    worker.force_devices([{"op": "conv"}])
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_foo=1"
    worker.force_devices([{"op": "conv"}, {"op": "sharded.conv", "devices": 8}])
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_foo=1 --xla_force_host_platform_device_count=8"


def _sharded(op: str, **changes) -> dict:
    inner = op.split(".")[-1]
    base = dict(op=op, inner=inner, n=2, channels_last=False, batch=2, channels=3, seed=9,
                second_order=False, sizes=[8, 5], stride=[1, 1], dilation=[1, 1], devices=8,
                shards=4, spatial_axis=0, path="shard_map", mesh_kind="auto", check_vma=True)
    if inner == "conv":
        base.update(impl="manual", groups=1, out_channels=2, kernel=[3, 2], padding="SAME",
                    padding_mode="circular", bias=True)
    else:
        base.update(window=[3, 2], padding=[1, 0], ceil_mode=False, count_include_pad=False)
    return {**base, **changes}


SHARDED = {   # name: (configuration, status, path)
    "conv, checked shard_map, manual, circular": (_sharded("sharded.conv"), "ok", "shard_map (auto) check_vma"),
    "max_pool on mesh=, channels last, order 2": (
        _sharded("sharded.max_pool", path="mesh", channels_last=True, second_order=True), "ok", "mesh (auto)"),
    "avg_pool, a split that does not tile": (
        _sharded("sharded.avg_pool", padding=[0, 0]), "documented", "shard_map (auto) check_vma"),
    "conv_transpose, batch-sharded input, checked shard_map": (
        dict(_sharded("sharded_input", inner="conv_transpose", impl="lax", groups=1, out_channels=2,
                      kernel=[3, 2], padding=1, padding_mode="zeros", bias=True, output_padding=[0, 0],
                      batch=4), placement="batch"), "ok", "shard_map (auto) check_vma"),
    "max_pool, spatially sharded input under jit": (
        dict(_sharded("sharded_input", inner="max_pool", window=[2, 2], padding=[0, 0], path="jit"),
             placement="spatial"), "ok", "jit (auto)"),
}


def test_sharded_runs_against_the_unsharded_op(batch):
    """Values and every VJP (and order 2) of the sharded runs equal the unsharded op's; a
    split that does not tile is refused by jaxcnn.sharded alone, naming the padding."""
    results = batch["sharded"]
    assert [r["config"]["name"] for r in results] == list(SHARDED)
    for result in results:
        name = result["config"]["name"]
        _, status, path = SHARDED[name]
        if "check_vma" in path and not CHECKED_SHARD_MAP:
            status, path = "skipped", "shard_map check_rep"
        assert (result["status"], result["path"]) == (status, path), (name, result)
        if status == "ok":
            assert "unsharded:d0" in result["errors"], (name, result["errors"])
        elif status == "documented":
            assert result["refusal"].startswith("padding:"), (name, result)


def _sharded_float32(**changes) -> dict:
    base = dict(_float32(batch=4), op="sharded_float32", inner="conv", devices=8, shards=2,
                placement="batch", path="jit", mesh_kind="auto", check_vma=True)
    return {**base, **changes}


SHARDED_FLOAT32 = {   # name: (configuration, how it goes in, whether it can take the kernels)
    "jit, auto mesh": (_sharded_float32(), "jit (auto)", True),
    "jit, explicit mesh, 3d strided, 4 shards": (_sharded_float32(
        n=3, kernel=[2, 3, 1], stride=[2, 1, 1], dilation=[1, 1, 2], sizes=[5, 4, 3],
        padding=[[1, 0], [1, 1], [0, 0]], batch=8, shards=4, mesh_kind="explicit"), "jit (explicit)", True),
    "checked shard_map": (_sharded_float32(path="shard_map"), "shard_map (auto) check_vma", True),
    "jit, channels first": (_sharded_float32(channels_last=False), "jit (auto)", False),
}


def test_float32_batch_sharded_runs_take_the_kernels_per_shard_and_agree(batch):
    """Batch-sharded float32 convs under jit (Auto and Explicit meshes) and in a checked
    shard_map: value and both gradients against PyTorch and the unsharded op at float32's
    tolerance; where the kernels apply, the compiled program calls them and every call reads
    one shard's samples (``N / shards``; read from the compiled program)."""
    pytest.importorskip("torch")
    from jaxcnn._compat import custom_partitioning
    from jaxcnn._conv import native
    results = batch["sharded_float32"]
    assert [r["config"]["name"] for r in results] == list(SHARDED_FLOAT32)
    for result in results:
        name = result["config"]["name"]
        config, way_in, kernels = SHARDED_FLOAT32[name]
        kernels = kernels and native.available() and (
            way_in.startswith("shard_map") or custom_partitioning() is not None)
        assert (result["status"], result["path"]) == ("ok", f"{way_in} {'native' if kernels else 'xla'}"), (name, result)
        assert {f"{side}:{label}" for side in ("torch", "unsharded") for label in ("y", "d0", "d1", "d2")
                } == set(result["errors"]), (name, result["errors"])
        shard = config["batch"] // config["shards"]
        assert result["kernel_batches"] == ([shard] * len(result["kernel_batches"]) if kernels else []), name
        assert len(result["kernel_batches"]) >= kernels, name


def test_kernel_batches_reads_each_kernel_calls_samples():
    """From a compiled program's text (the form ``Compiled.as_text`` writes): the leading size of
    each kernel call's first operand; other custom calls are not kernels."""
    text = ('%ffi_call.1 = f32[2,5,32]{2,1,0} custom-call(%param, %param.1), custom_call_target='
            '"jaxcnn_conv", operand_layout_constraints={f32[2,6,16]{2,1,0}, f32[2,16,32]{2,1,0}}\n'
            '%ffi_call.0 = f32[2,16,32]{2,1,0} custom-call(%a, %b), custom_call_target='
            '"jaxcnn_weight_grad", operand_layout_constraints={f32[4,6,16]{2,1,0}, f32[4,5,32]{2,1,0}}\n'
            '%other = f32[8]{0} custom-call(%c), custom_call_target="Sharding", '
            'operand_layout_constraints={f32[8]{0}}')
    assert sharded_float32.kernel_batches(text) == [2, 4]


@pytest.mark.x64          # the check turns x64 on, as a worker does
@pytest.mark.multidevice
def test_a_constant_cotangent_would_gather_the_input_gradients_kernel(monkeypatch):
    """Why the sharded float32 check passes the cotangent as an argument split as ``y``: a
    constant is whole on every device, and the input gradient's kernel then reads the whole
    batch (``kernel_batches`` sees it); split, every call reads one shard."""
    from jaxcnn._compat import custom_partitioning
    from jaxcnn._conv import native
    if not native.available() or custom_partitioning() is None:
        pytest.skip("no native kernels, or no custom partitioning, here")
    c = FuzzCase.from_dict(_sharded_float32(bias=False))
    result = sharded_float32.check(c)
    assert result["status"] == "ok" and set(result["kernel_batches"]) == {2}, result
    real = checks.run_function
    monkeypatch.setattr(checks, "run_function",
                        lambda *a, **k: real(*a, **{**k, "cotangent_argument": False}))
    gathered = sharded_float32.check(c)
    assert gathered["status"] == "ok" and 4 in gathered["kernel_batches"], gathered
    assert gathered["path"] == "jit (auto) native unsplit"


# ----------------------------------------------------------------------------- one batch

def _batch_groups() -> dict[str, list[dict]]:
    """Every configuration the tests above run through ``command.TARGET``, by test (the ones
    that compare with PyTorch only where it is installed)."""
    groups = {"drop_in": _named(DROP_IN), "sharded": _named(SHARDED)}
    if HAS_TORCH:
        groups["sharded_float32"] = _named(SHARDED_FLOAT32)
        groups.update(regressions=[case["config"] for case in _regressions()],
                      group_norm=_named(GROUP_NORM), empty_group_norm=EMPTY_GROUP_NORM,
                      float32=[{**c, "name": k} for k, c in FLOAT32.items()],
                      sample=[c.to_dict() for c in configs.draw_many(CI_SAMPLE, _rotating_seed())])
    return groups


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> dict[str, list[dict]]:
    """The results of ``_batch_groups``, by test: one ``runner.run`` of four chunks over two
    worker processes (each worker pays JAX's and PyTorch's import once; the tests above used to
    start a dozen). Computed once per session: pytest-xdist's workers share the folder above
    their own and take turns through a lock (as test_distributed's curves)."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    done = root / "fuzz-batch.json"
    groups = _batch_groups()
    with (root / "fuzz-batch.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            configs_ = [c for group in groups.values() for c in group]
            results = runner.run(command.TARGET, configs_, processes=2, chunk=math.ceil(len(configs_) / 4))
            done.write_text(json.dumps(results, default=str))
    results = iter(json.loads(done.read_text()))
    return {name: [next(results) for _ in group] for name, group in groups.items()}
