"""``jaxcnn bench --train``'s other frameworks: the PyTorch modules and the stock Flax NNX
models are jaxcnn's models (the same parameter count; from jaxcnn's initial weights the
same loss and gradients, float64, dropout off), their float32 training steps have jaxcnn's
loss at float32 tolerance as timed (channels-last format, micro-batches, ``torch.compile``),
and the report reads them right.
No timing is asserted (the machine is shared)."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import bench
from jaxcnn.bench import model_params, report, train_report, train_step
from tests.helpers import TOL, assert_close

MODELS = train_step.TRAIN_MODELS
# the default tier compares two models (flatten and dropout; 3D); the full tier all four
TIERED = [pytest.param(name, marks=[pytest.mark.slow] * (name not in ("fashion-cnn", "clips-cnn3d")))
          for name in MODELS]


@functools.lru_cache(maxsize=None)
def _jaxcnn(name: str, dtype: str = "float32"):
    """jaxcnn's (channels first, impl="lax") initial parameters, a batch of 3, and its loss
    and gradients there with dropout off, in ``dtype``."""
    loss, params = train_step.jax_loss(name, "lax")
    x, y = train_step.batch_data(name, 3)
    params, x = jax.tree_util.tree_map(lambda a: np.asarray(a, dtype), (params, x))
    value, grads = jax.jit(jax.value_and_grad(
        lambda p: loss(p, jnp.asarray(x), jnp.asarray(y), None, train=False)))(params)
    assert value.dtype == dtype
    return params, x, y, float(value), model_params.in_layer_order(grads)


def _assert_same(name, framework, loss, grads, want_loss, want_grads):
    """Loss and gradients equal up to float64 rounding. Compared in float64, not float32: a
    ReLU's derivative jumps at 0, and one pre-activation of mnist1d-resnet's batch is 1.4e-8,
    whose float32 sign depends on the order of a sum (Flax's and jaxcnn's differ there); that
    one entry moves the gradients before it by 2-14 % while the losses agree to 1e-7."""
    assert_close(np.float64(loss), np.float64(want_loss), TOL["float64"], f"{name} {framework} loss")
    assert len(grads) == len(want_grads), f"{name} {framework}: {len(grads)} gradients, want {len(want_grads)}"
    for i, (g, w) in enumerate(zip(grads, want_grads)):
        assert g.dtype == np.float64, f"{name} {framework} gradient {i}: {g.dtype}"
        assert_close(g, w, TOL["float64"], f"{name} {framework} gradient {i} {w.shape}")


# ----------------------------------------------------------------------------- PyTorch

@pytest.mark.parametrize("name", MODELS)
def test_torch_module_has_jaxcnns_parameter_count(name):
    torch_models = pytest.importorskip("jaxcnn.bench.torch_models")
    _, params = train_step.jax_loss(name, "lax")
    assert torch_models.param_count(torch_models.build(name)) == model_params.count(params)


@pytest.mark.x64
@pytest.mark.parametrize("name", TIERED)
def test_torch_module_same_loss_and_gradients(name):
    """jaxcnn's initial weights copied into the ``nn.Module``: the same cross-entropy and the
    same gradient of every parameter on the same batch (float64, dropout off: ``eval()``)."""
    torch_models = pytest.importorskip("jaxcnn.bench.torch_models")
    params, x, y, want_loss, want_grads = _jaxcnn(name, "float64")
    module = torch_models.load_jaxcnn_params(torch_models.build(name).double(), params).eval()
    loss, grads = torch_models.loss_and_grads(module, x, y)
    _assert_same(name, "torch", loss, grads, want_loss, want_grads)


def test_torch_channels_last_module_and_batch():
    """The channels-last contender runs its weights and batch in channels-last format and
    computes the contiguous one's loss (the first step's loss is taken before the update)."""
    torch_models = pytest.importorskip("jaxcnn.bench.torch_models")
    torch = torch_models.torch
    params, x, y, want_loss, _ = _jaxcnn("clips-cnn3d")
    module = torch_models.module_for("clips-cnn3d", params, True, x.ndim)
    conv = module[4]   # 16 → 32 channels (with one input channel both formats are the same strides)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d) and not conv.weight.is_contiguous()
    losses = [torch_models.train_step("clips-cnn3d", params, x, y, channels_last=cl, compiled=False)().item()
              for cl in (False, True)]
    assert_close(np.float64(losses[1]), np.float64(losses[0]), TOL["float32"], "channels_last vs contiguous")
    assert_close(np.float64(losses[0]), np.float64(want_loss), TOL["float32"], "torch step vs jaxcnn")


def test_torch_micro_batched_step_has_the_plain_loss():
    """``k`` backward passes over ``k`` slices: the step's loss is the whole batch's (a model
    without dropout), and the gradients that AdamW applies equal the plain step's: the second
    steps' losses agree too."""
    torch_models = pytest.importorskip("jaxcnn.bench.torch_models")
    params, x, y, want_loss, _ = _jaxcnn("mnist1d-resnet")
    x, y = np.concatenate([x, x[:1]]), np.concatenate([y, y[:1]])   # 4 examples: 2 slices of 2
    steps = [torch_models.train_step("mnist1d-resnet", params, x, y, channels_last=False, compiled=False,
                                     micro_batches=m) for m in (1, 2)]
    first = [s().item() for s in steps]
    second = [s().item() for s in steps]
    assert_close(np.float64(first[1]), np.float64(first[0]), TOL["float32"], "×2 first step")
    assert_close(np.float64(second[1]), np.float64(second[0]), 1e-4, "×2 second step (after AdamW)")
    assert second[0] != first[0]


