"""Tests for `clef_jax.weights`: one loader for workdirs, step directories and PyTorch files."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clef_jax import checkpoint, models, train, weights


def _random_params(name, seed=1):
  model = models.create_backbone(name, "small")
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 1)))["params"]
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32), shapes)


def _assert_same(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("name", ["net1d", "msformer"])
def test_torch_file_round_trip(tmp_path, name):
  pytest.importorskip("torch")
  params = _random_params(name)
  model = models.create_backbone(name, "small")
  assert weights.FORMATS == tuple(weights.SUFFIXES) == ("lightning", "state_dict", "safetensors")
  for fmt in weights.FORMATS:
    path = tmp_path / f"w{weights.SUFFIXES[fmt]}"
    assert weights.save_backbone(params, path, backbone=name, size="small", format=fmt) == path
    loaded = weights.load_backbone(path, backbone=name, size="small")
    _assert_same(loaded.params, params)
    assert (loaded.backbone, loaded.size, loaded.in_channels, loaded.config) == (
      name,
      "small",
      1,
      None,
    )
    assert loaded.source == str(path.absolute())
    assert loaded.model == model  # The same module from every format ...
  # ... and it runs with the loaded weights (one compile, not one per format and per op).
  out, _ = jax.jit(model.apply)({"params": loaded.params}, jnp.zeros((1, 64, 1)))
  assert out.shape == (1, 256)
  assert not list(tmp_path.glob(".*tmp*"))  # No temp files left behind.


def test_save_rejects_unknown_format_and_backbone(tmp_path):
  params = _random_params("net1d")
  with pytest.raises(ValueError, match="format 'onnx'"):
    weights.save_backbone(params, tmp_path / "w", backbone="net1d", size="small", format="onnx")
  with pytest.raises(ValueError, match="backbone 'resnet'"):
    weights.save_backbone(params, tmp_path / "w", backbone="resnet", size="small")
  assert not list(tmp_path.iterdir())


def _orbax_run(directory, params, config):
  state = train.TrainState(step=jnp.int32(3), params={"backbone": params}, opt_state=(jnp.ones(4),))
  ckpt = checkpoint.Checkpointer(directory / "checkpoints", async_save=False)
  ckpt.save(3, state, config=config, force=True)
  ckpt.close()


def test_workdir_and_step_directory(tmp_path):
  params = _random_params("net1d", seed=2)
  config = {"model": {"name": "net1d", "size": "small", "dtype": "bfloat16"}}
  _orbax_run(tmp_path / "run", params, config)
  step_dir = tmp_path / "run" / "checkpoints" / "3"
  for source in (tmp_path / "run", tmp_path / "run" / "checkpoints", step_dir):
    loaded = weights.load_backbone(source)
    _assert_same(loaded.params, params)
    assert (loaded.backbone, loaded.size, loaded.source) == ("net1d", "small", str(step_dir))
    assert loaded.config["model"] == config["model"]
    # The inference module: float32, whatever the run computed in.
    assert loaded.model == models.create_backbone("net1d", "small")
  assert weights.load_backbone(step_dir, backbone="net1d", size="small").size == "small"
  with pytest.raises(
    ValueError, match="holds a net1d-small backbone, not the requested net1d-medium"
  ):
    weights.load_backbone(step_dir, size="medium")
  with pytest.raises(ValueError, match="single-lead"):
    weights.load_backbone(step_dir, in_channels=12)


def test_missing_sources_and_sizes(tmp_path):
  with pytest.raises(FileNotFoundError, match="No training workdir"):
    weights.load_backbone(tmp_path / "nothing")
  with pytest.raises(FileNotFoundError, match="No Orbax checkpoint"):
    weights.load_backbone(tmp_path)
  (tmp_path / "w.ckpt").write_bytes(b"x")
  with pytest.raises(ValueError, match="size of PyTorch weights"):
    weights.load_backbone(tmp_path / "w.ckpt")
