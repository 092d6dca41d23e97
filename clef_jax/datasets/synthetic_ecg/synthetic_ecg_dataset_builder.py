"""`synthetic_ecg`: simulated 12-lead ECGs with correlated clinical metadata (the demo archive).

Nothing is downloaded: `clef_jax.synthetic` generates every record from `seed`. Build with

    builder = Builder(data_dir="/tmp/tfds", num_subjects=2000, seed=0)   # or config="tiny"
    builder.download_and_prepare(file_format="array_record")
    train = builder.as_data_source(split="train")

Splits are by subject, 80/10/10 (train/validation/test); subjects are i.i.d., so contiguous
subject-id ranges form a random split. The shared `clef_jax.data.schema.record_features` schema is
extended with labels: `sex`, `age` (years, never missing), `age_band` (40-49 ... 80-89), `rhythm`
(sinus/af/ectopic), `risk` (true SCORE2, never masked) and `risk_high` (ESC high/very high).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from clef_jax import synthetic
from clef_jax.data import schema


@dataclasses.dataclass
class SyntheticConfig(tfds.core.BuilderConfig):
  """Archive size and seed. Different values get their own config name and directory."""

  num_subjects: int = 2000
  seed: int = 0
  records_per_subject: int = 1
  sampling_rate: float = 500.0
  duration_s: float = 10.0
  # "bytes" (the shared `schema.record_features` default) stores the int16 signal raw and lets
  # ArrayRecord's own compression handle the record; "zlib" adds a zlib layer: same decoded values,
  # larger files, ~3x slower build and ~2x slower reads (see docs/pipeline.md).
  signal_encoding: str = "bytes"


def config_name(
  num_subjects: int,
  seed: int,
  records_per_subject: int,
  sampling_rate: float,
  duration_s: float,
  signal_encoding: str = "bytes",
) -> str:
  """Directory-safe name of a custom configuration."""
  name = f"n{num_subjects}_seed{seed}_r{records_per_subject}"
  if sampling_rate != 500.0 or duration_s != 10.0:
    name += f"_fs{sampling_rate:g}_{duration_s:g}s"
  if signal_encoding != "bytes":
    name += f"_{signal_encoding}"
  return name


def _typed(field: str, value, default):
  try:
    return type(default)(value)
  except (TypeError, ValueError):
    raise ValueError(f"{field}={value!r}: not a {type(default).__name__}") from None


def _check(values: dict) -> None:
  """Refuses config values that would build an empty or unusable archive (one line, the field)."""
  least = {"num_subjects": 1, "records_per_subject": 1}
  for field, low in least.items():
    if values[field] < low:
      raise ValueError(f"{field}={values[field]}: must be at least {low}")
  if not 0 < values["sampling_rate"] <= 20_000:
    raise ValueError(f"sampling_rate={values['sampling_rate']}: must be in (0, 20000] Hz")
  if not 0 < values["duration_s"] <= 3600:
    raise ValueError(f"duration_s={values['duration_s']}: must be in (0, 3600] seconds")
  if values["signal_encoding"] not in ("bytes", "zlib"):
    raise ValueError(f"signal_encoding={values['signal_encoding']!r}: choose bytes or zlib")


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for the synthetic ECG archive."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
    SyntheticConfig(name="default", description="2,000 subjects, one 10 s 500 Hz record each."),
    SyntheticConfig(name="tiny", num_subjects=40, description="40 subjects: tests and smoke runs."),
  ]
  DEFAULT_CONFIG_NAME = "default"

  def __init__(
    self,
    *,
    num_subjects: int | None = None,
    seed: int | None = None,
    records_per_subject: int | None = None,
    sampling_rate: float | None = None,
    duration_s: float | None = None,
    signal_encoding: str | None = None,
    config=None,
    **kwargs,
  ):
    """Accepts either `config` (name or `SyntheticConfig`) or the config fields as kwargs.

    Args:
      num_subjects: number of simulated subjects.
      seed: archive seed.
      records_per_subject: records per subject.
      sampling_rate: Hz of the stored signals.
      duration_s: seconds per record.
      signal_encoding: "bytes" (raw int16, the shared default; ArrayRecord compresses) or "zlib".
      config: a `SyntheticConfig` or the name of one in `BUILDER_CONFIGS`.
      **kwargs: `data_dir`, `version`, `file_format`, ... for `GeneratorBasedBuilder`.
    """
    fields = dict(
      num_subjects=num_subjects,
      seed=seed,
      records_per_subject=records_per_subject,
      sampling_rate=sampling_rate,
      duration_s=duration_s,
      signal_encoding=signal_encoding,
    )
    if any(v is not None for v in fields.values()):
      if config is not None:
        raise ValueError("Pass either `config` or the config fields, not both.")
      defaults = SyntheticConfig(name="_")
      values = {
        k: (getattr(defaults, k) if v is None else _typed(k, v, getattr(defaults, k)))
        for k, v in fields.items()
      }
      _check(values)
      preset = [
        c for c in self.BUILDER_CONFIGS if all(getattr(c, k) == v for k, v in values.items())
      ]
      config = (
        preset[0]
        if preset
        else SyntheticConfig(name=config_name(**values), description="Custom size/seed.", **values)
      )
    kwargs.setdefault("file_format", "array_record")
    super().__init__(config=config, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      features=schema.record_features(
        signal_encoding=self.builder_config.signal_encoding,
        sex=tfds.features.ClassLabel(names=synthetic.SEXES),
        age=tfds.features.Scalar(dtype=np.float32),
        age_band=tfds.features.ClassLabel(names=synthetic.AGE_BANDS),
        rhythm=tfds.features.ClassLabel(names=synthetic.RHYTHMS),
        risk=tfds.features.Scalar(dtype=np.float32),
        risk_high=tfds.features.ClassLabel(num_classes=2),
      ),
      supervised_keys=None,
      homepage="https://github.com/",  # No upstream: generated by clef_jax.synthetic.
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download.
    cfg = self.builder_config
    return {
      split: self._generate_examples(start, stop)
      for split, (start, stop) in synthetic.split_ranges(cfg.num_subjects).items()
      if stop > start
    }

  def _generate_examples(self, start: int, stop: int):
    cfg = self.builder_config
    for example in synthetic.generate_records(
      seed=cfg.seed,
      start=start,
      stop=stop,
      records_per_subject=cfg.records_per_subject,
      sampling_rate=cfg.sampling_rate,
      duration_s=cfg.duration_s,
    ):
      yield example["record_id"], example
