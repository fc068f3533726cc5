"""The GDRAM family: ``GDRAM`` (every attention variant), ``CNNBaseline`` and their ``GlimpseResult``.

One forward pass (eq. 1-16 of Gaussian RAM, ICCAS 2020), for t = 0 .. T-1:

1. the emission network, on the upper core's state, moves the eye: l_0 = clip(a_0) from the
   context-initialised core, then l_{t+1} = clip(l_t + m * Δl_t) (eq. 9, l_t detached), with m
   half the largest scale's normalised width and the clip keeping the smallest scale inside
   the image (with ``config.moves="absolute"``: l_{t+1} = clip(a_{t+1}));
2. the retina takes a multi-scale glimpse at l_t, the glimpse network encodes it with l_t;
3. the lower core reads it, the upper core reads the lower core's h;
4. the prediction network gives step logits from the lower core, the baseline network b_t;
5. the weight of glimpse t is 1 for t = 0, else the uncertainty weight of the move that placed it.

The final logits are the weighted average of the step logits (eq. 16). The forward makes no
host-device synchronisation and creates no CPU tensor, except F-GDRAM's stopping check.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from gdram.models.config import GDRAMConfig
from gdram.models.networks import (
    BaselineNetwork,
    ContextNetwork,
    CoreNetwork,
    EmissionNetwork,
    FixedEmission,
    GlimpseNetwork,
    PredictionNetwork,
    conv_layers,
    uncertainty_weight,
)
from gdram_ext import RetinaGlimpse

FAST_THRESHOLD = 0.5  # F-GDRAM stops once two consecutive weights are below this


class GlimpseResult(NamedTuple):
    """What a GDRAM-family forward returns (T steps, B samples, K classes).

    Attributes:
        logits: (B, K) the final prediction, sum_t w_t * step_logits_t / sum_t w_t (eq. 16).
        step_logits: (T, B, K) the prediction network's logits after each glimpse.
        locations: (T, B, 2) centre (x, y) in [-1, 1] of each glimpse.
        log_probs: (T, B) log-probability of the move that placed glimpse t (for t = 0, of the
            initial location's emission).
        baselines: (T, B) the reward baseline of the move that placed glimpse t, in (0, 1): read
            from the state after glimpse t (the paper), or with ``baseline_before_move`` from the
            state the emission network read to make that move.
        weights: (T, B) weight of glimpse t: 1 for t = 0, else from the sigma of the move that
            placed it; in (0, 1]. With ``fast=True``, 0 for the steps a sample no longer uses.
        sigmas: (T, B, 2) standard deviation of the move that placed glimpse t.
        glimpses_used: (B,) int64, glimpses that count in ``logits`` (T unless ``fast=True``).
        mean_locations: (T, B, 2) where the policy's mean would have placed glimpse t, before the
            clip (the target of location guidance; equal to ``locations`` inside the image when
            the policy is not sampled).

    With ``fast=True`` the batch keeps running until every sample has stopped, so a finished
    sample's later entries in ``step_logits``, ``locations``, ``log_probs``, ``baselines`` and
    ``sigmas`` hold that ignored continuation; its ``weights`` there are 0 and its ``logits``
    are those at its stop. Mask with ``weights > 0`` or ``glimpses_used``.

    ``CNNBaseline`` looks once at the whole image (T = 1: weight 1, centre location, zero sigma)
    and makes no move, so its ``log_probs`` and ``baselines`` have shape (0, B).
    """

    logits: torch.Tensor
    step_logits: torch.Tensor
    locations: torch.Tensor
    log_probs: torch.Tensor
    baselines: torch.Tensor
    weights: torch.Tensor
    sigmas: torch.Tensor
    glimpses_used: torch.Tensor
    mean_locations: torch.Tensor


def check_images(images: torch.Tensor, config: GDRAMConfig) -> None:
    """Raise ``TypeError``/``ValueError`` unless ``images`` is a float (B, C, H, W) batch matching ``config``."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(f"images must have a floating dtype, got {images.dtype}")
    expected = (config.in_channels, *config.image_hw)
    if images.dim() != 4 or tuple(images.shape[1:]) != expected:
        raise ValueError(f"images must have shape (B, {', '.join(map(str, expected))}), got {tuple(images.shape)}")
    if images.shape[0] < 1:
        raise ValueError("images must hold at least one sample")


class GDRAM(nn.Module):
    """Gaussian Deep Recurrent Attention Model and its ablations (``config.variant``).

    ``GDRAM(GDRAMConfig(num_classes=10))`` is the paper's model (1,134,799 parameters).
    ``forward(images (B, C, H, W), fast=False, sample=None, locations=None) -> GlimpseResult``;
    ``fast=True`` (evaluation only) is F-GDRAM: a sample stops after the first glimpse t >= 2
    whose weight and its predecessor's are both below 0.5, and the loop ends once every sample
    has stopped (this check is the forward's only host-device synchronisation). ``sample``: draw
    the moves from the policy (default: in training mode) or follow its mean. ``locations``
    (B, 2): look there at every step instead of asking the policy (the oracle and fixed
    policies; log-probabilities and sigmas 0, weights 1); ``locations`` (T, B, 2): glimpse t there,
    with the policy's own mean of each step in ``mean_locations`` (the salient warm-up's guidance).

    ``retina`` (``forward(images, locations (B, 2)) -> (B, S*C, g, g)``) may be replaced by any
    module with the same contract.
    """

    def __init__(self, config: GDRAMConfig | None = None) -> None:
        super().__init__()
        config = GDRAMConfig() if config is None else config
        spec = config.spec
        self.config = config
        hidden = config.hidden_size
        self.retina = RetinaGlimpse(
            config.glimpse_size, config.num_scales, config.scale_factor, config.retina_mode, config.retina_base_size
        )
        self.glimpse = GlimpseNetwork(
            config.num_scales * config.in_channels, config.glimpse_size, config.glimpse_channels, hidden
        )
        self.lower_core = CoreNetwork(hidden, hidden)
        self.upper_core = CoreNetwork(hidden, hidden) if spec.two_cores else None
        self.context = None
        if spec.two_cores:
            self.context = ContextNetwork(
                config.in_channels, config.glimpse_size, config.context_channels, hidden, config.context_mode
            )
        self.emission = EmissionNetwork(
            hidden,
            config.mlp_hidden_size,
            spec.learned_sigma,
            config.fixed_sigma,
            config.sigma_range,
            config.unclipped_log_prob,
            config.zero_init_mu,
            config.location_gradient,
            config.emission_batch_norm,
            config.straight_through_mean,
        )
        self.prediction = PredictionNetwork(hidden, config.mlp_hidden_size, config.num_classes)
        self.baseline = BaselineNetwork(
            hidden * (2 if spec.two_cores else 1), config.mlp_hidden_size, config.baseline_init
        )
        height, width = config.image_hw
        # Half the smallest scale's width, normalised to [-1, 1], per coordinate (x: W, y: H).
        half_smallest = torch.tensor([config.glimpse_size / width, config.glimpse_size / height])
        self.register_buffer("location_bound", 1.0 - half_smallest, persistent=False)
        self.register_buffer(
            "move_scale", half_smallest * config.scale_factor ** (config.num_scales - 1), persistent=False
        )

    def clip_location(self, location: torch.Tensor) -> torch.Tensor:
        """Clip (B, 2) locations to [-1 + g', 1 - g'], g' half the smallest scale's normalised width."""
        return torch.clamp(location, min=-self.location_bound, max=self.location_bound)

    def move(self, location: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Eq. 9: the next (B, 2) location from the current one and the emission's action in [-1, 1].

        Relative moves: l + m * Δl with m half the largest scale's normalised width, l detached;
        absolute ones (RAM, or ``config.moves="absolute"``): the action itself. Both clipped by :meth:`clip_location`.
        """
        return self.clip_location(self.unclipped_move(location, action))

    @property
    def relative_moves(self) -> bool:
        """Whether a move is relative (eq. 9): the variant's design and ``config.moves``."""
        return self.config.spec.relative_moves and self.config.moves == "relative"

    def unclipped_move(self, location: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Eq. 9 before the clip: l + m * Δl (l detached) for relative moves, the action itself for absolute ones."""
        if self.relative_moves:
            return location.detach() + self.move_scale * action
        return action

    def policy_modules(self) -> list[nn.Module]:
        """The modules that only the policy gradient trains (``config.policy_trains``; the
        ``policy_lr_scale`` group): the emission network, and with ``"where"`` on two cores the
        upper core and the context network."""
        if self.config.policy_trains == "emission" or self.upper_core is None:
            return [self.emission]
        return [self.emission, self.upper_core, self.context]

    def policy(self, lower_h: torch.Tensor, upper_h: torch.Tensor | None, sample: bool):
        """The emission network on the state ``policy_trains`` lets it read: (action, log_prob, sigma, mu).

        With ``bounded_mean`` and absolute moves, action and mu are scaled by the location bound
        (sigma and the log-density stay the emission network's: the scale shifts log pi by a constant).
        """
        h = lower_h if upper_h is None else upper_h
        action, log_prob, sigma, mu = self.emission(
            h.detach() if self.config.policy_trains == "emission" else h, sample
        )
        if self.config.bounded_mean and not self.relative_moves:
            action, mu = action * self.location_bound, mu * self.location_bound
        return action, log_prob, sigma, mu

    def step_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """Eq. 12-15 on the sigma (B, 2) of the move that placed a glimpse: (B,), 1 without learned sigma."""
        if not self.config.spec.learned_sigma:
            return sigma.new_ones(sigma.shape[0])
        return uncertainty_weight(sigma if self.config.weight_trains_sigma else sigma.detach(), self.config.sigma_range)

    def forward(
        self,
        images: torch.Tensor,
        fast: bool = False,
        sample: bool | None = None,
        locations: torch.Tensor | None = None,
    ) -> GlimpseResult:
        check_images(images, self.config)
        if fast and self.training:
            raise ValueError("fast=True (F-GDRAM) is an evaluation mode: call model.eval() first")
        if self.training and images.shape[0] < 2:
            raise ValueError("training needs a batch of at least 2 images (the emission network's BatchNorm)")
        batch, steps = images.shape[0], self.config.num_glimpses
        if locations is not None and tuple(locations.shape) not in ((batch, 2), (steps, batch, 2)):
            raise ValueError(
                f"locations must have shape ({batch}, 2) or ({steps}, {batch}, 2), got {tuple(locations.shape)}"
            )
        per_step = None
        if locations is not None and locations.dim() == 3:  # a place per glimpse; the policy's means alongside
            per_step = self.clip_location(locations.to(images.dtype))
        sample = self.training if sample is None else sample
        lower = (images.new_zeros(batch, self.config.hidden_size), images.new_zeros(batch, self.config.hidden_size))
        upper = None
        if self.context is not None:
            upper = (self.context(images), images.new_zeros(batch, self.config.hidden_size))
        before_move = self.baseline(lower[0] if upper is None else torch.cat((lower[0], upper[0]), dim=1))
        if locations is None:
            action, log_prob, sigma, mean = self.policy(lower[0], None if upper is None else upper[0], sample)
            location = self.clip_location(action)
        elif per_step is not None:
            mean = self.policy(lower[0], None if upper is None else upper[0], False)[3]
            location = per_step[0]
            log_prob, sigma = images.new_zeros(batch), images.new_zeros(batch, 2)
        else:
            fixed = self.clip_location(locations.to(images.dtype))
            location, mean = fixed, fixed
            log_prob, sigma = images.new_zeros(batch), images.new_zeros(batch, 2)
        weight = images.new_ones(batch)
        if fast:  # which samples still look, and how many glimpses each has used
            active = torch.ones(batch, dtype=torch.bool, device=images.device)
            used = torch.zeros(batch, dtype=torch.int64, device=images.device)
        else:
            active = None
            used = torch.full((batch,), steps, dtype=torch.int64, device=images.device)
        previous_weight = weight
        names = ("step_logits", "locations", "log_probs", "baselines", "weights", "sigmas", "mean_locations")
        outputs: dict[str, list[torch.Tensor]] = {name: [] for name in names}
        where_input_detached = self.config.policy_trains == "where"
        for t in range(steps):
            glimpse = self.retina(images, location if self.config.location_gradient else location.detach())
            z = self.glimpse(glimpse, location.detach())
            lower = self.lower_core(z, lower)
            if upper is not None:
                upper = self.upper_core(lower[0].detach() if where_input_detached else lower[0], upper)
                state = torch.cat((lower[0], upper[0]), dim=1)
            else:
                state = lower[0]
            outputs["step_logits"].append(self.prediction(lower[0]))
            outputs["locations"].append(location)
            outputs["log_probs"].append(log_prob)
            after_glimpse = self.baseline(state)
            outputs["baselines"].append(before_move if self.config.baseline_before_move else after_glimpse)
            before_move = after_glimpse
            outputs["sigmas"].append(sigma)
            outputs["mean_locations"].append(mean)
            if active is None:
                outputs["weights"].append(weight)
            else:
                outputs["weights"].append(weight * active)
                used = used + active
                low = (weight < FAST_THRESHOLD) & (previous_weight < FAST_THRESHOLD)
                active = active & ~low
                if t >= 2 and t + 1 < steps and not bool(active.any()):  # the documented sync
                    break
            if t + 1 < steps and per_step is not None:
                mu = self.policy(lower[0], None if upper is None else upper[0], False)[3]
                mean = self.unclipped_move(location, mu)
                location = per_step[t + 1]
            if t + 1 < steps and locations is None:
                action, log_prob, sigma, mu = self.policy(lower[0], None if upper is None else upper[0], sample)
                mean = self.unclipped_move(location, mu)
                location = self.move(location, action)
                previous_weight = weight
                weight = self.step_weight(sigma)
        stacked = {name: torch.stack(values) for name, values in outputs.items()}
        weights = stacked["weights"]
        logits = (weights.unsqueeze(2) * stacked["step_logits"]).sum(0) / weights.sum(0).unsqueeze(1)
        return GlimpseResult(logits=logits, glimpses_used=used, **stacked)


class CNNBaseline(nn.Module):
    """The paper's non-attentive baseline: a 2-layer CNN on the whole image, about GDRAM's size.

    Two 3x3 conv + BatchNorm + ReLU + 2x2 max-pool layers (``glimpse_channels``), adaptive
    average pooling to ``cnn_pool_size`` squared, Linear + ReLU to N, then the prediction network.
    ``forward(images (B, C, H, W), fast=False, sample=None, locations=None) -> GlimpseResult`` with
    T = 1 (see there); ``fast``, ``sample`` and ``locations`` are accepted for interface parity and
    change nothing.
    """

    def __init__(self, config: GDRAMConfig | None = None) -> None:
        super().__init__()
        config = GDRAMConfig(variant="cnn") if config is None else config
        self.config = config
        second = config.glimpse_channels[1]
        pool = config.cnn_pool_size
        self.features = nn.Sequential(
            *conv_layers(config.in_channels, config.glimpse_channels),
            nn.AdaptiveAvgPool2d(pool),
            nn.Flatten(),
            nn.Linear(second * pool * pool, config.hidden_size),
            nn.ReLU(),
        )
        self.prediction = PredictionNetwork(config.hidden_size, config.mlp_hidden_size, config.num_classes)

    def forward(
        self,
        images: torch.Tensor,
        fast: bool = False,
        sample: bool | None = None,
        locations: torch.Tensor | None = None,
    ) -> GlimpseResult:
        check_images(images, self.config)
        logits = self.prediction(self.features(images))
        batch = images.shape[0]
        return GlimpseResult(
            logits=logits,
            step_logits=logits.unsqueeze(0),
            locations=images.new_zeros(1, batch, 2),
            log_probs=images.new_zeros(0, batch),
            baselines=images.new_zeros(0, batch),
            weights=images.new_ones(1, batch),
            sigmas=images.new_zeros(1, batch, 2),
            glimpses_used=torch.ones(batch, dtype=torch.int64, device=images.device),
            mean_locations=images.new_zeros(1, batch, 2),
        )


def create_model(config: GDRAMConfig) -> GDRAM | CNNBaseline:
    """The model of ``config``: ``CNNBaseline`` for the ``"cnn"`` variant, else ``GDRAM`` with the
    location ``config.policy``.

    ``"learned"`` and ``"oracle"``: the emission network (the oracle's locations are given at
    run time by :func:`gdram.training.attention.run_policy`); ``"random"``/``"center"``: a
    :class:`~gdram.models.networks.FixedEmission` in its place.
    """
    if config.variant == "cnn":
        return CNNBaseline(config)
    model = GDRAM(config)
    if config.policy in ("random", "center"):
        model.emission = FixedEmission(config.policy, config.sigma_range[0])
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``model``."""
    return sum(parameter.numel() for parameter in model.parameters())


MAX_PARAMETERS = 10**9  # a larger model is a typo (or a label that is no class index), not an experiment


def check_model_size(config: GDRAMConfig, owner: str = "the model") -> None:
    """Refuse a model of more than :data:`MAX_PARAMETERS` parameters, counted without allocating it.

    ``owner`` names where ``config`` came from in the message (a checkpoint file, the flags).

    Raises:
        ValueError: the model is larger than the limit.
    """
    with torch.device("meta"):
        count = count_parameters(create_model(config))
    if count > MAX_PARAMETERS:
        raise ValueError(
            f"{owner} would have {count:,} parameters (at most {MAX_PARAMETERS:,}) with "
            f"{config.num_classes:,} classes and hidden size {config.hidden_size}; check the data's "
            "labels and --hidden-size"
        )
