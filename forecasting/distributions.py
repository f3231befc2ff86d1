"""Distribution heads: map the RNN's output to a distribution over the next demand value.

Each head works on mean-scaled data but returns distributions over *unscaled* demand, so the loss
is an honest log-likelihood of what was observed and samples come out in demand units.
"""

from __future__ import annotations

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

    def sample(self, features: torch.Tensor, scale: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError


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

    def sample(self, features: torch.Tensor, scale: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        # t = loc + spread * z / sqrt(g / df), z ~ N(0,1), g ~ Chi2(df) = 2 * Gamma(df/2, 1); drawn with an
        # explicit generator so forecasts are reproducible without touching the global RNG, and
        # without building a distribution object each step.
        df, loc, spread = self.parameters_of(self.proj(features), scale)
        z = torch.randn(loc.shape, generator=generator, dtype=loc.dtype, device=loc.device)
        g = 2.0 * torch._standard_gamma(df / 2.0, generator=generator)
        return torch.addcmul(loc, spread, z * torch.rsqrt(g / df))


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

