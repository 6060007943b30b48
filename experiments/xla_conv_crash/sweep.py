"""Pin down XLA's operand-swap abort: compile random small ``lax.conv_general_dilated`` calls,
each in a worker process (an abort kills only its worker), and compare which abort with
``jaxcnn._conv.xla_guard.operand_swap_aborts``.

    python experiments/xla_conv_crash/sweep.py --n 1500 --seed 0

Half of the draws force one axis into the swap pass's "group axis" pattern (the rare case),
the rest are uniform over small sizes, strides, paddings (negative too), dilations, feature
groups, layouts, float32 and float64 and 1–3 spatial axes. Writes ``results.json`` and ``results.md`` beside this file.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import random

HERE = pathlib.Path(__file__).parent


def draw(rng: random.Random) -> dict:
    n = rng.choice([1, 2, 2, 3])
    axes = []
    for _ in range(n):
        k = rng.randint(1, 3)
        axes.append(dict(size=rng.randint(1, 5), k=k, stride=rng.randint(1, 3),
                         pad=[rng.randint(-1, 2), rng.randint(-1, 2)], base=rng.randint(1, 3),
                         window=rng.choice([1, 1, 2])))
    if rng.random() < 0.5:
        k = rng.randint(2, 3)
        axes[rng.randrange(n)].update(k=k, stride=k - 1, pad=[0, 0], base=k, window=1,
                                      size=rng.randint(1, 5))
    groups = rng.choice([1, 1, 2, 3])
    for a in axes:   # a valid convolution: the padded, dilated input holds the dilated kernel
        lo, hi = a["pad"]
        extent = (a["size"] - 1) * a["base"] + 1 + lo + hi
        if extent < (a["k"] - 1) * a["window"] + 1:
            a["pad"] = [max(lo, 0), max(hi, 0) + (a["k"] - 1) * a["window"] + 1 - extent]
    return dict(axes=axes, groups=groups, batch=rng.randint(1, 3),
                channels=rng.choice([1, 2, 3]) * groups, out_per_group=rng.choice([1, 2]),
                channels_last=rng.random() < 0.5, dtype=rng.choice(["float32", "float64"]))


def compile_one(config: dict) -> dict:
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)

    from jaxcnn._conv.xla_guard import operand_swap_aborts
    axes, g = config["axes"], config["groups"]
    dtype = jnp.dtype(config["dtype"])
    lhs = jnp.ones((config["batch"], config["channels"], *[a["size"] for a in axes]), dtype)
    rhs = jnp.ones((config["out_per_group"] * g, config["channels"] // g, *[a["k"] for a in axes]),
                   dtype)
    spatial = "DHW"[3 - len(axes):]
    if config["channels_last"]:
        lhs, rhs = jnp.moveaxis(lhs, 1, -1), jnp.moveaxis(rhs, (0, 1), (-1, -2))
        numbers = (f"N{spatial}C", f"{spatial}IO", f"N{spatial}C")
    else:
        numbers = (f"NC{spatial}", f"OI{spatial}", f"NC{spatial}")
    predicted = operand_swap_aborts([a["size"] for a in axes], [a["k"] for a in axes],
                                    [a["stride"] for a in axes], [tuple(a["pad"]) for a in axes],
                                    [a["base"] for a in axes], [a["window"] for a in axes], g,
                                    dtype=config["dtype"])
    jax.jit(lambda a, b: jax.lax.conv_general_dilated(
        a, b, [a_["stride"] for a_ in axes], [tuple(a_["pad"]) for a_ in axes],
        lhs_dilation=[a_["base"] for a_ in axes], rhs_dilation=[a_["window"] for a_ in axes],
        dimension_numbers=numbers, feature_group_count=g)).lower(lhs, rhs).compile()
    return {"status": "ok", "predicted": predicted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--processes", type=int, default=2)
    options = parser.parse_args()
    from jaxcnn.fuzz import runner
    from jaxcnn._conv.xla_guard import operand_swap_aborts
    rng = random.Random(options.seed)
    configs = [draw(rng) for _ in range(options.n)]
    results = runner.run(f"{HERE / 'sweep.py'}:compile_one", configs, processes=options.processes,
                         chunk=100)
    rows = {(p, c): 0 for p in (True, False) for c in (True, False)}
    wrong = []
    for r in results:
        axes = r["config"]["axes"]
        predicted = operand_swap_aborts([a["size"] for a in axes], [a["k"] for a in axes],
                                        [a["stride"] for a in axes], [tuple(a["pad"]) for a in axes],
                                        [a["base"] for a in axes], [a["window"] for a in axes],
                                        r["config"]["groups"], dtype=r["config"]["dtype"])
        crashed = r["status"] == "crash"
        if r["status"] == "error":
            wrong.append(r)
            continue
        rows[predicted, crashed] += 1
        if predicted != crashed:
            wrong.append(r)
    (HERE / "results.json").write_text(json.dumps({"n": options.n, "seed": options.seed,
                                                   "table": {f"predicted={p} aborted={c}": v for (p, c), v in rows.items()},
                                                   "mismatches": wrong}, indent=1))
    table = ["| predicted abort | XLA aborted | configurations |", "|---|---|---|"]
    table += [f"| {p} | {c} | {v} |" for (p, c), v in rows.items()]
    (HERE / "results.md").write_text(f"Sweep of {options.n} lax convolutions, seed {options.seed}:\n\n"
                                     + "\n".join(table) + f"\n\nMismatches or errors: {len(wrong)}\n")
    print("\n".join(table), f"\nmismatches or errors: {len(wrong)}")


if __name__ == "__main__":
    main()