def test_torch_step_arguments_are_checked():
    torch_models = pytest.importorskip("jaxcnn.bench.torch_models")
    params, x, y, _, _ = _jaxcnn("fashion-cnn")
    with pytest.raises(ValueError, match="micro_batches"):
        torch_models.train_step("fashion-cnn", params, x, y, channels_last=True, compiled=False, micro_batches=2)
    with pytest.raises(ValueError, match="name"):
        torch_models.build("fashion-nope")
    with pytest.raises(ValueError, match="params"):   # fashion-cnn's weights into another model
        torch_models.load_jaxcnn_params(torch_models.build("fashion-resnet"), params)


def _compile_or_skip(torch):
    """Skip, saying why, where ``torch.compile`` cannot build a kernel here (inductor on CPU
    needs a C++ compiler and Python headers)."""
    try:
        model = torch.compile(torch.nn.Linear(2, 1), dynamic=False)
        model(torch.ones(1, 2)).sum().backward()
    except Exception as err:
        pytest.skip(f"torch.compile cannot run here: {type(err).__name__}: {str(err)[:200]}")


@pytest.mark.slow   # inductor builds C++ kernels: a minute or more on a cold cache
def test_torch_compiled_step_same_loss_as_eager():
    """``torch.compile`` (inductor, CPU, channels-last format) from the same weights: the same
    loss as eager at the first step and, after one AdamW step on its own gradients, the
    second: the compiled backward is right too."""
    torch_models = pytest.importorskip("jaxcnn.bench.torch_models")
    _compile_or_skip(torch_models.torch)
    params, x, y, want_loss, _ = _jaxcnn("fashion-resnet")
    steps = [torch_models.train_step("fashion-resnet", params, x, y, channels_last=True, compiled=c)
             for c in (False, True)]
    with torch_models.strict_compile():
        first = [s().item() for s in steps]
        second = [s().item() for s in steps]
    assert_close(np.float64(first[1]), np.float64(first[0]), TOL["float32"], "compiled first step")
    assert_close(np.float64(first[0]), np.float64(want_loss), TOL["float32"], "eager vs jaxcnn")
    assert_close(np.float64(second[1]), np.float64(second[0]), 1e-4, "compiled second step")


# ----------------------------------------------------------------------------- Flax NNX

@pytest.mark.parametrize("name", MODELS)
def test_flax_model_has_jaxcnns_parameter_count(name):
    flax_models = pytest.importorskip("jaxcnn.bench.flax_models")
    nnx = flax_models.nnx
    _, params = train_step.jax_loss(name, "lax")
    abstract = nnx.eval_shape(lambda: flax_models.build(name, nnx.Rngs(0)))   # no init to run
    assert flax_models.param_count(abstract) == model_params.count(params)


@pytest.mark.x64
@pytest.mark.parametrize("name", TIERED)
def test_flax_model_same_loss_and_gradients(name):
    """jaxcnn's initial weights in the stock Flax NNX model (kernels channels last, the dense
    rows in Flax's flatten order): the same loss and gradients (float64, dropout off)."""
    flax_models = pytest.importorskip("jaxcnn.bench.flax_models")
    params, x, y, want_loss, want_grads = _jaxcnn(name, "float64")
    model = flax_models.load_jaxcnn_params(flax_models.build(name, flax_models.nnx.Rngs(0)), params)
    with jax.numpy_dtype_promotion("standard"):
        loss, grads = flax_models.loss_and_grads(model, x, y)
    _assert_same(name, "flax", loss, grads, want_loss, want_grads)


# ----------------------------------------------------------------------------- the bench

