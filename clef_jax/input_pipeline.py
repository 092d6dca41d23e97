"""Pretraining input pipeline: TFDS ArrayRecord -> one grain chain -> globally sharded batches.

    data source (tfds, LeanSource)          random access, decodes the six fields used
    -> MapDataset.source -> map_with_index  keep the record's position in the source
    -> .seed(seed).shuffle().repeat(n)      global order, reshuffled every epoch
    -> .random_map(TwoViews)                per record: leads, window, NaN interpolation, all draws
    -> [process_index::process_count]       this process's disjoint share
    -> .batch(B / process_count)            drop_remainder
    -> .map(AugmentBatch)                   per batch: one filtfilt, noise, zero mask, z-score
    -> .to_iter_dataset() -> .mp_prefetch() worker processes own whole batches
    -> .map(make_array_from_process_local_data)  global `jax.Array`s on a ("data",) mesh

Why this order:

- Every random draw of the §D chain (leads, noise type/window, mask) happens in `TwoViews`, seeded
  by grain from `(seed, global position)`. The expensive, deterministic work (bandpass, noise
  gather, z-score) runs once per batch, vectorised over its `2B` views. A record's two views thus
  depend only on the seed and its position, not on the number of processes or workers.
- `random_map` sits *before* the process slice so that a record's augmentation does not depend on
  `process_count` either: the union of the processes' streams is exactly the one-process stream.
- `mp_prefetch` slices after the batched `MapDataset`, so workers produce whole batches and the
  output is identical for 0, 1 or 2 workers; `get_state`/`set_state` restore the position.

Records are cut to `window` samples at 500 Hz (the first window; the official code also reads
samples [0, 5000)). Other rates are resampled to 500 Hz first (polyphase), so the bandpass is
designed for the rate of the samples it filters. A shorter record is processed over its length and
zero-padded at the end after the z-score. Views never contain NaN; `risk` and `rate_meta` keep
NaN for missing metadata (the loss decides what that means).
"""

from __future__ import annotations

import dataclasses
import math
import os
import zlib
from typing import Any

import grain
import numpy as np

from clef_jax import noise as noise_lib
from clef_jax import preprocess as pp
from clef_jax.data import schema


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """The §D augmentation switches (defaults = the official pretraining pipeline).

  Attributes:
    p_same_lead: probability that view 2 is forced onto view 1's lead.
    bandpass: apply the 0.67-40 Hz Butterworth filtfilt.
    noise: apply the five-way noise choice (identity/motion/electrode/baseline/mixture).
    noise_mat: path of `DATA_noises_real.mat`; None uses `clef_jax.noise.parametric_noise_bank`.
    noise_rms: std (mV) the noise window is rescaled to.
    p_zero_mask: probability of zeroing a span of each view.
    mask_span: range of the masked fraction of the view.
    zscore: per-view z-score.
    faithful: reproduce the official quirks (aVR/aVL/aVF noise -> lead I row, view 2's noise row
      from its originally drawn lead, filter designed for 500 Hz, no resampling).
    target_fs: rate the views are produced at (the models' contract is 500 Hz).
  """

  p_same_lead: float = 0.8
  bandpass: bool = True
  noise: bool = True
  noise_mat: str | None = None
  noise_rms: float = noise_lib.NOISE_RMS
  p_zero_mask: float = 0.2
  mask_span: tuple[float, float] = (0.1, 0.3)
  zscore: bool = True
  faithful: bool = False
  target_fs: float = pp.OFFICIAL_FS


_NOISE_BANKS: dict[str | None, noise_lib.NoiseBank] = {}


def noise_bank(noise_mat: str | None) -> noise_lib.NoiseBank:
  """Process-local cache of the noise bank (loaded lazily in each grain worker, never pickled)."""
  if noise_mat not in _NOISE_BANKS:
    _NOISE_BANKS[noise_mat] = (
      noise_lib.load_noise_mat(noise_mat) if noise_mat else noise_lib.parametric_noise_bank()
    )
  return _NOISE_BANKS[noise_mat]


@dataclasses.dataclass(frozen=True)
class _AddIndex(grain.experimental.MapWithIndexTransform):
  """Stores the record's position in the data source (grain passes epoch-offset indices)."""

  num_records: int

  def map_with_index(self, index: int, record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "index": index % self.num_records}  # a copy: sources may cache dicts


