"""The networks of Gaussian RAM (ICCAS 2020), one ``nn.Module`` each; :mod:`gdram.models.gdram` wires them.

Shapes: B batch, C image channels, S retina scales, g glimpse size, N hidden size, K classes.
Locations are (x, y) in [-1, 1] image coordinates (the retina op's convention).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SIGMA_LOW = math.exp(-0.5)  # sigma = exp(tanh(.) / 2) lies in (e^-1/2, e^1/2) (eq. 11)
SIGMA_HIGH = math.exp(0.5)
LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def conv_layers(in_channels: int, channels: tuple[int, int]) -> list[nn.Module]:
    """Two 3x3 conv + BatchNorm + ReLU + 2x2 max-pool layers: (B, in, h, w) -> (B, channels[1], h/4, w/4)."""
    first, second = channels
    return [
        nn.Conv2d(in_channels, first, kernel_size=3, padding=1),
        nn.BatchNorm2d(first),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(first, second, kernel_size=3, padding=1),
        nn.BatchNorm2d(second),
        nn.ReLU(),
        nn.MaxPool2d(2),
    ]


class GlimpseNetwork(nn.Module):
    """Eq. 4: z_t = ReLU(z_image * z_loc), the glimpse feature.

    z_image = FC(CNN(retina glimpse)): two 3x3 conv + BatchNorm + ReLU + 2x2 max-pool layers
    (``channels``), flattened, then a linear layer to N. z_loc = Linear(ReLU(Linear(l))), N wide.

    ``forward(glimpse (B, S*C, g, g), location (B, 2)) -> (B, N)``.
    """

    def __init__(self, in_channels: int, glimpse_size: int, channels: tuple[int, int], hidden_size: int) -> None:
        super().__init__()
        self.image_cnn = nn.Sequential(*conv_layers(in_channels, channels))
        pooled = glimpse_size // 2 // 2
        self.image_fc = nn.Linear(channels[1] * pooled * pooled, hidden_size)
        self.location_mlp = nn.Sequential(nn.Linear(2, hidden_size), nn.ReLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, glimpse: torch.Tensor, location: torch.Tensor) -> torch.Tensor:
        z_image = self.image_fc(self.image_cnn(glimpse).flatten(1))
        z_location = self.location_mlp(location)
        return F.relu(z_image * z_location)


class CoreNetwork(nn.Module):
    """Eq. 5-6: one LSTM core, (h_t, c_t) = LSTM(x_t, (h_{t-1}, c_{t-1})).

    The lower core takes z_t, the upper core the lower core's h_t.
    ``forward(x (B, I), state ((B, N), (B, N))) -> ((B, N), (B, N))``.
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(input_size, hidden_size)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cell(x, state)


