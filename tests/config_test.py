"""Every documented switch is reachable from `--config`: set on the command line, seen where used.

The flags are parsed the way `python -m clef_jax.main` parses them (a locked `config_file` flag),
then each value is followed to the code that consumes it: the `clef_loss` keyword arguments, the
view augmentation, the backbone module and the end-of-run probe's lead.
"""

import sys

import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from clef_jax import losses, models, options, train_end, train_setup

SWITCHES = {
  "loss.nan_rate_meta": "zero",
  "loss.weight_normalization": "multiply",
  "loss.missing_risk": "exclude",
  "loss.minmax_include_diagonal": False,
  "model.conv_impl": "xla",
  "input.bandpass": False,
  "input.zscore": False,
  "input.mask_span": (0.2, 0.4),
  "input.noise_rms": 0.05,
  "input.target_fs": 250.0,
  "input.lead": "II",
}


def parse(*args):
  """The config `python -m clef_jax.main --config=configs/small.py:tiny ARGS` would run.

  config_flags finds the config file (and so the override flags) in `sys.argv` when the flag is
  defined, so the command line is in place first, as it is for the CLI.
  """
  argv = ["main", "--config=configs/small.py:tiny", *args]
  saved, sys.argv = sys.argv, argv
  try:
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True)
    values(argv)
    return values.config
  finally:
    sys.argv = saved


def _arg(path, value):
  text = str(value).replace(" ", "") if isinstance(value, tuple) else value
  return f"--config.{path}={text}"


def test_every_switch_arrives_where_it_is_used():
  config = parse(*(_arg(p, v) for p, v in SWITCHES.items()))
  for path, value in SWITCHES.items():
    section, key = path.split(".")
    assert (
      tuple(config[section][key]) == value
      if isinstance(value, tuple)
      else config[section][key] == value
    ), path
  # Loss: the trainer's keyword arguments are the switches, and clef_loss honours them.
  kwargs = train_setup.loss_kwargs("clef", config.loss)
  for key in ("nan_rate_meta", "weight_normalization", "missing_risk", "minmax_include_diagonal"):
    assert kwargs[key] == SWITCHES[f"loss.{key}"]
  rng = np.random.default_rng(0)
  z = rng.standard_normal((8, 4)).astype(np.float32)
  risk = np.array([0.1, np.nan, 0.3, 0.05], np.float32)
  rate = np.array([1.0, np.nan, 0.5, 1.0], np.float32)
  ours, _ = losses.clef_loss(z, risk, rate_meta=rate, **kwargs)
  explicit, _ = losses.clef_loss(
    z,
    risk,
    rate_meta=rate,
    temperature=0.07,
    alpha=0.2,
    use_mask=False,
    combine="mean",
    nan_rate_meta="zero",
    weight_normalization="multiply",
    missing_risk="exclude",
    minmax_include_diagonal=False,
  )
  default, _ = losses.clef_loss(z, risk, rate_meta=rate)
  assert float(ours) == float(explicit) and float(ours) != float(default)
  # Augmentation.
  aug = train_setup.augment_config(config.input, None)
  assert (aug.bandpass, aug.zscore, aug.mask_span, aug.noise_rms, aug.target_fs) == (
    False,
    False,
    (0.2, 0.4),
    0.05,
    250.0,
  )
  # Backbone.
  assert models.from_config(config.model).conv_impl == "xla"
  # The end-of-run probe follows the pretraining lead unless its own lead is set.
  assert train_end.probe_lead(config) == "II"
  assert (
    train_end.probe_lead(parse("--config.input.lead=II", "--config.evals.probe.data.lead=V1"))
    == "V1"
  )
  assert train_end.probe_lead(parse()) == "I"  # random views: lead I


def test_defaults_are_the_modules_defaults():
  """Without overrides the config reproduces the functions' own defaults (official semantics)."""
  import dataclasses
  import inspect

  from clef_jax import input_pipeline

  config = parse()
  signature = inspect.signature(losses.clef_loss).parameters
  for key, value in train_setup.loss_kwargs("clef", config.loss).items():
    assert signature[key].default == value, key
  defaults = input_pipeline.AugmentConfig()
  ours = train_setup.augment_config(config.input, None)
  for field in dataclasses.fields(defaults):
    if field.name not in ("noise_mat",):
      assert getattr(ours, field.name) == getattr(defaults, field.name), field.name


def test_one_option_grammar():
  values = {"steps": int, "lr": float}
  assert options.parse_options(
    options.split_items(" demo, simclr ,steps=3,lr=1e-3,,"),
    flags=("demo",),
    choices={"method": ("clef", "simclr")},
    values=values,
  ) == {"demo": True, "method": "simclr", "steps": 3, "lr": 1e-3}
  assert options.parse_options(
    ["method=clef"], choices={"method": ("clef",)}, values={"method": str}
  ) == {"method": "clef"}
  for items, match in (
    (["nope"], "Unknown config option 'nope'"),
    (["x=1"], "Unknown config option x="),
    (["steps=x"], "Config option steps='x' is not a valid int"),
    (["method=sgd"], "Unknown method 'sgd'"),
  ):
    with pytest.raises(ValueError, match=match):
      options.parse_options(items, choices={"method": ("clef",)}, values={**values, "method": str})
