"""The one case type (``jaxcnn._cases.Case``) and its extensions: the shapes a case derives
are those ``jaxcnn``'s ops produce (traced, never run), in both layouts and 1–3D; the fuzz's
JSON configurations round-trip exactly; a bad field is refused, naming it."""
from __future__ import annotations

import json
import random
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

import jaxcnn
from jaxcnn._cases import Case
from jaxcnn.bench import CASES as BENCH_CASES
from jaxcnn.fuzz.configs import FuzzCase, draw_many

REGRESSIONS = Path(__file__).resolve().parent / "fuzz_regressions.json"


def _traced_shape(op, *shapes, **kwargs) -> tuple[int, ...]:
    structs = [jax.ShapeDtypeStruct(shape, jnp.float32) for shape in shapes]
    return jax.eval_shape(lambda *a: op(*a, **kwargs), *structs).shape


def _sampled(op: str, count: int, seed: int) -> list[Case]:
    """``count`` legal cases of ``op`` per (n, layout), drawn with every knob off its default."""
    rng, found = random.Random(seed), []
    for n in (1, 2, 3):
        for channels_last in (False, True):
            while sum(c.n == n and c.channels_last == channels_last for c in found) < count:
                groups = rng.choice([1, 2])
                case = Case(op=op, batch=rng.choice([1, 2]), channels=groups * rng.choice([1, 2]),
                            out_channels=groups * rng.choice([1, 3]), groups=groups,
                            sizes=tuple(rng.randint(3, 8) for _ in range(n)),
                            kernel=tuple(rng.randint(1, 3) for _ in range(n)),
                            stride=rng.choice([1, 2, tuple(rng.randint(1, 3) for _ in range(n))]),
                            dilation=rng.choice([1, 2]), channels_last=channels_last,
                            padding=rng.choice([0, 1, "SAME", "valid", ((1, 0),) * n]))
                if op == "conv_transpose":
                    case = case.replace(padding=rng.choice([0, 1, "SAME", "VALID"]))
                if all(o > 0 for o in case.out_sizes()):
                    found.append(case)
    return found


@pytest.mark.parametrize("case", _sampled("conv", 3, 0), ids=lambda c: f"{c.n}d-{c.channels_last}")
def test_conv_shapes_are_jaxcnn_conv_s(case):
    kwargs = dict(stride=case.stride, padding=case.padding, dilation=case.dilation,
                  groups=case.groups, channels_last=case.channels_last)
    assert _traced_shape(jaxcnn.conv, case.x_shape(), case.w_shape(), **kwargs) == case.y_shape()


@pytest.mark.parametrize("case", _sampled("conv_transpose", 1, 1),
                         ids=lambda c: f"{c.n}d-{c.channels_last}")
def test_conv_transpose_shapes_are_jaxcnn_s(case):
    kwargs = dict(stride=case.stride, padding=case.padding, dilation=case.dilation,
                  groups=case.groups, channels_last=case.channels_last)
    assert (_traced_shape(jaxcnn.conv_transpose, case.x_shape(), case.w_shape(), **kwargs)
            == case.y_shape())


@pytest.mark.parametrize("channels_last", [False, True], ids=["NC", "NC_last"])
@pytest.mark.parametrize("case", BENCH_CASES, ids=lambda c: c.name)
def test_bench_shapes_are_jaxcnn_s(case, channels_last):
    """Every bench case (convs, transposed convs, pooling) at its quick size."""
    small = case.sized("quick").replace(channels_last=channels_last)
    x, w, y = small.shapes(channels_last)
    kwargs = dict(stride=small.stride, padding=small.padding, channels_last=channels_last)
    if small.op in ("max_pool", "avg_pool"):
        assert _traced_shape(getattr(jaxcnn, small.op), x, window=small.kernel, **kwargs) == y
    else:
        assert _traced_shape(getattr(jaxcnn, small.op), x, w, groups=small.groups, **kwargs) == y


def test_fuzz_round_trip_is_exact():
    """Every configuration of fuzz_regressions.json, and a sample of fresh draws (every op),
    comes back from ``FuzzCase`` key for key, in order."""
    configs = [entry["config"] for entry in json.loads(REGRESSIONS.read_text())]
    configs += [case.to_dict() for case in draw_many(300, seed=25)]
    for config in configs:
        back = FuzzCase.from_dict(config).to_dict()
        assert back == config and list(back) == list(config), config
        assert json.loads(json.dumps(back)) == config


def test_fuzz_case_shapes_are_the_dicts():
    config = {"op": "conv", "n": 2, "batch": 3, "channels": 4, "out_channels": 6, "groups": 2,
              "sizes": [5, 4], "kernel": [3, 1], "channels_last": True, "seed": 1}
    case = FuzzCase.from_dict(config)
    assert case.x_shape() == (3, 5, 4, 4) and case.w_shape() == (3, 1, 2, 6)


@pytest.mark.parametrize("make, field", [
    (lambda: Case(sizes=(4,), stride="2"), "stride"),
    (lambda: Case(sizes=(4,), channels_last=1), "channels_last"),
    (lambda: Case(sizes=[4, 4], kernel=(3,)), "kernel"),
    (lambda: Case(sizes=(4,), padding=((1, 2, 3),)), "padding"),
    (lambda: Case(sizes="44"), "sizes"),
    (lambda: FuzzCase(sizes=(4,), seed=1.5), "seed"),
    (lambda: FuzzCase.from_dict({"op": "conv", "sizes": [4], "strid": 2}), "strid"),
    (lambda: FuzzCase.from_dict({"op": "conv", "n": 2, "sizes": [4]}), "n"),
], ids=["stride", "channels_last", "kernel", "padding", "sizes", "seed", "unknown", "n"])
def test_a_bad_field_is_refused_naming_it(make, field):
    with pytest.raises((TypeError, ValueError), match=field):
        make()


def test_a_case_is_hashable_and_frozen():
    case = Case(sizes=[4, 5], kernel=[3, 3], padding=[[1, 0], [0, 1]])
    assert case.sizes == (4, 5) and case.padding == ((1, 0), (0, 1))
    assert hash(case) == hash(Case(sizes=(4, 5), kernel=(3, 3), padding=((1, 0), (0, 1))))
    with pytest.raises(AttributeError):
        case.batch = 3
