"""The paper protocol's pieces: label fractions, class-balanced sampling, each task's input
(band-pass, z-score, random crop), tasks that cannot run, the reference model."""

import numpy as np
import pytest

from clef_jax.configs import eval as eval_config
from clef_jax.data.signal import resample
from clef_jax.evaluation import heads, models, protocol, records


def test_label_subset_is_seeded_sorted_and_keeps_every_class():
  train = np.arange(10, 210)  # 200 train rows
  y = np.zeros(300, np.int64)
  y[[50, 150]] = 1  # a rare class: 2 of 200
  y[[60]] = 2  # and a rarer one
  sub = protocol.label_subset(train, y, "multiclass", 0.01, seed=3)
  assert len(sub) == 2 and np.all(np.diff(sub) > 0) and set(sub) <= set(train)
  assert set(y[protocol.label_subset(train, y, "multiclass", 0.02, seed=3)]) == {0, 1, 2}
  np.testing.assert_array_equal(sub, protocol.label_subset(train, y, "multiclass", 0.01, seed=3))
  tenth = [protocol.label_subset(train, y, "regression", 0.1, seed=s) for s in (0, 1)]
  assert [len(t) for t in tenth] == [20, 20] and not np.array_equal(*tenth)
  np.testing.assert_array_equal(protocol.label_subset(train, y, "binary", 1.0, seed=0), train)
  assert len(protocol.label_subset(train[:3], y, "regression", 0.01, seed=0)) == 1


class _Recorder:
  """`HeadFns` stand-in whose step records the (unmasked) targets of every batch."""

  def __init__(self):
    self.seen = []
    self.tx = type("Tx", (), {"init": staticmethod(lambda params: None)})()

  def step(self, params, opt_state, x, y, mask):
    self.seen.extend(np.asarray(y)[np.asarray(mask) > 0].tolist())
    return params, opt_state, 0.0


def test_balanced_sampling_draws_classes_equally():
  y = np.array([0] * 90 + [1] * 10)
  w = heads.balanced_weights(y)
  np.testing.assert_allclose(w[:90], 1 / 90)
  np.testing.assert_allclose(w[90:], 1 / 10)
  fits = {}
  for balanced in (False, True):
    fns = _Recorder()
    heads.fit(
      fns,
      {},
      np.zeros((100, 1), np.float32),
      y,
      val_loss=lambda p: 1.0,
      batch_size=16,
      max_epochs=30,
      patience=100,
      min_delta=0.0,
      seed=0,
      sample_weights=w if balanced else None,
    )
    fits[balanced] = np.asarray(fns.seen)
  assert len(fits[True]) == len(fits[False]) == 30 * 100  # an epoch is still N draws
  assert fits[False].mean() == pytest.approx(0.1)  # every row once per epoch
  assert abs(fits[True].mean() - 0.5) < 0.04  # 3000 draws: sd ~0.009


def test_task_inputs_band_pass_normalisation_and_random_crop():
  rng = np.random.default_rng(0)
  fs = 250.0
  x = np.cumsum(rng.normal(size=5000)) * 0.01 + 0.5  # 20 s with drift, in mV
  x500 = resample(x, fs, 500.0)
  # The first window: the 501 native samples it needs, resampled (the input contract).
  first = resample(x[:501], fs, 500.0)[:1000]
  raw = records.lead_windows(x, fs, window=1000, bandpass=False, normalize=False)
  np.testing.assert_allclose(raw[0], first, atol=1e-5)  # mV, untouched
  plain = records.lead_windows(x, fs, window=1000, bandpass=False)
  ref = (first - first.mean()) / first.std()
  np.testing.assert_allclose(plain[0], ref, atol=1e-4)
  filtered = records.lead_windows(x, fs, window=1000)
  assert abs(filtered[0] - plain[0]).max() > 0.1  # the band-pass did something
  crops = {
    rid: records.lead_windows(
      x, fs, window=1000, bandpass=False, normalize=False, crop="random", record_id=rid
    )[0]
    for rid in ("a", "b")
  }
  for rid, crop in crops.items():
    starts = [s for s in range(len(x500) - 999) if np.allclose(x500[s : s + 1000], crop, atol=1e-5)]
    assert len(starts) == 1, rid  # a window of the 500 Hz record
    again = records.lead_windows(
      x, fs, window=1000, bandpass=False, normalize=False, crop="random", record_id=rid
    )[0]
    np.testing.assert_array_equal(crop, again)  # seeded by the record id
  assert not np.allclose(crops["a"], crops["b"])
  short = records.lead_windows(
    x[:100], fs, window=1000, normalize=False, bandpass=False, crop="random", record_id="a"
  )
  np.testing.assert_allclose(short[0][:200], resample(x[:100], fs, 500.0), atol=1e-5)
  assert not short[0][200:].any()  # zero-padded


