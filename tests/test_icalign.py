"""In-context alignment lab: causal masks, losses against brute force, the sampler, GD, training and resume."""

from __future__ import annotations

import itertools
import math

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from selfcorrect.icalign.data import sample_batch  # noqa: E402
from selfcorrect.icalign.gd import gd_predictions  # noqa: E402
from selfcorrect.icalign.losses import alignment_loss, bt_nll, pl_nll, training_loss  # noqa: E402
from selfcorrect.icalign.model import ICATransformer, ModelConfig  # noqa: E402

# --- the model: every variant is causal -------------------------------------------------------------------------

VARIANTS = list(itertools.product([True, False], [True, False], [1, 2, 4]))  # softmax × mlp × heads


@pytest.mark.parametrize(("softmax", "mlp", "n_head"), VARIANTS)
def test_causal_mask_does_not_leak(softmax: bool, mlp: bool, n_head: int) -> None:
    torch.manual_seed(0)
    n_points = 5
    model = ICATransformer(ModelConfig(n_points=n_points, n_layer=2, n_head=n_head, n_embd=16, softmax=softmax,
                                       mlp=mlp)).eval()
    tokens = torch.randn(3, 3 * n_points, 5)
    with torch.no_grad():
        before = model(tokens)
        for t in range(1, 3 * n_points):  # change every token from position t on
            changed = tokens.clone()
            changed[:, t:] = torch.randn_like(changed[:, t:]) * 3
            after = model(changed)
            seen = (t + 2) // 3  # predictions 0 … seen−1 sit at x tokens 3i < t
            assert torch.allclose(after[:, :seen], before[:, :seen], atol=1e-6), f"leak from position {t}"
            if seen < n_points:  # and the test has teeth: the first prediction that may see the change does
                assert not torch.allclose(after[:, seen], before[:, seen], atol=1e-4)


def test_predictions_are_read_at_the_x_tokens() -> None:
    """Prediction i sits at x_i (position 3i): changing x_i moves prediction i, while changing y_i or the reward
    after it (positions 3i+1, 3i+2) leaves prediction i alone and first moves prediction i+1."""
    torch.manual_seed(0)
    model = ICATransformer(ModelConfig(n_points=4, n_layer=1, n_head=1, n_embd=8))
    tokens = torch.randn(2, 12, 5)

    def moved(position: int) -> list[bool]:
        changed = tokens.clone()
        changed[:, position] += 3.0
        with torch.no_grad():
            before, after = model(tokens), model(changed)
        return [not torch.allclose(after[:, i], before[:, i], atol=1e-5) for i in range(4)]

    assert model(tokens).shape == (2, 4, 5)
    for i in range(4):
        assert moved(3 * i) == [False] * i + [True] * (4 - i)
        for offset in (1, 2):
            assert moved(3 * i + offset) == [False] * (i + 1) + [True] * (3 - i)


# --- losses against brute force ---------------------------------------------------------------------------------

