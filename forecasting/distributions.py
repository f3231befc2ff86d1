"""Distribution heads: map the RNN's output to a distribution over the next demand value.

Each head works on mean-scaled data but returns distributions over *unscaled* demand, so the loss
is an honest log-likelihood of what was observed and samples come out in demand units.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.distributions import Distribution, NegativeBinomial, StudentT
from torch.nn.functional import softplus


class DistributionHead(nn.Module):
    """Projects features `[..., hidden]` to a distribution given the per-series `scale` `[..., 1]`."""

    num_args: int

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden_size, self.num_args)

    def forward(self, features: torch.Tensor, scale: torch.Tensor) -> Distribution:
        return self.distribution(self.proj(features), scale)

    def distribution(self, raw: torch.Tensor, scale: torch.Tensor) -> Distribution:
        raise NotImplementedError

    def nll(self, features: torch.Tensor, scale: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of `target` (demand units), elementwise: the training loss."""
        return -self(features, scale).log_prob(target)

    def sample(self, features: torch.Tensor, scale: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def path_sampler(self, scale: torch.Tensor, horizon: int,
                     generator: torch.Generator | None) -> Callable[[torch.Tensor, int], torch.Tensor]:
        """For ancestral sampling of `horizon` steps of rows whose series scale is `scale` `[rows, 1]`:
        a function `(features [rows, hidden], step) -> next values [rows]` in *mean-scaled* units
        (what the network feeds back as lags). A head may draw all steps' randomness up front."""
        return lambda features, step: self.sample(features, scale, generator) / scale[:, 0]


def student_t_noise(df: torch.Tensor, minus_two_log_u: torch.Tensor, cosine: torch.Tensor) -> torch.Tensor:
    """Standard Student-t draws with `df` degrees of freedom by Bailey's polar method (Math. Comp. 62,
    1994): T = cos(2 pi V) * sqrt(df * (U^(-2/df) - 1)) for independent uniforms U in (0, 1], V.
    Exact, like Box-Muller for the normal, and the uniforms do not depend on `df`, so a path sampler
    draws every step's uniforms in one call before it knows the degrees of freedom; a step then
    costs a few vectorised ops instead of a serial Gamma draw (`_standard_gamma`, ~30 ns a value)."""
    return torch.sqrt(df * torch.expm1(minus_two_log_u / df)) * cosine


def polar_uniforms(shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """`-2 log U` and `cos(2 pi V)` for `student_t_noise`, each of `shape`."""
    u = torch.rand((2, *shape), generator=generator, dtype=like.dtype, device=like.device)
    return -2.0 * torch.log1p(-u[0]), torch.cos((2.0 * math.pi) * u[1])  # 1 - u[0] lies in (0, 1]


class StudentTHead(DistributionHead):
    """Student-t with learned degrees of freedom (> 2, so the variance exists); heavy tails suit spiky load."""

    num_args = 3

    @staticmethod
    def parameters_of(raw: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Degrees of freedom, location and spread in demand units."""
        scale = scale.squeeze(-1)
        # One softplus over the contiguous raw block: on a strided column it runs ~8x slower on CPU,
        # and prediction calls this once per step.
        positive = softplus(raw)
        return 2.0 + positive[..., 0], raw[..., 1] * scale, (positive[..., 2] + 1e-6) * scale

    def distribution(self, raw: torch.Tensor, scale: torch.Tensor) -> StudentT:
        # Arguments are valid by construction (softplus): the checks would add a few tensor ops per call
        # for nothing. (What the data must be for a head is checked once, before training.)
        return StudentT(*self.parameters_of(raw, scale), validate_args=False)

    def nll(self, features: torch.Tensor, scale: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # The closed form of StudentT.log_prob, written out: building the distribution also builds a
        # Chi2 and a Gamma whose constructors check their arguments regardless, a dozen or so small
        # tensor ops a step for a formula that needs none of them (equality with torch's log_prob,
        # value and gradient, is tested). Worked in mean-scaled units; log(scale) turns the density
        # back into one over demand units.
        raw = self.proj(features)
        positive = softplus(raw)
        half_df = 1.0 + 0.5 * positive[..., 0]  # df = 2 + softplus, so df / 2 = 1 + softplus / 2
        spread = positive[..., 2] + 1e-6
        scale = scale.squeeze(-1)
        z = (target / scale - raw[..., 1]) / spread
        return ((half_df + 0.5) * torch.log1p(z.square() / (2.0 * half_df)) + torch.log(spread * scale)
                + 0.5 * torch.log(half_df) + torch.lgamma(half_df) - torch.lgamma(half_df + 0.5)
                + 0.5 * math.log(2.0 * math.pi))

    def sample(self, features: torch.Tensor, scale: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        # Drawn with an explicit generator so forecasts are reproducible without touching the global
        # RNG, and without building a distribution object.
        df, loc, spread = self.parameters_of(self.proj(features), scale)
        return torch.addcmul(loc, spread, student_t_noise(df, *polar_uniforms(tuple(loc.shape), generator, loc)))

    def path_sampler(self, scale: torch.Tensor, horizon: int,
                     generator: torch.Generator | None) -> Callable[[torch.Tensor, int], torch.Tensor]:
        minus_two_log_u, cosine = polar_uniforms((horizon, scale.shape[0]), generator, scale)
        weight, bias = self.proj.weight, self.proj.bias[:, None]

        def step(features: torch.Tensor, at: int) -> torch.Tensor:
            # Parameters-major ([3, rows]): each of df, loc and spread is one contiguous row. Values stay
            # mean-scaled (loc and spread unscaled), which is what the network feeds back.
            raw = torch.addmm(bias, weight, features.T)
            positive = softplus(raw[0::2])
            noise = student_t_noise(positive[0] + 2.0, minus_two_log_u[at], cosine[at])
            return torch.addcmul(raw[1], positive[1] + 1e-6, noise)

        return step


class NegativeBinomialHead(DistributionHead):
    """Negative binomial for counts (requests, jobs): mean `mu`, shape `alpha` (variance mu + alpha mu²)."""

    num_args = 2

    def distribution(self, raw: torch.Tensor, scale: torch.Tensor) -> NegativeBinomial:
        scale = scale.squeeze(-1)
        mu = (softplus(raw[..., 0]) + 1e-6) * scale
        # Shape scaled like GluonTS: larger series get proportionally less over-dispersion.
        alpha = (softplus(raw[..., 1]) + 1e-6) / torch.sqrt(scale)
        total_count = 1.0 / alpha
        return NegativeBinomial(total_count=total_count, logits=torch.log(mu) - torch.log(total_count),
                                validate_args=False)

    def sample(self, features: torch.Tensor, scale: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        # Gamma–Poisson mixture: rate ~ Gamma(r, r/mu), count ~ Poisson(rate).
        d = self(features, scale)
        r = d.total_count
        mu = r * torch.exp(d.logits)
        rate = torch._standard_gamma(r, generator=generator) * (mu / r)
        return torch.poisson(rate, generator=generator)


HEADS: dict[str, type[DistributionHead]] = {
    "student_t": StudentTHead,
    "negative_binomial": NegativeBinomialHead,
}


def make_head(name: str, hidden_size: int) -> DistributionHead:
    if name not in HEADS:
        raise ValueError(f"unknown distribution {name!r}; choose one of {sorted(HEADS)}")
    return HEADS[name](hidden_size)

