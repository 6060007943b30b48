"""Plain JAX, no jaxcnn: ``jax.shard_map`` on an ``AxisType.Explicit`` mesh, given an empty array
(a zero-size batch) split along another axis, returns an array whose per-device buffers hold the
whole shape instead of one shard's, so reading it fails; its VJP refuses the cotangent's type.
The same program on an ``Auto`` mesh works. Found by ``jaxcnn fuzz`` (``sharded.avg_pool``, batch
0, split along a spatial axis); the fuzzer draws no empty batch on Explicit meshes since.

    python experiments/jax_empty_shard_map/repro.py
"""
import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P


def run(kind: AxisType) -> str:
    mesh = jax.make_mesh((2,), ("d",), axis_types=(kind,))
    spec = P(None, None, "d")
    double = jax.shard_map(lambda x: 2 * x, mesh=mesh, in_specs=(spec,), out_specs=spec)
    with jax.set_mesh(mesh):
        x = jax.device_put(jnp.zeros((0, 3, 4)), NamedSharding(mesh, spec))
        try:
            return f"ok, shape {np.asarray(jax.jit(double)(x)).shape}"
        except ValueError as error:
            return f"ValueError: {error}"


if __name__ == "__main__":
    print("jax", jax.__version__)
    for kind in (AxisType.Auto, AxisType.Explicit):
        print(f"{kind.name:8s}", run(kind))