class ContextNetwork(nn.Module):
    """The upper core's initial hidden state h2_0 from the whole image, as in DRAM.

    The image is resized to g x g (``mode``), then two 3x3 conv + ReLU + 2x2 max-pool layers
    and a linear layer to N. ``forward(images (B, C, H, W)) -> (B, N)``.
    """

    def __init__(self, in_channels: int, glimpse_size: int, channels: int, hidden_size: int, mode: str) -> None:
        super().__init__()
        self.glimpse_size = glimpse_size
        self.mode = mode
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, channels, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(channels, channels, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        pooled = glimpse_size // 2 // 2
        self.fc = nn.Linear(channels * pooled * pooled, hidden_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        size = (self.glimpse_size, self.glimpse_size)
        if self.mode == "area":
            small = F.adaptive_avg_pool2d(images, size)
        elif self.mode == "bilinear":
            small = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        else:
            small = F.interpolate(images, size=size, mode="nearest")
        return self.fc(self.features(small).flatten(1))


class EmissionNetwork(nn.Module):
    """Eq. 7 and 11: the location policy pi(Δl | h) = N(mu, sigma^2) on the core state h.

    u = ReLU(BatchNorm(Linear(h))) (without the BatchNorm unless ``batch_norm``); mu = tanh(Linear(u)); when
    ``learned_sigma``,
    log sigma = mid + half * tanh(Linear(u)) with [mid - half, mid + half] = [log low, log high]
    of ``sigma_range`` (the paper's exp(tanh / 2) for (e^-1/2, e^1/2)), else sigma = ``fixed_sigma``.
    With ``sample`` the action is mu + sigma * noise, clipped to [-1, 1]; otherwise it is mu.
    ``log_prob`` is the log-density, summed over (x, y), of the clipped action (the published
    code) or, with ``unclipped_log_prob``, of the sample before the clip (unbiased REINFORCE).
    ``zero_init_mu`` starts the mu head at zero (mu = 0 for every input). With
    ``straight_through_mean`` the gradient passes the tanh of mu as the identity (a saturated mu
    still learns).

    ``forward(h (B, N), sample) -> (action (B, 2), log_prob (B,), sigma (B, 2), mu (B, 2))``. The
    action carries no gradient, unless ``reparameterized``: then it is a differentiable function
    of mu and sigma (mu + sigma * noise, the reparameterisation trick), so a loss that depends on
    where the glimpse is (through the retina) trains the policy directly. Whether h is detached
    is the caller's choice (``policy_trains``).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        learned_sigma: bool,
        fixed_sigma: float,
        sigma_range: tuple[float, float] = (SIGMA_LOW, SIGMA_HIGH),
        unclipped_log_prob: bool = False,
        zero_init_mu: bool = False,
        reparameterized: bool = False,
        batch_norm: bool = True,
        straight_through_mean: bool = False,
    ) -> None:
        super().__init__()
        norm = nn.BatchNorm1d(hidden_size) if batch_norm else nn.Identity()
        self.hidden = nn.Sequential(nn.Linear(input_size, hidden_size), norm, nn.ReLU())
        self.mu = nn.Linear(hidden_size, 2)
        self.log_var = nn.Linear(hidden_size, 2) if learned_sigma else None
        self.fixed_sigma = fixed_sigma
        low, high = math.log(sigma_range[0]), math.log(sigma_range[1])
        self.log_sigma_mid, self.log_sigma_half = (low + high) / 2, (high - low) / 2
        self.unclipped_log_prob = unclipped_log_prob
        self.reparameterized = reparameterized
        self.straight_through_mean = straight_through_mean
        if zero_init_mu:
            nn.init.zeros_(self.mu.weight)
            nn.init.zeros_(self.mu.bias)

    def fix_sigma(self, sigma: float) -> None:
        """Make every move's sigma ``sigma``, learned or not (a measurement's override, e.g.
        :mod:`gdram.analysis.alignment`)."""
        self.fixed_sigma = sigma
        self.log_sigma_mid, self.log_sigma_half = math.log(sigma), 0.0

    def forward(self, h: torch.Tensor, sample: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        u = self.hidden(h)
        mu_logit = self.mu(u)
        dtype = torch.promote_types(mu_logit.dtype, torch.float32)  # the policy's math in >= float32 (autocast)
        mu_logit = mu_logit.to(dtype)
        mu = torch.tanh(mu_logit)
        if self.straight_through_mean:
            mu = mu_logit + (mu - mu_logit).detach()
        if self.log_var is None:
            sigma = torch.full_like(mu, self.fixed_sigma)
        else:
            sigma = torch.exp(self.log_sigma_mid + self.log_sigma_half * torch.tanh(self.log_var(u).to(dtype)))
        drawn = mu + sigma * torch.randn_like(mu) if sample else mu
        action = drawn.clamp(-1.0, 1.0)
        taken = (drawn if self.unclipped_log_prob else action).detach()
        log_prob = -(((taken - mu) / sigma) ** 2 / 2 + torch.log(sigma) + LOG_SQRT_2PI)
        return action if self.reparameterized else action.detach(), log_prob.sum(dim=1), sigma, mu


class FixedEmission(nn.Module):
    """A location policy that ignores what it saw, every glimpse weighted 1 (an ablation of learning).

    ``kind="random"``: uniform actions in [-1, 1]^2 (random moves, or random places for RAM);
    ``kind="center"``: action 0 (every glimpse at the image centre). Replaces a GDRAM's emission
    network (same contract): ``forward(h (B, N), sample) -> (action (B, 2), log_prob (B,) zeros,
    sigma (B, 2) = sigma_low, mu (B, 2) = action)``. With no parameters and a constant
    log-probability, the REINFORCE term is 0 and only the glimpse, core, prediction and baseline
    networks learn.
    """

    def __init__(self, kind: str, sigma_low: float) -> None:
        super().__init__()
        if kind not in ("random", "center"):
            raise ValueError(f"kind must be 'random' or 'center', got {kind!r}")
        self.kind, self.sigma_low = kind, sigma_low

    def forward(self, h: torch.Tensor, sample: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        batch = h.shape[0]
        action = h.new_zeros(batch, 2)
        if self.kind == "random":
            action = torch.rand(batch, 2, device=h.device, dtype=h.dtype) * 2 - 1
        return action, h.new_zeros(batch), h.new_full((batch, 2), self.sigma_low), action


class PredictionNetwork(nn.Module):
    """Eq. 10: per-step class logits from the lower core, Linear(ReLU(Linear(h1))).

    ``forward(h1 (B, N)) -> (B, K)``.
    """

    def __init__(self, input_size: int, hidden_size: int, num_classes: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(input_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, num_classes))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.mlp(h)


class BaselineNetwork(nn.Module):
    """Eq. 19-21: the reward baseline b_t = sigmoid(Linear(Linear(h))) on the detached core states.

    As in the published implementation, the two layers have no nonlinearity between them.
    ``forward(h (B, I)) -> (B,)`` in (0, 1); its input is detached, so only the baseline loss trains it.
    ``initial`` in (0, 1): the output layer starts at zero weights and bias logit(initial), so
    b_t = initial for every input at first; None keeps PyTorch's initialisation (about 0.5).
    """

    def __init__(self, input_size: int, hidden_size: int, initial: float | None = None) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(input_size, hidden_size), nn.Linear(hidden_size, 1))
        if initial is not None:
            nn.init.zeros_(self.mlp[1].weight)
            nn.init.constant_(self.mlp[1].bias, math.log(initial / (1 - initial)))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(h.detach())).squeeze(1)


def uncertainty_weight(sigma: torch.Tensor, sigma_range: tuple[float, float] = (SIGMA_LOW, SIGMA_HIGH)) -> torch.Tensor:
    """Eq. 12-15: w = 1 - mean over (x, y) of (sigma - low) / (high - low), (low, high) = ``sigma_range``.

    ``sigma (B, 2)`` in (low, high) (the paper: (e^-1/2, e^1/2)) -> ``(B,)`` in (0, 1); a confident
    move weighs more.
    """
    low, high = sigma_range
    normalised = (sigma - low) / (high - low)
    return 1.0 - normalised.mean(dim=1)