def _cos(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def _pl_probability(scores: list[float], order: tuple[int, ...]) -> float:
    """P(order) = Π_k exp s_order[k] / Σ_{k' ≥ k} exp s_order[k'], term by term."""
    prob = 1.0
    for k in range(len(order)):
        prob *= math.exp(scores[order[k]]) / sum(math.exp(scores[j]) for j in order[k:])
    return prob


def _example(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(1, n + 1, 3, generator=g, dtype=torch.float64)
    responses = torch.randn(1, n + 1, 3, generator=g, dtype=torch.float64)
    rewards = torch.rand(1, n + 1, generator=g, dtype=torch.float64)
    return pred, responses, rewards


def test_pl_loss_equals_brute_force_ranking_probability() -> None:
    n = 4
    pred, responses, rewards = _example(n, seed=1)
    per_position = alignment_loss(pred, responses, rewards, loss="pl", reward="cosine")
    for i in range(n + 1):  # prediction i ranks responses 0 … i−1
        p = pred[0, i].tolist()
        scores = [_cos(p, responses[0, j].tolist()) for j in range(i)]
        ranking = tuple(sorted(range(i), key=lambda j: -rewards[0, j].item()))
        probs = {perm: _pl_probability(scores, perm) for perm in itertools.permutations(range(i))}
        assert sum(probs.values()) == pytest.approx(1.0)  # a distribution over all i! rankings
        assert per_position[0, i].item() == pytest.approx(-math.log(probs[ranking]), abs=1e-9)


def test_pl_loss_with_negative_mse_reward() -> None:
    pred, responses, rewards = _example(3, seed=2)
    got = alignment_loss(pred, responses, rewards, loss="pl", reward="neg_mse")[0, 3].item()
    p = pred[0, 3].tolist()
    scores = [-sum((a - b) ** 2 for a, b in zip(p, responses[0, j].tolist(), strict=True)) / 3 for j in range(3)]
    ranking = tuple(sorted(range(3), key=lambda j: -rewards[0, j].item()))
    assert got == pytest.approx(-math.log(_pl_probability(scores, ranking)), abs=1e-9)


def test_bt_loss_equals_brute_force_pairs() -> None:
    n = 5
    pred, responses, rewards = _example(n, seed=3)
    per_position = alignment_loss(pred, responses, rewards, loss="bt", reward="cosine")
    for i in range(2, n + 1):
        p = pred[0, i].tolist()
        scores = [_cos(p, responses[0, j].tolist()) for j in range(i)]
        terms = [-math.log(1 / (1 + math.exp(-(scores[j] - scores[k]))))
                 for j in range(i) for k in range(i) if rewards[0, j] > rewards[0, k]]
        assert len(terms) == i * (i - 1) // 2
        assert per_position[0, i].item() == pytest.approx(sum(terms) / len(terms), abs=1e-9)


def test_lists_shorter_than_two_carry_no_loss_and_the_mean_skips_them() -> None:
    pred, responses, rewards = _example(4, seed=4)
    for kind in ("pl", "bt"):
        per_position = alignment_loss(pred, responses, rewards, loss=kind)
        assert per_position[0, :2].abs().max().item() < 1e-12
        assert training_loss(per_position).item() == pytest.approx(per_position[0, 2:].mean().item())


def test_masked_entries_give_finite_gradients() -> None:
    pred, responses, rewards = _example(4, seed=5)
    pred.requires_grad_(True)
    scores = F.cosine_similarity(pred.unsqueeze(2), responses.unsqueeze(1), dim=-1)
    valid = torch.zeros(pred.shape[1], responses.shape[1], dtype=torch.bool)  # every row fully masked
    for nll in (pl_nll, bt_nll):
        loss = nll(scores, rewards, valid).sum()
        (grad,) = torch.autograd.grad(loss, pred, retain_graph=True)
        assert loss.item() == 0.0 and torch.isfinite(grad).all()


# --- the sampler ------------------------------------------------------------------------------------------------

def test_sampler_shapes_rewards_and_responses() -> None:
    b = sample_batch(2000, 10, 5, torch.Generator().manual_seed(0))
    assert b.x.shape == (2000, 5) and b.w_star.shape == b.w_eps.shape == (2000, 5, 5)
    assert b.responses.shape == (2000, 10, 5) and b.rewards.shape == b.shown.shape == (2000, 10)
    assert b.rewards.min() >= 0 and b.rewards.max() < 1
    assert b.rewards.mean().item() == pytest.approx(0.5, abs=0.01)
    assert b.x.mean().item() == pytest.approx(0.0, abs=0.03) and b.x.var().item() == pytest.approx(1.0, abs=0.05)
    assert torch.equal(b.shown, b.rewards)
    # y_i = r_i · x W* + (1 − r_i) · x W_ε, rebuilt sequence by sequence
    for s in range(3):
        good, bad = b.x[s] @ b.w_star[s], b.x[s] @ b.w_eps[s]
        for i in range(10):
            r = b.rewards[s, i]
            assert torch.allclose(b.responses[s, i], r * good + (1 - r) * bad, atol=1e-5)
        assert torch.allclose(b.target[s], good)


def test_token_stream_layout() -> None:
    b = sample_batch(4, 6, 5, torch.Generator().manual_seed(1))
    tokens = b.tokens()
    assert tokens.shape == (4, 18, 5)
    for i in range(6):
        assert torch.equal(tokens[:, 3 * i], b.x)
        assert torch.equal(tokens[:, 3 * i + 1], b.responses[:, i])
        assert torch.equal(tokens[:, 3 * i + 2, 0], b.shown[:, i])
        assert not tokens[:, 3 * i + 2, 1:].any()


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_reward_noise_replaces_the_expected_share_of_shown_rewards_only(p: float) -> None:
    clean = sample_batch(1000, 20, 5, torch.Generator().manual_seed(2))
    noisy = clean.with_noise(p, torch.Generator().manual_seed(3))
    replaced = noisy.shown != clean.rewards
    assert replaced.float().mean().item() == pytest.approx(p, abs=0.01)
    assert torch.equal(noisy.rewards, clean.rewards) and torch.equal(noisy.responses, clean.responses)
    assert torch.equal(noisy.x, clean.x) and torch.equal(noisy.w_star, clean.w_star)
    if p:
        assert noisy.shown[replaced].mean().item() == pytest.approx(0.5, abs=0.02)  # fresh U(0, 1) draws


def test_noise_masks_are_nested_across_rates() -> None:
    clean = sample_batch(200, 20, 5, torch.Generator().manual_seed(4))
    low = clean.with_noise(0.25, torch.Generator().manual_seed(5)).shown != clean.rewards
    high = clean.with_noise(0.5, torch.Generator().manual_seed(5)).shown != clean.rewards
    assert (low & ~high).sum().item() == 0 and high.sum() > low.sum()


# --- the GD reference -------------------------------------------------------------------------------------------

def _gd_error(p: float) -> torch.Tensor:
    b = sample_batch(128, 12, 5, torch.Generator().manual_seed(6)).with_noise(p, torch.Generator().manual_seed(7))
    pred = gd_predictions(b, torch.Generator().manual_seed(8))
    return (1 - F.cosine_similarity(pred, b.target.unsqueeze(1), dim=-1)).mean(0)


def test_gd_reference_improves_with_more_examples_on_clean_data() -> None:
    err = _gd_error(0.0)
    assert err[2] > err[5] > err[11]
    assert err[11] < 0.4 < err[1]  # one example gives no gradient: the fit stays at its random start


def test_gd_reference_learns_nothing_from_random_rewards() -> None:
    assert _gd_error(1.0)[11].item() == pytest.approx(1.0, abs=0.15)


def test_gd_sgd_and_adam_agree_on_clean_data() -> None:
    b = sample_batch(64, 8, 5, torch.Generator().manual_seed(9))
    errs = [(1 - F.cosine_similarity(gd_predictions(b, torch.Generator().manual_seed(1), optimizer=opt, lr=lr),
                                     b.target.unsqueeze(1), dim=-1)).mean(0)[7].item()
            for opt, lr in (("adam", 0.1), ("sgd", 1.0))]
    assert errs[0] == pytest.approx(errs[1], abs=0.03)
