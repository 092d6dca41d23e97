"""Tests for `clef_jax.probe`: AUROC against brute force, heads, CV choice, the table."""

import numpy as np
import pytest

from clef_jax import probe


def test_auroc_matches_pair_counting():
  rng = np.random.default_rng(0)
  scores = np.round(rng.standard_normal(200), 1)           # ties on purpose
  positive = rng.random(200) < 0.3
  pos, neg = scores[positive], scores[~positive]
  brute = np.mean((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None]))
  assert probe.auroc(scores, positive) == pytest.approx(brute, abs=1e-12)
  assert np.isnan(probe.auroc(scores, np.zeros(200, bool)))


@pytest.mark.parametrize("head", probe.HEADS)
def test_probe_separates_informative_from_noise(head):
  rng = np.random.default_rng(1)
  n, d = 400, 16
  y = rng.integers(0, 3, n)
  informative = rng.standard_normal((n, d)) + 1.5 * np.eye(d)[y]   # class shifts 3 features
  noise = rng.standard_normal((n, d))
  good = probe.linear_probe(informative[:300], y[:300], informative[300:], y[300:],
                            num_classes=3, head=head)
  bad = probe.linear_probe(noise[:300], y[:300], noise[300:], y[300:], num_classes=3, head=head)
  assert good["auroc"] > 0.85 and good["accuracy"] > 0.6
  assert abs(bad["auroc"] - 0.5) < 0.1
  assert good["l2"] in probe.L2_GRID


def test_format_table():
  r0 = {"sex": {"auroc": 0.6, "accuracy": 0.55}, "rhythm": {"auroc": 0.7, "accuracy": 0.8}}
  r1 = {"sex": {"auroc": 0.65, "accuracy": 0.6}, "rhythm": {"auroc": 0.8, "accuracy": 0.8}}
  table = probe.format_table({"random init": r0, "pretrained": r1})
  lines = table.splitlines()
  assert lines[0].split()[0] == "task" and lines[0].endswith("change")
  assert lines[2].split()[-1] == "+0.050" and lines[3].split()[-1] == "+0.100"
  assert lines[-1].split()[0] == "mean" and lines[-1].split()[-1] == "+0.075"
