"""Tests for `clef_jax.embed`: the input contract, reading records, the CLI on real records."""

import numpy as np
import pytest

from clef_jax import embed, model_inputs
from clef_jax import preprocess as pp
from clef_jax.data import schema


def test_input_contract_matches_the_pretraining_chain():
  rng = np.random.default_rng(0)
  t = np.arange(6000) / 500.0
  x = (
    np.sin(2 * np.pi * 1.2 * t)
    + 0.3 * np.sin(2 * np.pi * 0.1 * t)
    + 0.05 * rng.standard_normal(6000)
  )
  x[100:120] = np.nan
  out = model_inputs.input_contract(x, 500.0)
  assert out.shape == (schema.WINDOW_SAMPLES,) and out.dtype == np.float32
  ref = pp.zscore(pp.bandpass(pp.interpolate_nan(x[None, :5000])[0], 500.0))
  np.testing.assert_allclose(out, ref, atol=1e-5)
  assert abs(out.mean()) < 1e-5 and out.std() == pytest.approx(1.0, abs=1e-4)


def test_input_contract_resamples_and_pads():
  x = np.sin(2 * np.pi * 1.0 * np.arange(2000) / 250.0)  # 8 s at 250 Hz
  out = model_inputs.input_contract(x, 250.0)
  assert out.shape == (5000,)
  np.testing.assert_array_equal(out[4000:], 0.0)  # 8 s -> 4000 samples, zero-padded
  assert out[:4000].std() == pytest.approx(1.0, abs=1e-3)


def test_npy_input(tmp_path):
  a = np.random.default_rng(0).standard_normal((3, 2600, 12)).astype(np.float32)
  np.save(tmp_path / "x.npy", a)
  x, ids, errors = model_inputs.read_inputs(
    tmp_path / "x.npy", lead="II", window=1000, fs=500, unit="mV"
  )
  assert x.shape == (3, 1000) and ids == ["0", "1", "2"] and not errors
  np.testing.assert_allclose(
    x[1], model_inputs.input_contract(a[1, :, 1], 500.0, window=1000), atol=1e-6
  )


def test_embed_array_pads_the_last_batch():
  calls = []

  def fake(params, x):
    calls.append(x.shape)
    return x[:, :4] * params

  x = np.arange(50, dtype=np.float32).reshape(5, 10)
  out = embed.embed_array(fake, 2.0, x, batch_size=2)
  np.testing.assert_array_equal(out, x[:, :4] * 2)
  assert set(calls) == {(2, 10)}  # one shape: one compilation


@pytest.mark.slow
def test_cli_on_real_records(shared_data, tmp_path, fast_compiles):
  """WFDB directory -> one embedding per record + ids, with weights from a PyTorch file."""
  pytest.importorskip("torch")
  import jax
  import jax.numpy as jnp

  from clef_jax import models
  from clef_jax import weights as weights_lib

  model = models.create_backbone("net1d", "small")
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 1)))["params"]
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: (0.1 * rng.standard_normal(s.shape)).astype(np.float32), shapes)
  weights = tmp_path / "w.ckpt"
  weights_lib.save_backbone(params, weights, backbone="net1d", size="small")
  records = shared_data / "cinc2021"
  out = tmp_path / "emb.npy"
  rc = embed.main(
    [
      "--torch-weights",
      str(weights),
      "--size",
      "small",
      "--input",
      str(records),
      "--output",
      str(out),
      "--lead",
      "I",
    ]
  )
  assert rc == 0
  emb = np.load(out)
  ids = (tmp_path / "emb.ids.txt").read_text().split()
  headers = sorted(p.stem for p in records.glob("*.hea"))
  assert ids == headers and emb.shape == (len(headers), 256) and np.isfinite(emb).all()
  # One record by path gives the same row (the contract is per record).
  x, one_ids, _ = model_inputs.read_inputs(records / f"{ids[3]}.hea", lead="I")
  ref = embed.embed_array(embed.make_embed_fn(model), params, x)
  assert one_ids == [ids[3]]
  np.testing.assert_allclose(emb[3], ref[0], rtol=1e-4, atol=1e-5)
