"""Optimiser and schedule against PyTorch's AdamW and CosineAnnealingWarmRestarts (docs/method.md §E.1)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from clef_jax import optim

torch = pytest.importorskip("torch")


def _torch_scheduler(base_lr=1e-4, t0=10, t_mult=2, eta_min=1e-6):
  opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr)
  sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
    opt, T_0=t0, T_mult=t_mult, eta_min=eta_min
  )
  return opt, sched


def test_per_epoch_schedule_matches_torch():
  spe, epochs = 3, 160  # past the restarts at 10, 30, 70 and 150
  opt, sched = _torch_scheduler()
  want = []
  for _ in range(epochs):  # Lightning's interval="epoch": one sched.step() per epoch
    want.append(opt.param_groups[0]["lr"])
    opt.step()
    sched.step()
  _, lr_fn = optim.make_optimizer(steps_per_epoch=spe)
  got = np.asarray(jax.jit(jax.vmap(lr_fn))(jnp.arange(epochs * spe)))
  np.testing.assert_allclose(got, np.repeat(want, spe), rtol=2e-6)
  # lr is constant within an epoch, restarts to the base lr at epochs 10, 30, 70, 150.
  for e in (0, 10, 30, 70, 150):
    np.testing.assert_allclose(got[e * spe : (e + 1) * spe], 1e-4, rtol=1e-6)
  assert got[9 * spe] < 4e-6 and got[29 * spe] < 2e-6


@pytest.mark.parametrize("t0,t_mult", [(10, 2), (3, 1), (2, 3)])
def test_per_step_schedule_matches_torch_fractional_epochs(t0, t_mult):
  spe, epochs = 7, 45
  opt, sched = _torch_scheduler(t0=t0, t_mult=t_mult)
  want = []
  for step in range(epochs * spe):
    epoch, i = divmod(step, spe)
    sched.step(epoch + i / spe)  # torch docs' per-iteration recipe
    want.append(opt.param_groups[0]["lr"])
  _, lr_fn = optim.make_optimizer(steps_per_epoch=spe, interval="step", t0=t0, t_mult=t_mult)
  got = np.asarray(jax.jit(jax.vmap(lr_fn))(jnp.arange(epochs * spe)))
  np.testing.assert_allclose(got, want, rtol=2e-6)


def test_schedule_formula_and_constant():
  _, lr_fn = optim.make_optimizer(steps_per_epoch=1)
  # Epoch 45 lies in the third cycle (30..70, length 40): T_cur = 15.
  want = 1e-6 + (1e-4 - 1e-6) * (1 + math.cos(math.pi * 15 / 40)) / 2
  np.testing.assert_allclose(lr_fn(45), want, rtol=1e-6)
  _, const = optim.make_optimizer(schedule="constant", learning_rate=3e-4)
  assert float(const(12345)) == pytest.approx(3e-4)
  with pytest.raises(ValueError, match="steps_per_epoch"):
    optim.make_optimizer()
  with pytest.raises(ValueError, match="Unknown schedule"):
    optim.make_optimizer(schedule="linear", steps_per_epoch=1)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_adamw_matches_torch_with_changing_lr(dtype):
  """Same updates as torch.optim.AdamW under the same (changing) lr, decay on every param.

  float64 isolates the semantics (the residual ~2e-9 comes from our float32 lr values). In
  float32 both sides round `1 - b2**t` (~1e-5 relative at t = 1) differently, so one Adam step
  of size lr agrees to ~1e-5 of lr.
  """
  rng = np.random.default_rng(0)
  params = {
    "w": rng.standard_normal((5, 3)).astype(dtype),
    "b": rng.standard_normal((3,)).astype(dtype),
  }
  grads = [
    {k: rng.standard_normal(v.shape).astype(dtype) for k, v in params.items()} for _ in range(8)
  ]
  hp = dict(learning_rate=1e-2, weight_decay=5e-2, b1=0.9, b2=0.999, eps=1e-8)
  sched = dict(t0=2, t_mult=2, eta_min=1e-4)

  # torch: AdamW on all params (biases included), scheduler stepped once per "epoch" = step.
  tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
  opt = torch.optim.AdamW(
    list(tp.values()),
    lr=hp["learning_rate"],
    weight_decay=hp["weight_decay"],
    betas=(hp["b1"], hp["b2"]),
    eps=hp["eps"],
  )
  ts = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
    opt, T_0=sched["t0"], T_mult=sched["t_mult"], eta_min=sched["eta_min"]
  )
  for g in grads:
    for k, p in tp.items():
      p.grad = torch.tensor(g[k])
    opt.step()
    ts.step()

  with jax.enable_x64(dtype == "float64"):
    tx, lr_fn = optim.make_optimizer(steps_per_epoch=1, **hp, **sched)
    assert len({float(lr_fn(s)) for s in range(len(grads))}) > 3  # the lr really changes
    p, state = jax.tree.map(jnp.asarray, params), tx.init(params)

    @jax.jit
    def update(p, state, g):
      u, state = tx.update(g, state, p)
      return optax.apply_updates(p, u), state

    for g in grads:
      p, state = update(p, state, g)
    atol = 1e-8 if dtype == "float64" else 1e-6
    for k in params:
      assert p[k].dtype == dtype
      np.testing.assert_allclose(p[k], tp[k].detach().numpy(), rtol=0, atol=atol)


def test_defaults_are_the_reference():
  tx, lr_fn = optim.make_optimizer(steps_per_epoch=10)
  p = {"w": jnp.ones(2)}
  u, _ = tx.update({"w": jnp.zeros(2)}, tx.init(p), p)
  # Zero gradient: the update is pure decoupled decay, -lr * wd * p.
  np.testing.assert_allclose(u["w"], -1e-4 * 5e-4, rtol=1e-6)
  np.testing.assert_allclose(lr_fn(0), 1e-4, rtol=1e-7)
