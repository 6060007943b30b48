"""jaxcnn: pure-functional N-D convolutions in JAX with hand-written, verified gradients."""
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
           "lax", "sharded"]