@pytest.mark.slow   # every contender compiled and timed: the full tier (test_bench_train's steps agree by default)
def test_bench_model_times_every_contender_with_its_first_step():
    """A tiny run of one model (batch 2, one round; jaxcnn lax, PyTorch eager, Flax): every
    contender timed, plain and ×2, each with a first step apart from its median; the ratios
    are the fastest plain jaxcnn step over the fastest plain PyTorch and Flax steps."""
    pytest.importorskip("torch")
    pytest.importorskip("flax")
    with jax.numpy_dtype_promotion("standard"):
        row = train_step.bench_model("mnist1d-resnet", 1, impls=("lax",), torch_modes=[(False, False, True)],
                                     batch=2, min_seconds=0.0, micro_batches=(2,))
    assert not row["failures"] and not row["skipped"], (row["failures"], row["skipped"])
    want = {"jaxcnn lax", "jaxcnn lax channels_last", "jaxcnn lax channels_last ×2", "flax nnx",
            "torch eager", "torch eager ×2"}
    assert set(row["ms"]) == want and set(row["first_step_s"]) == want
    assert set(row["compile_s"]) == {k for k in want if k.startswith("jaxcnn")}
    for k in row["compile_s"]:
        assert row["first_step_s"][k] >= row["compile_s"][k] > 0
    plain = [k for k in want if k.startswith("jaxcnn") and "×" not in k]
    assert row["fastest_jaxcnn"] == min(plain, key=row["ms"].get)
    assert row["ratio"] == pytest.approx(row["ms"][row["fastest_jaxcnn"]] / row["ms"]["torch eager"])
    assert row["ratio_flax"] == pytest.approx(row["ms"][row["fastest_jaxcnn"]] / row["ms"]["flax nnx"])
    assert row["fastest_torch_micro"] == "torch eager ×2"


def test_fastest_compares_plain_with_plain():
    """The acceptance ratio is jaxcnn's fastest plain step over PyTorch's fastest plain step,
    eager or compiled: a faster micro-batched step on either side does not enter it."""
    ms = {"jaxcnn lax": 30.0, "jaxcnn lax channels_last": 24.0, "jaxcnn lax channels_last ×4": 12.0,
          "jax": 40.0, "flax nnx": 48.0, "torch eager": 25.0, "torch eager channels_last": 20.0,
          "torch compiled channels_last": 16.0, "torch compiled channels_last ×8": 8.0}
    got = train_step.fastest(ms)
    assert got["fastest_jaxcnn"] == "jaxcnn lax channels_last"
    assert got["fastest_torch"] == "torch compiled channels_last"
    assert got["ratio"] == pytest.approx(24 / 16)
    assert got["ratio_micro"] == pytest.approx(12 / 8)
    assert got["ratio_flax"] == pytest.approx(24 / 48)
    assert train_step.fastest({"jaxcnn lax": 1.0})["ratio"] is None
    assert train_step.split_label("torch compiled channels_last ×8") == ("torch compiled channels_last", 8)
    assert train_step.split_label("flax nnx") == ("flax nnx", 1)


def _row():
    ms = {"jaxcnn lax channels_last": 30.0, "jaxcnn lax channels_last ×4": 18.0, "flax nnx": 60.0,
          "torch eager channels_last": 20.0, "torch compiled channels_last": 15.0,
          "torch compiled channels_last ×2": 14.0}
    row = {"model": "m", "batch": 8, "ms": ms, "temp_bytes": {"jaxcnn lax channels_last": 2 ** 20},
           "failures": {"torch compiled channels_last ×4": "RuntimeError: no | compiler"},
           "skipped": {}, "compile_s": {"jaxcnn lax channels_last": 2.0},
           "first_step_s": {"jaxcnn lax channels_last": 2.5, "jaxcnn lax channels_last ×4": 7.0,
                            "torch compiled channels_last": 40.0}}
    row.update(train_step.fastest(ms))
    return row


def test_steps_table_columns():
    """Plain and micro-batched steps in their own columns (the fastest k), each contender's
    first step apart from its median, the ratio to the fastest plain PyTorch step; a failed
    contender keeps a row with its reason."""
    table = train_report.steps_table([_row()]).splitlines()
    assert table[0] == train_report.STEPS_HEAD
    assert table[0].count("|") == len(table[1].split("|")) - 1 == 11
    assert "| m | 8 | torch compiled channels_last | 15 | 40 | 14 (×2) | — | 1.00 | — |  |" in table
    assert "| m | 8 | jaxcnn lax channels_last | 30 | 2.5 | 18 (×4) | 7 | 2.00 | 1 |  |" in table
    assert "| m | 8 | flax nnx | 60 | — | — | — | 4.00 | — |  |" in table
    assert ("| m | 8 | torch compiled channels_last ×4 | — | — | — | — | — | — | failed: RuntimeError: no / compiler |"
            in table)
    assert all(line.count("|") == 11 for line in table)
    order = [line.split(" | ")[2] for line in table[2:6]]   # by the plain step, not the ×k one
    assert order == ["torch compiled channels_last", "torch eager channels_last", "jaxcnn lax channels_last",
                     "flax nnx"]


