"""Each technique against a reference: closed forms, exact zeros, dropout/batch-norm semantics, early stopping."""

import pytest
import torch
from conftest import tiny
from torch import nn

from sweeper import config, regularizers
from sweeper.models import MLP
from sweeper.module import RegularizedModule
from sweeper.trial import prepare, run_trial


def known_mlp():
    torch.manual_seed(0)
    model = MLP((4,), 3, [5], dropout=0.0)
    for i, p in enumerate(model.parameters()):
        with torch.no_grad():
            p.copy_(torch.linspace(-1, 1, p.numel()).reshape(p.shape) * (i + 1))
    return model


def test_l1_and_l2_penalty_equal_closed_form_over_weights_only():
    model = known_mlp()
    weights = regularizers.weight_parameters(model)
    assert len(weights) == 2 and all(w.dim() == 2 for w in weights)  # no biases
    l1 = regularizers.L1({"l1": 0.01, "proximal": False})
    l2 = regularizers.L2({"l2": 0.02})
    expected_l1 = 0.01 * sum(w.abs().sum().item() for w in weights)
    expected_l2 = 0.02 * sum((w**2).sum().item() for w in weights)
    assert l1.penalty(weights).item() == pytest.approx(expected_l1)
    assert l2.penalty(weights).item() == pytest.approx(expected_l2)
    active = regularizers.build({"l1": 0.01, "l2": 0.02})
    assert regularizers.label(active) == "elastic_net"
    module = RegularizedModule(model, active, config.OptimConfig(), 32)
    assert module.penalty().item() == pytest.approx(expected_l1 + expected_l2)


def test_proximal_l1_gives_exact_zeros_and_more_than_l2():
    results = {}
    for name, overrides in {
        "prox": ["regularizer=l1", "regularizer.l1=1e-4", "regularizer.proximal=true"],  # the l1 option's default strength
        "l2": ["regularizer=l2", "regularizer.l2=0.1"],
    }.items():
        cfg = config.load(tiny("trainer.max_epochs=3", *overrides))
        results[name] = run_trial(cfg).metrics
    assert results["prox"]["sparsity_zero"] > 0.01
    assert results["prox"]["sparsity_zero"] > results["l2"]["sparsity_zero"]


def test_proximal_step_is_soft_threshold():
    w = torch.tensor([[-0.5, -0.01, 0.0, 0.02, 0.3]])
    regularizers.L1({"l1": 0.1, "proximal": True}).after_step([w], lr=0.2)  # no optimizer state: threshold lr*l1 = 0.02
    assert torch.allclose(w, torch.tensor([[-0.48, 0.0, 0.0, 0.0, 0.28]]))


def _one_step(opt_name, w0, g, lr, lam):
    """One optimizer step on loss = sum(g * w) (gradient g), then the proximal L1 step with the optimizer's state."""
    w = torch.nn.Parameter(w0.clone())
    opt = {
        "adam": lambda: torch.optim.Adam([w], lr=lr),
        "adamw": lambda: torch.optim.AdamW([w], lr=lr, weight_decay=0.0),
        "sgd": lambda: torch.optim.SGD([w], lr=lr, momentum=0.9),
    }[opt_name]()
    opt.zero_grad()
    (g * w).sum().backward()
    opt.step()
    regularizers.L1({"l1": lam, "proximal": True}).after_step([w], lr, opt)
    return w.detach()


def soft(x, t):
    return torch.sign(x) * torch.clamp(x.abs() - t, min=0.0)


@pytest.mark.parametrize("opt_name", ["adam", "adamw"])
def test_proximal_l1_with_adam_thresholds_each_weight_by_its_own_step(opt_name):
    """Closed form after Adam's first step: m_hat = g, v_hat = g^2, so the update is lr*g/(|g|+eps) and the
    proximal threshold is lr*lambda/(|g|+eps), per weight: weights with small gradients get large thresholds."""
    w0 = torch.tensor([0.05, -0.02, 0.3, -0.4, 0.001])
    g = torch.tensor([1e-3, -2e-2, 0.5, -1.0, 1e-4])
    lr, lam, eps = 1e-2, 1e-3, 1e-8
    step = lr / (g.abs() + eps)
    expected = soft(w0 - step * g, step * lam)
    assert torch.allclose(_one_step(opt_name, w0, g, lr, lam), expected, atol=1e-7)
    flat = soft(w0 - step * g, lr * lam)  # the old rule: a flat lr*lambda misses Adam's per-weight steps
    assert not torch.allclose(expected, flat)


def test_proximal_l1_with_sgd_uses_lr_times_lambda():
    w0 = torch.tensor([0.05, -0.02, 0.3])
    g = torch.tensor([0.1, -0.2, 0.5])
    lr, lam = 0.1, 0.5
    assert torch.allclose(_one_step("sgd", w0, g, lr, lam), soft(w0 - lr * g, lr * lam), atol=1e-7)


def test_ghost_batch_norm_uses_sub_batch_statistics_in_training_and_running_stats_in_eval():
    from sweeper.models import GhostBatchNorm1d

    torch.manual_seed(0)
    x = torch.randn(9, 3) + torch.arange(9.0)[:, None]  # sub-batches with different means
    ghost = GhostBatchNorm1d(3, momentum=0.1, ghost=4)
    plain = torch.nn.BatchNorm1d(3, momentum=0.1)
    out = ghost.train()(x)
    # chunks of 4, 4 and 1 -> the single trailing row joins the previous chunk: 4 + 5
    expected = torch.cat([plain.train()(x[:4]), plain.train()(x[4:])])
    assert torch.allclose(out, expected, atol=1e-6)
    assert not torch.allclose(out, torch.nn.BatchNorm1d(3).train()(x), atol=1e-3)
    ghost.eval()
    assert torch.allclose(ghost(x), (x - ghost.running_mean) / torch.sqrt(ghost.running_var + ghost.eps), atol=1e-5)