@dataclasses.dataclass(frozen=True)
class TwoViews(grain.transforms.RandomMap):
  """One decoded record -> its two raw views and every random draw of the §D chain.

  Output (per record): `raw` `(2, window)` float32 mV (NaN interpolated, resampled, zero-padded),
  `valid` (samples of real signal), `same` (view 2 is view 1's lead, so one filter serves both),
  `leads` `(2,)`, noise `kind`/`row`/`start` `(2,)`, mask `mask_start`/`mask_len` `(2,)`, `risk`,
  `rate_meta`, `index`.
  """

  augment: AugmentConfig = AugmentConfig()
  window: int = schema.WINDOW_SAMPLES
  lead_policy: str = "random"

  def random_map(self, record: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    aug = self.augment
    if self.lead_policy == "random":
      lead1, lead2, drawn2 = pp.select_leads(record["lead_mask"], rng, aug.p_same_lead)
    else:
      lead1 = lead2 = drawn2 = schema.lead_index(self.lead_policy)
    fs = float(record["sampling_rate"])
    resample = not aug.faithful and fs != aug.target_fs
    # Native samples needed for `window` samples at the target rate (all of a shorter record).
    native = math.ceil(self.window * fs / aug.target_fs) if resample else self.window
    leads = [lead1] if lead1 == lead2 else [lead1, lead2]
    signal = record["signal"]
    digital = np.stack([signal[:native, lead] for lead in leads])  # (k, n) int16, used leads only
    x = schema.to_physical(digital, record["gain"][leads, None], record["baseline"][leads, None])
    x = pp.interpolate_nan(x)
    if resample:
      x = pp.resample(x, fs, aug.target_fs)[:, : self.window]
    valid = x.shape[-1]
    raw = np.zeros((2, self.window), np.float32)
    raw[:, :valid] = x[[0, -1]]  # row 0 twice when both views share a lead

    draws = np.zeros((2, 5), np.int64)  # per view: kind, row, start, mask_start, mask_len
    bank = noise_bank(aug.noise_mat) if aug.noise else None
    for v, (lead, noise_lead) in enumerate([(lead1, lead1), (lead2, drawn2)]):
      if bank is not None:
        kind, start = noise_lib.draw_noise(rng, bank, valid)
        row = noise_lib.noise_row(noise_lead if aug.faithful else lead, faithful=aug.faithful)
        draws[v, :3] = kind, row, start
      draws[v, 3:] = pp.draw_zero_mask(rng, valid, aug.p_zero_mask, aug.mask_span)
    metadata = record["metadata"]
    return {
      "raw": raw,
      "valid": np.int32(valid),
      "same": np.bool_(lead1 == lead2),
      "leads": np.array([lead1, lead2], np.int32),
      "kind": draws[:, 0],
      "row": draws[:, 1],
      "start": draws[:, 2],
      "mask_start": draws[:, 3],
      "mask_len": draws[:, 4],
      "risk": np.float32(metadata[schema.RISK_INDEX]),
      "rate_meta": np.float32(metadata[schema.RATE_META_INDEX]),
      "index": np.int64(record["index"]),
    }


@dataclasses.dataclass(frozen=True)
class AugmentBatch(grain.transforms.Map):
  """A batch of `TwoViews` outputs -> model inputs, with the deterministic work vectorised.

  Output: `views` `(B, 2, window)` float32, `risk` `(B,)`, `rate_meta` `(B,)`, `index` `(B,)`
  int32, `leads` `(B, 2)` int32.
  """

  augment: AugmentConfig = AugmentConfig()

  def map(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    aug = self.augment
    raw = batch["raw"]  # (B, 2, L) float32
    b, _, length = raw.shape
    valid = batch["valid"]
    x = raw.astype(np.float64)
    if aug.bandpass:
      full = valid == length
      # View 1 of every record, view 2 only where its lead differs: ~1.2 filters per record.
      todo = [(i, 0) for i in np.flatnonzero(full)] + [
        (i, 1) for i in np.flatnonzero(full & ~batch["same"])
      ]
      if todo:
        rows, cols = np.array(todo).T
        x[rows, cols] = pp.bandpass(raw[rows, cols], aug.target_fs, faithful=aug.faithful)
      for i in np.flatnonzero(~full):  # Short records: filter the real part only.
        n = int(valid[i])
        if n > 33:  # filtfilt's default padding needs more than 3 * 11 samples.
          x[i, :, :n] = pp.bandpass(raw[i, :, :n], aug.target_fs, faithful=aug.faithful)
      same = np.flatnonzero(batch["same"])
      x[same, 1] = x[same, 0]
    flat = x.reshape(2 * b, length)  # view-major within each record: row 2i + v
    valid2 = np.repeat(valid, 2)
    if aug.noise:
      kinds, rows, starts = (batch[k].reshape(-1) for k in ("kind", "row", "start"))
      bank = noise_bank(aug.noise_mat)
      if (valid == length).all():
        flat += noise_lib.noise_windows(bank, kinds, rows, starts, length, aug.noise_rms)
      else:
        for r in np.flatnonzero(valid2 > 0):
          n = int(valid2[r])
          flat[r, :n] += noise_lib.noise_windows(
            bank, kinds[r : r + 1], rows[r : r + 1], starts[r : r + 1], n, aug.noise_rms
          )[0]
    for r in np.flatnonzero(batch["mask_len"].reshape(-1)):  # ~20 % of the views
      start = batch["mask_start"].reshape(-1)[r]
      flat[r, start : start + batch["mask_len"].reshape(-1)[r]] = 0.0
    if aug.zscore:
      if (valid == length).all():
        flat = pp.zscore(flat)
      else:
        for r in np.flatnonzero(valid2 > 0):
          n = int(valid2[r])
          flat[r, :n] = pp.zscore(flat[r, :n])
    for r in np.flatnonzero(valid2 < length):  # zero padding of short records
      flat[r, valid2[r] :] = 0.0
    return {
      "views": flat.reshape(b, 2, length).astype(np.float32),
      "risk": batch["risk"],
      "rate_meta": batch["rate_meta"],
      "index": batch["index"].astype(np.int32),
      "leads": batch["leads"],
    }


def load_data_source(
  name: str, *, split: str, data_dir: str | os.PathLike | None = None, lean: bool = True
):
  """Random-access source of a built dataset, e.g. `name="synthetic_ecg/default"`.

  Like `tfds.data_source(name, split=..., data_dir=...)`, with two differences:

  - It reads through TFDS's read-only builder (the files' own `dataset_info.json`), never a
    registered builder class, so the source pickles into grain workers without the
    `clef_jax.datasets.<name>` code being imported there.
  - `lean=True` wraps the serialized examples in `LeanSource`, which decodes only the six fields
    the pipeline reads (~30 % cheaper than TFDS's generic decode of every feature).

  A path to a built version directory (`.../synthetic_ecg/default/1.0.0`) works too.
  """
  import tensorflow_datasets as tfds  # Lazy: heavy import.
  from tensorflow_datasets.core import read_only_builder

  if os.path.isdir(name):
    builder = read_only_builder.builder_from_directory(name)
  else:
    kwargs = {"data_dir": os.fspath(data_dir)} if data_dir else {}
    builder = read_only_builder.builder_from_files(name, **kwargs)
  signal = builder.info.features["signal"]
  encoding = str(getattr(signal, "_encoding", "")).lower().rsplit(".", 1)[-1]
  if lean and (
    signal.np_dtype == np.int16
    and signal.shape == (None, schema.NUM_LEADS)
    and encoding in ("zlib", "bytes")
  ):
    raw = builder.as_data_source(
      split=split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES
    )
    return LeanSource(raw, zlib_signal=encoding == "zlib")
  return builder.as_data_source(split=split)


def decode_record(serialized: bytes, *, zlib_signal: bool = True) -> dict[str, Any]:
  """Decodes the fields the pipeline reads from a serialized TFDS example (`tf.train.Example`).

  Args:
    serialized: one record as stored by TFDS.
    zlib_signal: the `signal` tensor is zlib-encoded (the shared schema) rather than raw bytes.

  Returns:
    `signal` `(T, 12)` int16, `gain`/`baseline` `(12,)` float32, `lead_mask` `(12,)` bool,
    `sampling_rate` float32 and `metadata` `(11,)` float32, as TFDS's decode would.
  """
  from tensorflow_datasets.proto import tf_example_pb2  # Lazy; plain protobuf, no TensorFlow.

  f = tf_example_pb2.Example.FromString(serialized).features.feature
  signal = f["signal"].bytes_list.value[0]
  signal = np.frombuffer(zlib.decompress(signal) if zlib_signal else signal, np.int16)
  floats = lambda key: np.array(f[key].float_list.value, np.float32)  # noqa: E731
  return {
    "signal": signal.reshape(-1, schema.NUM_LEADS),
    "gain": floats("gain"),
    "baseline": floats("baseline"),
    "lead_mask": np.array(f["lead_mask"].int64_list.value, np.int64).astype(bool),
    "sampling_rate": np.float32(f["sampling_rate"].float_list.value[0]),
    "metadata": floats("metadata"),
  }


@dataclasses.dataclass(frozen=True)
class LeanSource:
  """Random-access source over serialized TFDS examples that decodes with `decode_record`."""

  raw: Any
  zlib_signal: bool = True

  def __len__(self) -> int:
    return len(self.raw)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return decode_record(self.raw[index], zlib_signal=self.zlib_signal)


def make_pretrain_dataset(
  *,
  data_source,
  global_batch_size: int,
  seed: int,
  process_index: int = 0,
  process_count: int = 1,
  num_epochs: int | None = None,
  augment: AugmentConfig = AugmentConfig(),
  window: int = schema.WINDOW_SAMPLES,
  lead_policy: str = "random",
) -> grain.MapDataset:
  """The per-process `MapDataset` of augmented batches (everything up to `to_iter_dataset`).

  Args:
    data_source: random-access source of decoded records (`load_data_source`, or any sequence of
      dicts with the `schema.record_features` keys).
    global_batch_size: records per step over all processes; divisible by `process_count`.
    seed: pipeline seed (shuffle order and every augmentation draw).
    process_index: this process (`jax.process_index()` in training).
    process_count: number of processes.
    num_epochs: passes over the data; None repeats forever.
    augment: augmentation switches.
    window: samples per view (at `augment.target_fs`).
    lead_policy: "random" (docs/method.md §D sampling) or a lead name (e.g. "II") for both views.

  Returns:
    `MapDataset` whose elements are per-process batches (see `AugmentBatch`).
  """
  if global_batch_size % process_count:
    raise ValueError(
      f"global_batch_size {global_batch_size} is not divisible by process_count {process_count}."
    )
  if lead_policy != "random":
    schema.lead_index(lead_policy)  # Fail early on a bad name.
  ds = grain.MapDataset.source(data_source)
  ds = ds.map_with_index(_AddIndex(len(data_source)))
  ds = ds.seed(seed).shuffle().repeat(num_epochs)
  ds = ds.random_map(TwoViews(augment=augment, window=window, lead_policy=lead_policy))
  ds = ds[process_index::process_count]
  ds = ds.batch(global_batch_size // process_count, drop_remainder=True)
  return ds.map(AugmentBatch(augment=augment))


def make_pretrain_iterator(
  *,
  data_source,
  global_batch_size: int,
  seed: int,
  process_index: int = 0,
  process_count: int = 1,
  num_workers: int = 0,
  num_epochs: int | None = None,
  augment: AugmentConfig = AugmentConfig(),
  window: int = schema.WINDOW_SAMPLES,
  lead_policy: str = "random",
  sharding=None,
  read_threads: int = 2,
  device_prefetch: int = 2,
) -> grain.DatasetIterator:
  """Iterator over pretraining batches; `get_state()`/`set_state()` restore its position.

  Args:
    data_source: see `make_pretrain_dataset`.
    global_batch_size: records per step over all processes.
    seed: pipeline seed.
    process_index: this process.
    process_count: number of processes.
    num_workers: grain worker processes (0: in this process, with `read_threads` threads).
    num_epochs: passes over the data; None repeats forever.
    augment: augmentation switches.
    window: samples per view.
    lead_policy: "random" or a lead name.
    sharding: a `NamedSharding` over a ("data",) mesh. Given, batches become global `jax.Array`s
      built with `jax.make_array_from_process_local_data` (leading axis sharded); None yields
      per-process numpy batches.
    read_threads: threads computing batches in each process (grain `ReadOptions.num_threads`).
    device_prefetch: batches transferred ahead of use when `sharding` is given (0: none).

  Returns:
    A grain `DatasetIterator` of dicts: `views` `(B, 2, window)` float32, `risk` `(B,)`,
    `rate_meta` `(B,)`, `index` `(B,)`, `leads` `(B, 2)`; B is global when `sharding` is given.
    Save it with Orbax as `grain.checkpoint.CheckpointSave(iterator)`.
  """
  ds = make_pretrain_dataset(
    data_source=data_source,
    global_batch_size=global_batch_size,
    seed=seed,
    process_index=process_index,
    process_count=process_count,
    num_epochs=num_epochs,
    augment=augment,
    window=window,
    lead_policy=lead_policy,
  )
  it = ds.to_iter_dataset(
    grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=2 * max(read_threads, 1))
  )
  if num_workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  if sharding is not None:
    import jax  # Lazy: the numpy path (workers, benchmarks) does not need it.

    def to_global(batch):
      return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch
      )

    it = it.map(to_global)
    if device_prefetch > 0:
      it = grain.experimental.ThreadPrefetchIterDataset(it, prefetch_buffer_size=device_prefetch)
  return iter(it)
