"""Distribution heads against scipy for known parameters."""

import numpy as np
import pytest
import torch
from scipy import stats

from forecasting.distributions import NegativeBinomialHead, StudentTHead, make_head


def head_with_raw(head_cls, raw: list[float]):
    """A head whose projection ignores its input and outputs `raw` (bias only)."""
    head = head_cls(hidden_size=1)
    with torch.no_grad():
        head.proj.weight.zero_()
        head.proj.bias.copy_(torch.tensor(raw))
    return head.requires_grad_(False)


def softplus_inverse(y: float) -> float:
    return float(np.log(np.expm1(y)))


def test_student_t_log_likelihood_matches_scipy():
    df, loc, spread, scale = 5.0, 2.0, 0.5, 10.0
    head = head_with_raw(StudentTHead, [softplus_inverse(df - 2.0), loc, softplus_inverse(spread)])
    dist = head(torch.zeros(1, 1), torch.tensor([[scale]]))
    x = torch.tensor([[-5.0, 20.0, 33.0]]).T  # broadcast over three points
    expected = stats.t.logpdf(x.numpy(), df, loc=loc * scale, scale=spread * scale)
    np.testing.assert_allclose(dist.log_prob(x).numpy(), expected, rtol=1e-4)


def test_student_t_sample_quantiles_match_scipy():
    df, loc, spread = 4.0, 1.0, 2.0
    head = head_with_raw(StudentTHead, [softplus_inverse(df - 2.0), loc, softplus_inverse(spread)])
    n = 200_000
    draws = head.sample(torch.zeros(n, 1), torch.ones(n, 1), torch.Generator().manual_seed(0)).numpy()
    for q in (0.05, 0.25, 0.5, 0.75, 0.95):
        assert np.quantile(draws, q) == pytest.approx(stats.t.ppf(q, df, loc=loc, scale=spread), abs=0.03)


def test_negative_binomial_log_likelihood_matches_scipy():
    mu_scaled, alpha_raw, scale = 1.5, 0.2, 4.0
    head = head_with_raw(NegativeBinomialHead, [softplus_inverse(mu_scaled), softplus_inverse(alpha_raw)])
    dist = head(torch.zeros(1, 1), torch.tensor([[scale]]))
    mu = mu_scaled * scale
    alpha = alpha_raw / np.sqrt(scale)
    n, p = 1 / alpha, 1 / (1 + alpha * mu)  # scipy: mean n(1-p)/p = mu
    counts = torch.tensor([[0.0, 3.0, 6.0, 15.0]]).T
    np.testing.assert_allclose(dist.log_prob(counts).numpy(), stats.nbinom.logpmf(counts.numpy(), n, p), rtol=1e-4)
    assert float(dist.mean) == pytest.approx(mu, rel=1e-5)


def test_negative_binomial_sample_quantiles_match_scipy():
    head = head_with_raw(NegativeBinomialHead, [softplus_inverse(6.0), softplus_inverse(0.3)])
    n_draws = 200_000
    draws = head.sample(torch.zeros(n_draws, 1), torch.ones(n_draws, 1), torch.Generator().manual_seed(1)).numpy()
    assert (draws == np.round(draws)).all() and draws.min() >= 0
    n, p = 1 / 0.3, 1 / (1 + 0.3 * 6.0)
    for q in (0.1, 0.5, 0.9):
        assert np.quantile(draws, q) == stats.nbinom.ppf(q, n, p)


def test_sampling_is_reproducible_with_a_seeded_generator():
    head = head_with_raw(StudentTHead, [0.0, 0.0, 0.0])
    a = head.sample(torch.zeros(50, 1), torch.ones(50, 1), torch.Generator().manual_seed(7))
    b = head.sample(torch.zeros(50, 1), torch.ones(50, 1), torch.Generator().manual_seed(7))
    c = head.sample(torch.zeros(50, 1), torch.ones(50, 1), torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_unknown_distribution_name():
    with pytest.raises(ValueError, match="unknown distribution 'gaussian'"):
        make_head("gaussian", 4)


@pytest.mark.parametrize("df", [2.2, 4.0, 30.0])
def test_the_path_sampler_draws_student_t_quantiles_in_scaled_units_for_every_step(df):
    """Prediction's sampler (Bailey's polar method, uniforms drawn for all steps up front) against
    scipy: values are in mean-scaled units, so the series scale must not show in them."""
    loc, spread, n, horizon = -0.5, 1.5, 200_000, 3
    head = head_with_raw(StudentTHead, [softplus_inverse(df - 2.0), loc, softplus_inverse(spread)])
    draw = head.path_sampler(torch.full((n, 1), 40.0), horizon, torch.Generator().manual_seed(4))
    steps = [draw(torch.zeros(n, 1), at).numpy() for at in range(horizon)]
    for values in steps:
        for q in (0.01, 0.1, 0.5, 0.9, 0.99):
            expected = stats.t.ppf(q, df, loc=loc, scale=spread)
            assert np.quantile(values, q) == pytest.approx(expected, abs=0.02 + 0.02 * abs(expected - loc))
    assert np.corrcoef(steps[0], steps[1])[0, 1] == pytest.approx(0.0, abs=0.01)  # fresh noise each step


def test_the_student_t_training_loss_is_minus_torchs_log_prob_in_value_and_gradient():
    """`nll` writes StudentT.log_prob out by hand (for speed); it must be the same function."""
    torch.manual_seed(0)
    head = StudentTHead(hidden_size=5).double()
    features = torch.randn(7, 4, 5, dtype=torch.float64, requires_grad=True)
    scale = torch.rand(1, 4, 1, dtype=torch.float64) * 50 + 0.1
    target = torch.randn(7, 4, dtype=torch.float64) * 30
    ours, torchs = head.nll(features, scale, target), -head(features, scale).log_prob(target)
    torch.testing.assert_close(ours, torchs, rtol=1e-12, atol=1e-12)
    inputs = [features, *head.parameters()]
    for a, b in zip(torch.autograd.grad(ours.sum(), inputs), torch.autograd.grad(torchs.sum(), inputs), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
