"""``jaxcnn.fuzz``: the crash-isolating runner, the comparison, the documented differences,
every failure the fuzzer ever found (now passing), the lowering forms at the edges of their
shapes, group_norm's edges and refusals, and a bounded random sample of every op (the CI
sample: its seed rotates with the commit, so each commit fuzzes new configurations).
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import random
import subprocess

import numpy as np
import pytest

from jaxcnn.fuzz import checks, command, configs, runner, torch_side

HERE = pathlib.Path(__file__).parent
REGRESSIONS = HERE / "fuzz_regressions.json"
PASSING = ("ok", "refused", "documented")


# ----------------------------------------------------------------------------- the runner


def misbehave(config: dict) -> dict:
    """Worker target: abort, raise or answer, as the configuration says."""
    if config["do"] == "abort":
        os.abort()
    if config["do"] == "raise":
        raise ValueError("w: planted")
    if config["do"] == "hang":
        import time
        time.sleep(60)
    return {"status": "ok", "twice": 2 * config["value"]}


def test_runner_isolates_aborts_and_goes_on():
    plan = ["answer", "abort", "answer", "raise", "abort", "answer"]
    results = runner.run(f"{__file__}:misbehave", [dict(do=d, value=i) for i, d in enumerate(plan)],
                         processes=2, chunk=3)
    assert [r["config"]["value"] for r in results] == list(range(len(plan)))
    assert [r["status"] for r in results] == ["ok", "crash", "ok", "error", "crash", "ok"]
    assert [r["twice"] for r in results if r["status"] == "ok"] == [0, 4, 10]
    assert "exit status -6" in results[1]["detail"]
    assert "ValueError: w: planted" in results[3]["detail"]


def test_runner_records_a_hang_as_a_crash():
    results = runner.run_chunk(f"{__file__}:misbehave", [dict(do="answer", value=1),
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
    assert {c["op"] for c in first} == set(configs.OPS)
    assert {c["impl"] for c in first if "impl" in c} == {"lax", "manual"}


def test_group_norm_draws_keep_three_elements_a_group_and_reach_both_refusals():
    """Legal draws hold ≥ 3 elements a group (with fewer, dx cancels past the tolerance:
    configs.draw_group_norm), over 0–3 spatial axes and both layouts; some draw a
    non-divisor, some an empty axis."""
    drawn = configs.draw_many(300, seed=5, ops=("group_norm",))
    legal = [c for c in drawn if c["channels"] % c["groups"] == 0 and 0 not in c["sizes"]]
    assert all(c["channels"] // c["groups"] * math.prod(c["sizes"]) >= 3 for c in legal)
    assert {c["n"] for c in legal} == {0, 1, 2, 3}
    assert {c["channels_last"] for c in legal} == {c["affine"] for c in legal} == {False, True}
    assert any(c["channels"] % c["groups"] for c in drawn)
    assert any(0 in c["sizes"] for c in drawn)
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
    assert torch_side.differences(config) == [name]
    assert name not in torch_side.differences({**config, **fixed})


# ----------------------------------------------------------------------------- regressions


def _regressions() -> list[dict]:
    return json.loads(REGRESSIONS.read_text())


def test_every_failure_ever_found_now_passes():
    pytest.importorskip("torch")
    cases = _regressions()
    results = runner.run(command.TARGET,
                         [case["config"] for case in cases], processes=2, chunk=8)
    for case, result in zip(cases, results):
        assert result["status"] in PASSING, (case["found"], result)
        assert result["status"] == case["now"], (case["found"], result["status"], result.get("detail"))


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


def test_group_norm_against_torch_and_reference_and_its_refusals():
    """Values and gradients (every argument, order 2) against PyTorch and the reference;
    a non-divisor refused by all, jaxcnn naming ``groups``; an empty axis refused by jaxcnn
    alone, naming ``x``, as documented."""
    pytest.importorskip("torch")
    results = runner.run(command.TARGET, [{**c, "name": k} for k, (c, _, _) in GROUP_NORM.items()],
                         processes=1, chunk=len(GROUP_NORM))
    for result in results:
        name = result["config"]["name"]
        _, status, holds = GROUP_NORM[name]
        assert result["status"] == status, (name, result)
        if status == "ok":
            assert all(key in result["errors"] for key in holds), (name, result["errors"])
        else:
            assert result["refusal"].startswith(holds[0]), (name, result["refusal"])
            assert result.get("differences", []) == holds[1:], (name, result)


def test_group_norm_on_an_empty_batch():
    """N = 0 in both layouts: an empty result and empty gradients on every side (found by
    wiring group_norm into the fuzzer: channels first, jaxcnn and the reference reshaped the
    empty array with -1 and raised ZeroDivisionError; PyTorch returns an empty array)."""
    pytest.importorskip("torch")
    results = runner.run(command.TARGET, [_group_norm(batch=0, channels_last=layout)
                                          for layout in (False, True)], processes=1)
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


CI_SAMPLE = int(os.environ.get("JAXCNN_FUZZ_N", "240"))


def test_random_sample_of_every_op():
    pytest.importorskip("torch")
    seed = _rotating_seed()
    results = command.fuzz(CI_SAMPLE, seed)
    failures = [r for r in results if r["status"] not in PASSING]
    table = command.markdown(command.summarize(results))
    assert not failures, (f"seed {seed}: {len(failures)} failures; reproduce with "
                          f"`python -m jaxcnn fuzz --n {CI_SAMPLE} --seed {seed}`\n{table}\n"
                          + "\n".join(json.dumps(f, default=str)[:1500] for f in failures[:5]))
    ok = sum(r["status"] == "ok" for r in results)
    assert ok >= CI_SAMPLE // 2, table          # most draws are legal and really compared
    assert {r["config"]["op"] for r in results if r["status"] == "ok"} == set(configs.OPS), table
