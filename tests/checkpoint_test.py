"""Tests for `clef_jax.checkpoint`: state + iterator + config round trip, weights-only reads."""

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from clef_jax import checkpoint, train
from clef_jax import sharding as sharding_lib


def _state(mesh):
  """A small TrainState: one fsdp-style sharded leaf, replicated others, None fields."""
  rng = np.random.default_rng(0)
  params = {
    "backbone": {
      "conv": {
        "kernel": rng.standard_normal((3, 1, 16)).astype(np.float32),
        "bias": rng.standard_normal(16).astype(np.float32),
      }
    }
  }
  state = train.TrainState(
    step=jnp.int32(5), params=params, opt_state=(jnp.ones(16), {"count": jnp.int32(5)})
  )
  shardings = jax.tree.map(lambda _: NamedSharding(mesh, P()), state)
  shardings = shardings.replace(
    params={
      "backbone": {
        "conv": {
          "kernel": NamedSharding(mesh, P(None, None, "data")),
          "bias": NamedSharding(mesh, P()),
        }
      }
    }
  )
  return jax.device_put(state, shardings), shardings


def _iterator():
  return iter(grain.MapDataset.range(100).seed(3).shuffle().batch(4).to_iter_dataset())


def test_round_trip_state_iterator_config(tmp_path):
  mesh = sharding_lib.make_mesh()
  state, shardings = _state(mesh)
  it = _iterator()
  [next(it) for _ in range(3)]
  ckpt = checkpoint.Checkpointer(tmp_path / "checkpoints", save_interval_steps=5, max_to_keep=2)
  assert ckpt.save(5, state, data_iter=it, config={"model": {"size": "small"}}, force=True)
  ckpt.close()
  expected = [next(it) for _ in range(2)]

  # A torn save (killed mid-write) is a temporary directory Orbax never picks as the latest.
  (tmp_path / "checkpoints" / "7.orbax-checkpoint-tmp-1234").mkdir()
  ckpt = checkpoint.Checkpointer(tmp_path / "checkpoints")
  assert ckpt.latest_step() == 5
  target = jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings
  )
  fresh = _iterator()
  restored = ckpt.restore(5, target, data_iter=fresh)
  ckpt.close()
  assert isinstance(restored, train.TrainState)
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert (
    restored.params["backbone"]["conv"]["kernel"].sharding
    == shardings.params["backbone"]["conv"]["kernel"]
  )
  for a, b in zip([next(fresh) for _ in range(2)], expected):
    np.testing.assert_array_equal(a, b)

  step_dir = checkpoint.resolve_step_dir(tmp_path)  # workdir -> checkpoints/5
  assert step_dir.name == "5"
  assert checkpoint.read_config(step_dir) == {"model": {"size": "small"}}
  host = checkpoint.restore_backbone(step_dir)  # weights only, numpy
  np.testing.assert_array_equal(
    host["conv"]["kernel"], np.asarray(state.params["backbone"]["conv"]["kernel"])
  )


def test_resolve_step_dir_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="No Orbax checkpoint"):
    checkpoint.resolve_step_dir(tmp_path)


def _truncate_largest(directory):
  """Cuts the largest file under `directory` to 100 bytes (a disk that filled up mid-copy)."""
  files = sorted((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
  files[-1].write_bytes(files[-1].read_bytes()[:100])
  return files[-1]


def test_unreadable_newest_step_falls_back_to_the_previous_one(tmp_path):
  mesh = sharding_lib.make_mesh()
  state, shardings = _state(mesh)
  ckpt = checkpoint.Checkpointer(tmp_path / "checkpoints", max_to_keep=None, async_save=False)
  for step in (1, 2, 3):
    ckpt.save(
      step,
      state.replace(step=jnp.int32(step)),
      data_iter=_iterator(),
      config={"step": step},
      force=True,
    )
  ckpt.close()
  # Step 3's array data is cut short (TensorStore fails), step 2's iterator position too (JSON).
  data_files = [
    p for p in (tmp_path / "checkpoints" / "3" / "state").rglob("*") if p.parent.name == "d"
  ]
  for path in data_files:
    path.write_bytes(path.read_bytes()[:100])
  (tmp_path / "checkpoints" / "2" / "data" / "process_0-of-1.json").write_text('{"last_')

  target = jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings
  )
  lines, seen_configs = [], []
  ckpt = checkpoint.Checkpointer(tmp_path / "checkpoints", max_to_keep=None, async_save=False)
  step, restored = ckpt.restore_newest_readable(
    target,
    data_iter=_iterator(),
    report=lines.append,
    check_config=lambda config, step_dir: seen_configs.append((config, step_dir.name)),
  )
  assert step == 1 and int(restored.step) == 1
  for a, b in zip(jax.tree.leaves(restored.params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert seen_configs == [({"step": 3}, "3"), ({"step": 2}, "2"), ({"step": 1}, "1")]
  assert len(lines) == 2 and all("\n" not in line for line in lines)
  assert lines[0].startswith("restore: checkpoint step 3 is unreadable: ")
  named = lines[0].split(" is unreadable: ")[1].split(" (array ")[0]
  assert named in {str(p) for p in data_files}  # The exact file, ...
  assert "OUT_OF_RANGE" in lines[0] and "size 100; using step 1 instead" in lines[0]  # ... why.
  data_file = tmp_path / "checkpoints" / "2" / "data" / "process_0-of-1.json"
  assert lines[1].startswith(f"restore: checkpoint step 2 is unreadable: {data_file}: ")
  # Kept, never deleted: moved out of the manager's view with every file, damaged one included.
  aside = tmp_path / "unreadable_checkpoints"
  assert sorted(p.name for p in aside.iterdir()) == ["2", "3"]
  for path in data_files:
    assert (aside / "3" / path.relative_to(tmp_path / "checkpoints" / "3")).stat().st_size == 100
  # The run can save those steps again.
  assert ckpt.latest_step() == 1 and ckpt.save(2, restored, force=True)
  ckpt.close()
  assert checkpoint.Checkpointer(tmp_path / "checkpoints").latest_step() == 2


def test_no_readable_step_is_one_error(tmp_path):
  mesh = sharding_lib.make_mesh()
  state, shardings = _state(mesh)
  ckpt = checkpoint.Checkpointer(tmp_path / "checkpoints", async_save=False)
  ckpt.save(1, state, force=True)
  ckpt.close()
  _truncate_largest(tmp_path / "checkpoints" / "1" / "state")
  target = jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings
  )
  ckpt = checkpoint.Checkpointer(tmp_path / "checkpoints")
  with pytest.raises(checkpoint.UnreadableCheckpoint, match="checkpoint step 1 is unreadable: "):
    ckpt.restore_newest_readable(target, report=pytest.fail)
  assert (tmp_path / "checkpoints" / "1").is_dir()  # Nothing moved or deleted.
  empty = checkpoint.Checkpointer(tmp_path / "empty")
  assert empty.restore_newest_readable(target) is None