def test_dropout_identity_in_eval_and_keeps_expected_activation_in_train():
    torch.manual_seed(0)
    with_dropout = MLP((20,), 4, [50, 30], dropout=0.5)
    plain = MLP((20,), 4, [50, 30], dropout=0.0)
    linears = lambda m: [layer for layer in m.modules() if isinstance(layer, nn.Linear)]
    for src, dst in zip(linears(with_dropout), linears(plain)):
        dst.load_state_dict(src.state_dict())
    x = torch.randn(64, 20)
    with_dropout.eval(), plain.eval()
    assert torch.equal(with_dropout(x), plain(x))  # every unit, unscaled, at inference
    drop = nn.Dropout(0.3).train()
    ones = torch.ones(200_000)
    out = drop(ones)
    assert out.mean().item() == pytest.approx(1.0, abs=0.01)  # inverted: scaled by 1/(1-p) in training
    assert out.unique().tolist() == pytest.approx([0.0, 1 / 0.7])
    kinds = [type(m).__name__ for m in with_dropout.net]
    assert kinds[:4] == ["Flatten", "Linear", "ReLU", "Dropout"]  # after the activation


def test_batchnorm_before_activation_uses_running_stats_in_eval_and_adds_no_loss():
    active = regularizers.build({"batchnorm": True})
    assert [r.name for r in active] == ["batchnorm"]
    model = MLP((6,), 2, [4], **active[0].model_options())
    kinds = [type(m).__name__ for m in model.net]
    assert kinds == ["Flatten", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    bn = model.net[2]
    model.train()
    model(torch.randn(32, 6) * 3 + 1)  # updates running statistics
    model.eval()
    x = torch.randn(1, 6)
    h = model.net[1](x)
    expected = (h - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    assert torch.allclose(bn(h), expected, atol=1e-6)
    assert RegularizedModule(model, active, config.OptimConfig(), 32).penalty() is None


def test_early_stopping_stops_on_plateau_and_restores_best_epoch():
    cfg = config.load(
        tiny("trainer.max_epochs=30", "optim.lr=1e-6", "regularizer=early_stopping", "regularizer.patience=2", "regularizer.min_delta=0.01")
    )
    r = run_trial(cfg)
    m = r.metrics
    assert m["stopped_early"] == 1.0 and m["epochs_trained"] < 30
    best = m["restored_epoch"] - 1  # the last epoch that improved val_loss by at least min_delta
    assert best < m["epochs_trained"] - 1
    later = [h["val_loss"] for h in r.history[best + 1 :]]
    assert all(v > r.history[best]["val_loss"] - 0.01 for v in later)
    assert m["val_loss"] == pytest.approx(r.history[best]["val_loss"], rel=1e-5)


def test_early_stopping_restores_weights_of_best_epoch_not_last():
    cfg = config.load(
        tiny(
            "trainer.max_epochs=12", "optim.lr=0.05", "regularizer=early_stopping", "regularizer.patience=2", "regularizer.monitor=val_acc"
        )
    )
    r = run_trial(cfg)
    accs = [h["val_acc"] for h in r.history]
    assert r.metrics["val_acc"] == pytest.approx(accs[r.metrics["restored_epoch"] - 1])
    assert r.metrics["val_acc"] == pytest.approx(max(accs))


def test_weight_decay_and_l2_penalty_give_different_adam_updates():
    def one_step(overrides):
        cfg = config.load(tiny(*overrides))
        active = regularizers.build(dict(cfg.regularizer), "adam")
        torch.manual_seed(0)
        model = MLP((8,), 3, [6])
        module = RegularizedModule(model, active, cfg.optim, 32)
        opt = module.configure_optimizers()
        x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
        loss = nn.functional.cross_entropy(model(x), y)
        pen = module.penalty()
        (loss if pen is None else loss + pen).backward()
        opt.step()
        return type(opt).__name__, [p.detach().clone() for p in model.parameters()]

    opt_l2, after_l2 = one_step(["regularizer=l2", "regularizer.l2=0.1"])
    opt_wd, after_wd = one_step(["regularizer=weight_decay", "regularizer.weight_decay=0.1"])
    assert (opt_l2, opt_wd) == ("Adam", "AdamW")
    assert any(not torch.allclose(a, b) for a, b in zip(after_l2, after_wd))


def test_techniques_combine():
    cfg = config.load(tiny("regularizer=[dropout,l2,early_stopping]", "regularizer.p=0.3"))
    prepared = prepare(cfg)
    assert prepared.technique == "l2+dropout+early_stopping"
    r = run_trial(cfg, prepared=prepared)
    assert r.status == "completed" and r.metrics["n_params"] > 0


def test_same_config_and_seed_give_same_metrics():
    cfg = config.load(tiny("regularizer=dropout"))
    a, b = run_trial(cfg).metrics, run_trial(cfg).metrics
    timing = {"train_time_s", "epoch_time_s", "inference_ms_per_1k"}
    assert {k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}