def test_summary_table_ratio_and_flax():
    table = train_report.summary_table([_row()]).splitlines()
    assert table[2] == ("| m | 8 | 30 ms (jaxcnn lax channels_last) | 15 ms (torch compiled channels_last) | 2.00 "
                        "| 18 ms (jaxcnn lax channels_last ×4) | 14 ms (torch compiled channels_last ×2) | 1.29 "
                        "| 60 ms (flax nnx) | 0.50 |")
    assert table[0].count("|") == table[2].count("|") == 11


def test_header_names_the_vector_isa_and_matmul_speed():
    info = {"device_kind": "cpu", "platform": "cpu", "cpu": "Some CPU", "cpu_cores": 2,
            "vector_isa": "AVX2 + FMA", "jax": "0.0", "torch": "2.0", "torch_threads": 2}
    line = train_report.header(info, {"n": 2048, "gflops": 158.04}, {"available": True, "seconds": 0.01})
    assert "vector ISA AVX2 + FMA" in line and "2048² matmul 158.0 GFLOP/s" in line
    assert "\n" not in line and "native kernels loaded" in line
    assert "torch not installed" in train_report.header({**info, "torch": None}, {"n": 256, "gflops": 1.0})


@pytest.mark.parametrize("flags, want", [
    ({"sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"}, "AVX-512 + VNNI + BF16"),
    ({"sse4_2", "avx", "avx2", "fma"}, "AVX2 + FMA"),
    ({"sse4_2", "avx"}, "AVX"),
    ({"fp", "asimd"}, "NEON"),
    ({"fp", "asimd", "sve"}, "SVE"),
    (set(), "unknown"),
])
def test_vector_isa(flags, want):
    assert report.vector_isa(flags) == want


def test_cpu_flags_from_cpuinfo_or_numpy(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu sse4_2 avx avx2 fma\n\n"
                       "processor\t: 1\nflags\t\t: fpu\n")
    assert report.cpu_flags(str(cpuinfo)) == ("/proc/cpuinfo", {"fpu", "sse4_2", "avx", "avx2", "fma"})
    source, flags = report.cpu_flags(str(tmp_path / "absent"))
    assert source in ("numpy", "none")
    if source == "numpy" and "avx2" in flags:   # numpy's names mapped to /proc/cpuinfo's
        assert report.vector_isa(flags).startswith(("AVX2", "AVX-512"))


def test_run_prints_the_header_first(monkeypatch, capsys):
    """``jaxcnn bench --train`` prints its header line (ISA, matmul) and the table's columns on
    stdout before the first model's rows, then the whole report."""
    monkeypatch.setattr(train_step, "bench_model", lambda name, *a, **k: {**_row(), "model": name})
    monkeypatch.setattr("jaxcnn.bench.timing.matmul_peak", lambda n, r: {"n": n, "ms": 1.0, "gflops": 12.5})
    assert train_step.run(["fashion-cnn"], 1, batch=2) == 1   # _row has a failed contender
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("device: ") and "vector ISA" in out[0] and "256² matmul 12.5 GFLOP/s" in out[0]
    assert out[1] == train_report.STEPS_HEAD
    assert out[3].startswith("| fashion-cnn | 8 | torch compiled channels_last | 15 |")
    assert "Summary:" in "\n".join(out[4:])


@pytest.mark.parametrize("argv, name", [
    (["--train", "--models", "fashion-cnn,fashion-nope"], "--models"),
    (["--train", "--models", ""], "--models"),
    (["--train", "--repeats", "0"], "--repeats"),
    (["--train", "--batch", "0"], "--batch"),
])
def test_train_arguments_are_checked(argv, name):
    with pytest.raises(ValueError, match=name):
        bench.main(argv)


def test_missing_optax_names_the_train_extra(monkeypatch):
    real = train_step.importlib.util.find_spec
    monkeypatch.setattr(train_step.importlib.util, "find_spec",
                        lambda module, *a: None if module == "optax" else real(module, *a))
    with pytest.raises(ImportError, match=r"jaxcnn\[train\]"):
        train_step.run(["fashion-cnn"], 1, batch=2)
