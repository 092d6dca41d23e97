"""The architecture descriptions: importable without JAX or torch, consistent presets."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from clef_jax import arch
from clef_jax.arch import msformer as msformer_arch
from clef_jax.arch import net1d as net1d_arch

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_imports_without_jax_flax_or_torch():
  code = (
    "import sys\n"
    "for m in ('jax', 'flax', 'torch'): sys.modules[m] = None\n"
    "from clef_jax.arch import msformer, net1d\n"
    "from clef_jax.export import msformer_interop, net1d_layout\n"
    "assert len(net1d_layout.state_dict_table('small')) == 257\n"
    "assert msformer_interop.param_table('small')[0].flax_shape == (10, 32)\n"
  )
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  proc = subprocess.run(
    [sys.executable, "-c", code],
    cwd=REPO_ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 0, proc.stderr


def test_presets_cover_every_size():
  assert set(net1d_arch.VARIANTS) == set(msformer_arch.VARIANTS) == set(arch.SIZES)
  for name in arch.SIZES:  # Both backbones give the same embedding width per size.
    assert net1d_arch.VARIANTS[name].features == msformer_arch.VARIANTS[name].features


def test_net1d_block_specs_by_name_or_variant():
  for name, v in net1d_arch.VARIANTS.items():
    specs = list(net1d_arch.block_specs(name))
    assert specs == list(net1d_arch.block_specs(v))
    assert len(specs) == sum(v.m_blocks_list)
    assert specs[0]["is_first"] and not any(s["is_first"] for s in specs[1:])
    assert specs[-1]["out_ch"] == v.features
  with pytest.raises(ValueError, match="Unknown Net1D size 'tiny'"):
    list(net1d_arch.block_specs("tiny"))
  with pytest.raises(ValueError, match="Unknown Net1D size 'tiny'"):
    net1d_arch.check_size("tiny")


def test_msformer_heads_divide_widths_into_even_head_dims():
  for v in msformer_arch.VARIANTS.values():
    assert len(v.widths) == len(v.depths) == len(v.num_heads) == v.num_stages
    assert all(w % h == 0 and (w // h) % 2 == 0 for w, h in zip(v.widths, v.num_heads))
  with pytest.raises(ValueError, match="Unknown MSFormer size"):
    msformer_arch.variant("tiny")
  with pytest.raises(ValueError, match="even head dimension"):
    msformer_arch.rope_tables(4, 0, 7)


def test_rope_tables_against_direct_formula():
  cos, sin = msformer_arch.rope_tables(5, 2, 8, base=100.0)
  pos = (np.arange(5) + 0.5) * 4 - 0.5
  angles = pos[:, None] * 100.0 ** (-np.arange(4) * 2 / 8)[None, :]
  np.testing.assert_allclose(cos, np.cos(angles), rtol=1e-6)
  np.testing.assert_allclose(sin, np.sin(angles), rtol=1e-6, atol=1e-7)
  assert cos.dtype == sin.dtype == np.float32
