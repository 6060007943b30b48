"""jaxcnn: pure-functional N-D convolutions in JAX with hand-written, verified gradients."""
import importlib.metadata as _metadata
import pathlib as _pathlib
import re as _re


def _version() -> str:
    """The installed distribution's version (``pyproject.toml``'s, the one version source). A
    source tree that is not installed reads its ``pyproject.toml``; anything else is ``0+unknown``."""
    try:
        return _metadata.version("jaxcnn")
    except _metadata.PackageNotFoundError:
        pass
    try:
        text = (_pathlib.Path(__file__).resolve().parent.parent / "pyproject.toml").read_text("utf-8")
    except OSError:
        return "0+unknown"
    found = _re.search(r'^name = "jaxcnn"\s*\nversion = "([^"]+)"', text, _re.MULTILINE)
    return found.group(1) if found else "0+unknown"


__version__ = _version()

from jaxcnn import reference
from jaxcnn.conv import conv, conv1d, conv2d, conv3d, conv_input_grad, conv_weight_grad
from jaxcnn.transpose import conv_transpose, convolve
from jaxcnn.pool import avg_pool, global_avg_pool, max_pool
from jaxcnn.norm import group_norm
from jaxcnn import lax  # jaxcnn.lax.conv_general_dilated / conv_transpose: jax.lax's drop-ins
from jaxcnn import gradcheck  # jaxcnn.gradcheck.check: numpy and jax only, rich on demand
from jaxcnn import sharded  # conv, max_pool, avg_pool split along a spatial axis (halo exchange)

__all__ = ["reference", "conv", "conv1d", "conv2d", "conv3d", "conv_input_grad", "conv_weight_grad",
           "convolve", "conv_transpose", "max_pool", "avg_pool", "global_avg_pool", "group_norm",
           "lax", "gradcheck", "sharded"]
