"""``jaxcnn bench``: time jaxcnn's ops beside ``jax.grad`` of plain ``lax`` and PyTorch.

- ``cases``: the suite (``Case``, ``CASES``), its sizes, FLOP counts and descriptions;
- ``contenders``: the ``lax`` baseline, jaxcnn's ops, PyTorch's (``TorchSide``);
- ``timing``: interleaved rounds of synchronised calls, the matmul peak;
- ``rows``: one row, every contender timed, its compiled temp memory, compared with the baseline;
- ``report``: the markdown table, the device (its vector ISA), the load;
- ``train_step``: ``jaxcnn bench --train``, the training step of every named model;
- ``torch_models`` / ``flax_models``: those models as PyTorch and stock Flax NNX users write
  them (``model_params`` walks jaxcnn's weights into them); ``train_report``: their table;
- ``profile``: XLA's per-op trace of a compiled step, summed by category;
- ``command``: ``jaxcnn bench`` itself (``main``; what it measures is in its docstring).
"""
from jaxcnn.bench.cases import (CASES, QUICK_CASES, Case, available, case_flops, conv_flops,
                                describe, select_cases)
from jaxcnn.bench.command import DTYPES, IMPLS, LAYOUTS, MODES, SCALES, main, parse_args
from jaxcnn.bench.contenders import TorchSide, baseline_fn, jaxcnn_fn, torch_fn
from jaxcnn.bench.report import device_info, load_average, markdown_table
from jaxcnn.bench.rows import AGREEMENT, bench_row, compiled_temp_bytes, rel_err
from jaxcnn.bench.timing import failure_message, matmul_peak, time_interleaved

__all__ = ["CASES", "QUICK_CASES", "Case", "available", "case_flops", "conv_flops", "describe",
           "select_cases", "DTYPES", "IMPLS", "LAYOUTS", "MODES", "SCALES", "main", "parse_args",
           "TorchSide", "baseline_fn", "jaxcnn_fn", "torch_fn", "device_info", "load_average",
           "markdown_table", "AGREEMENT", "bench_row", "compiled_temp_bytes", "rel_err", "failure_message", "matmul_peak",
           "time_interleaved"]
