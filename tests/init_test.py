"""`models.init.init_params` draws from the same distributions as the modules' own `init`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clef_jax.models import create_backbone
from clef_jax.models import init as models_init


def _flat(tree):
  return {
    jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


@pytest.mark.parametrize("name", ["net1d", "msformer"])
def test_same_tree_and_distributions_as_module_init(name, fast_compiles):
  model = create_backbone(name, "small")
  shape = (1, 200, 1)
  fast = _flat(models_init.init_params(model, jax.random.key(0), shape))
  ref = _flat(jax.jit(model.init)(jax.random.key(1), jnp.zeros(shape))["params"])
  assert fast.keys() == ref.keys()
  for key, value in ref.items():
    got = fast[key]
    assert got.shape == value.shape and got.dtype == np.float32, key
    # Same support: never outside the reference initialiser's bound (uniform) or 2 std (truncated).
    if name == "net1d":
      kernel = ref[key.replace("['bias']", "['kernel']")]
      bound = 1.0 / np.sqrt(np.prod(kernel.shape[:-1]))
      assert np.abs(got).max() <= bound * (1 + 1e-6), key
    if np.all(value == value.flat[0]):  # zeros / ones initialisers: exactly equal
      np.testing.assert_array_equal(got, value, err_msg=key)
    elif value.size >= 2000:  # enough samples for a 10 % std comparison
      np.testing.assert_allclose(got.std(), value.std(), rtol=0.1, err_msg=key)
      assert abs(got.mean()) < 0.1 * value.std() + 1e-3, key


def test_pure_and_jittable():
  model = create_backbone("net1d", "small")
  f = jax.jit(lambda r: models_init.init_params(model, r, (1, 64, 1)))
  a, b = _flat(f(jax.random.key(3))), _flat(f(jax.random.key(3)))
  c = _flat(f(jax.random.key(4)))
  assert all(np.array_equal(a[k], b[k]) for k in a)
  assert not all(np.array_equal(a[k], c[k]) for k in a)
