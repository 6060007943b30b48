"""Tests for jaxcnn.train.checkpoint: the .npz checkpoint format (a round trip restores every
leaf and array exactly; anything that is not a checkpoint is refused with a message naming the
file). Its atomic write is jaxcnn._files' (test_files.py)."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.train import checkpoint
from test_files import leftovers

pytestmark = pytest.mark.x64   # the example tree holds a float64 leaf beside float32, int32, float16


def example_tree():
    return {"w": jnp.arange(6.0, dtype=jnp.float32).reshape(2, 3), "b": jnp.array([1, -2], jnp.int32),
            "nested": (jnp.array(0.5, jnp.float64), jnp.zeros((0, 4), jnp.float16))}


CONFIG = {"lr": 0.01, "sizes": (3, 4), "model": "cnn"}


def test_save_and_load_round_trip_exactly(tmp_path):
    path = tmp_path / "checkpoint.npz"
    tree = example_tree()
    key = jax.random.key(3)
    checkpoint.save(path, tree, CONFIG, step=7, key=jax.random.key_data(key), elapsed=1.25)
    template = jax.tree_util.tree_map(jnp.zeros_like, tree)
    restored, arrays = checkpoint.load(path, template, CONFIG, ("step", "key", "elapsed"))
    assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(tree)
    for got, want in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(tree)):
        assert got.dtype == want.dtype and np.array_equal(np.asarray(got), np.asarray(want))
    assert int(arrays["step"]) == 7 and float(arrays["elapsed"]) == 1.25
    assert jax.random.wrap_key_data(jnp.asarray(arrays["key"])) == key
    assert checkpoint.read_config(path) == json.loads(json.dumps(CONFIG))
    with np.load(path) as stored:  # a plain npz: no pickles needed to read any entry
        assert {name: stored[name].dtype.hasobject for name in stored.files} == dict.fromkeys(stored.files, False)
    assert leftovers(tmp_path) == []


def test_load_refuses_another_run_naming_the_field(tmp_path):
    path = tmp_path / "checkpoint.npz"
    checkpoint.save(path, example_tree(), CONFIG, step=1)
    with pytest.raises(ValueError, match=r"lr: the checkpoint in .* was made with lr=0.01; got 0.02"):
        checkpoint.load(path, example_tree(), {**CONFIG, "lr": 0.02}, ("step",))


def test_load_refuses_a_leaf_of_another_shape(tmp_path):
    path = tmp_path / "checkpoint.npz"
    checkpoint.save(path, example_tree(), CONFIG, step=1)
    template = {**example_tree(), "w": jnp.zeros((3, 2), jnp.float32)}
    with pytest.raises(ValueError, match=rf"{path}: leaf \d is float32\(2, 3\); the model expects float32\(3, 2\)"):
        checkpoint.load(path, template, CONFIG, ("step",))


def write_npy(path):
    with path.open("wb") as f:
        np.save(f, np.arange(3))


def write_npz_without_config(path):
    np.savez(path, leaf_0=np.zeros(2), step=np.asarray(1))


def write_npz_with_bad_config(path):
    np.savez(path, leaf_0=np.zeros(2), step=np.asarray(1), config=np.asarray("{not json"))


@pytest.mark.parametrize("write, why", [
    (lambda path: path.write_bytes(b"garbage, not an archive" * 10), "it is not a zip archive (it starts with b'garbage,')"),
    (lambda path: path.write_bytes(b""), "it is not a zip archive (it is empty)"),
    (lambda path: path.write_bytes(b"PK\x03\x04 a truncated zip"), "its zip archive is unreadable"),
    (write_npy, "it is not a zip archive (it is a single .npy array)"),
    (write_npz_without_config, "it lacks config"),
    (write_npz_with_bad_config, "its config is not a JSON object"),
], ids=["garbage", "empty", "truncated-zip", "npy", "no-config", "bad-config"])
def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path, write, why):
    path = tmp_path / "checkpoint.npz"
    write(path)
    for read in (lambda: checkpoint.load(path, [jnp.zeros(2)], {}, ("step",)),
                 lambda: checkpoint.read_config(path, ("step",))):
        with pytest.raises(checkpoint.NotACheckpointError) as info:
            read()
        message = str(info.value)
        assert message.startswith(f"{path}: not a jaxcnn checkpoint: expected an .npz archive")
        assert why in message and "pickled" not in message
        assert isinstance(info.value, ValueError)


def write_npz_with_other_keys(path):
    np.savez(path, weights=np.zeros(2), steps=np.asarray(1), settings=np.asarray("{}"))


def test_an_archive_with_other_entries_is_named(tmp_path):
    path = tmp_path / "checkpoint.npz"
    write_npz_with_other_keys(path)
    with pytest.raises(checkpoint.NotACheckpointError, match=f"{path}: not a jaxcnn checkpoint: .* it lacks step, config"):
        checkpoint.load(path, [jnp.zeros(2)], {}, ("step",))


def damaged_copies(raw: bytes, stride: int):
    """``(what, bytes)``: the archive with one byte flipped every ``stride`` bytes, and cut
    short at every ``stride``-th length."""
    for i in range(0, len(raw), stride):
        yield f"byte {i} flipped", raw[:i] + bytes([raw[i] ^ 0x5A]) + raw[i + 1:]
    for n in range(0, len(raw), stride):
        yield f"cut at {n} bytes", raw[:n]


def test_a_damaged_checkpoint_is_named_or_reads_back_unchanged(tmp_path):
    """Every byte position (step 3) of a real checkpoint flipped, every length cut: each copy is
    refused as not a checkpoint, naming the file (never numpy's or zipfile's raw error), or, where
    the byte lies in a field no reader uses (a timestamp, the local header's copy of a size),
    loads the very values saved. A copy that loaded other values would fail here."""
    path, damaged = tmp_path / "checkpoint.npz", tmp_path / "damaged.npz"
    tree = example_tree()
    checkpoint.save(path, tree, CONFIG, step=7)
    raw = path.read_bytes()
    outcomes = {"named": 0, "unchanged": 0}
    for what, copy in damaged_copies(raw, 3):
        damaged.write_bytes(copy)
        try:
            restored, arrays = checkpoint.load(damaged, tree, CONFIG, ("step",))
        except checkpoint.NotACheckpointError as err:
            assert str(err).startswith(f"{damaged}: not a jaxcnn checkpoint"), what
            outcomes["named"] += 1
            continue
        for got, want in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(tree)):
            assert got.dtype == want.dtype and np.array_equal(np.asarray(got), np.asarray(want)), what
        assert int(arrays["step"]) == 7, what
        outcomes["unchanged"] += 1
    assert outcomes["named"] > 0.5 * (len(raw) // 3) and outcomes["unchanged"] > 0, outcomes


def test_a_checkpoint_with_other_leaves_is_named(tmp_path):
    path = tmp_path / "checkpoint.npz"
    checkpoint.save(path, [jnp.zeros(2), jnp.ones(3)], {}, step=1)
    with pytest.raises(checkpoint.NotACheckpointError, match=f"{path}: .* holds 2 leaves; .* expect 1"):
        checkpoint.load(path, [jnp.zeros(2)], {}, ("step",))


def test_a_missing_checkpoint_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        checkpoint.read_config(tmp_path / "absent.npz")