def _stub(monkeypatch, n=200, label="sex"):
  """Records whose first input sample carries a binary label, and an identity-like backbone."""
  import flax.linen as nn
  import jax

  class Stub(nn.Module):
    features: int = 4

    @nn.compact
    def __call__(self, x, train=False):
      scale = self.param("scale", nn.initializers.ones, (4,))
      return x[:, :4, 0] * scale, {}

  rng = np.random.default_rng(0)
  y = (rng.random(n) < 0.2).astype(int)
  x = rng.standard_normal((n, 16)).astype(np.float32)
  x[:, 0] += 2.0 * y
  recs = records.Records(
    x=x,
    owner=np.arange(n),
    ids=[str(i) for i in range(n)],
    patients=[str(i) for i in range(n)],
    splits=["train"] * (n // 2) + ["validation"] * (n // 4) + ["test"] * (n - n // 2 - n // 4),
    fields={label: list(y), "risk_high": [None] * n},
    vocabularies={},
    source="stub",
    skipped=[],
  )
  monkeypatch.setattr(records, "load_records", lambda key, label_keys, data: recs)
  monkeypatch.setattr(protocol, "_check_datasets", lambda groups, data: None)
  model = Stub()
  params = jax.device_get(model.init(jax.random.key(0), x[:1, :, None])["params"])
  return [
    models.Backbone(
      label=name, name="stub", size="small", source="stub", model=model, params=params
    )
    for name in ("a", "b")
  ]


def test_label_fraction_and_reference_through_the_protocol(monkeypatch):
  backbones = _stub(monkeypatch)
  report = protocol.evaluate(eval_config.get_config("demo_sex,labels=0.1,resamples=20"), backbones)
  task = report["tasks"]["demo_sex"]
  assert task["n"]["train"] == 10 and task["train_available"] == 100
  assert task["label_fraction"] == 0.1 and task["n"]["test"] == 50
  assert report["paper"]["reference"] == "a" and report["protocol"]["reference"] == "a"
  config = eval_config.get_config("demo_sex,resamples=20,reference=b")
  assert protocol.evaluate(config, backbones)["paper"]["reference"] == "b"
  with pytest.raises(ValueError, match="reference='c' is not one of the models: a, b"):
    protocol.evaluate(eval_config.get_config("demo_sex,reference=c"), backbones)


def test_a_task_without_usable_records_is_listed_not_fatal(monkeypatch):
  backbones = _stub(monkeypatch)
  config = eval_config.get_config("demo_sex+demo_risk_high,resamples=20")
  report = protocol.evaluate(config, backbones)  # No stub record has a risk_high label.
  assert list(report["tasks"]) == ["demo_sex"]
  assert list(report["skipped_tasks"]) == ["demo_risk_high"]
  assert "demo_risk_high" in report["skipped_tasks"]["demo_risk_high"]
  with pytest.raises(ValueError, match="No task could be evaluated"):
    protocol.evaluate(eval_config.get_config("demo_risk_high,resamples=20"), backbones)
