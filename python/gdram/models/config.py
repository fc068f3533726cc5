"""``GDRAMConfig``: every hyper-parameter of the GDRAM family, validated and JSON round-trippable.

``GDRAMConfig()`` is the paper's model (Gaussian RAM, ICCAS 2020): T = 8 glimpses of 4 scales
of 12x12 (factor 2) on 128x128 RGB images, two LSTM cores of 128, 10 classes, trained with the
``"robust"`` recipe; ``GDRAMConfig(recipe="paper")`` is the published code's recipe, bit for bit.
``GDRAMConfig(**dataclasses.asdict(cfg)) == cfg`` holds, also after a JSON trip (lists come
back as tuples).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from gdram_ext.contract import MODES as RETINA_MODES

VARIANTS = ("gdram", "dram", "gram", "ram", "ram-dl", "cnn")
CONTEXT_MODES = ("nearest", "bilinear", "area")
RECIPES = ("paper", "robust")
POLICY_TRAINS = ("emission", "where")
REWARDS = ("final", "steps", "probs", "gain")
POLICIES = ("learned", "random", "center", "oracle")
MOVES = ("relative", "absolute")

PAPER_SIGMA_RANGE = (math.exp(-0.5), math.exp(0.5))  # sigma = exp(tanh(.) / 2) (eq. 11)
ROBUST_SIGMA_SIDE = 64  # px: the image side on which the robust recipe's sigma range was measured

# The ingredients each recipe sets; a field given explicitly (not None) overrides its recipe.
# "paper" is the published implementation. "robust" departs from it where measurements showed the
# published recipe does not learn where to look (README, "Does it learn?"); each departure is
# documented on its field in GDRAMConfig.
RECIPE_INGREDIENTS: dict[str, dict[str, object]] = {
    "paper": {
        "sigma_range": PAPER_SIGMA_RANGE,
        "weight_trains_sigma": True,
        "unclipped_log_prob": False,
        "policy_trains": "emission",
        "zero_init_mu": False,
        "baseline_init": None,
        "context_mode": "nearest",
        "reward": "final",
        "normalize_advantage": False,
        "policy_lr_scale": 1.0,
        "location_gradient": False,
        "baseline_before_move": False,
        "episodes_per_image": 1,
        "emission_batch_norm": True,
        "border_penalty": 0.0,
        "moves": "relative",
        "bounded_mean": False,
        "straight_through_mean": False,
        "policy_warmup": 0,
        "warmup_glimpses": "initial",
    },
    "robust": {
        "sigma_range": (0.3, 1.0),
        "weight_trains_sigma": False,
        "unclipped_log_prob": True,
        "policy_trains": "where",
        "zero_init_mu": True,
        "baseline_init": "chance",
        "context_mode": "area",
        "reward": "gain",
        "normalize_advantage": True,
        "policy_lr_scale": 1.0,
        "location_gradient": False,
        "baseline_before_move": True,
        "episodes_per_image": 1,
        "emission_batch_norm": False,
        "border_penalty": 0.0,
        "moves": "absolute",
        "bounded_mean": True,
        "straight_through_mean": True,
        "policy_warmup": 2,
        "warmup_glimpses": "salient",
    },
}
WARMUP_GLIMPSES = ("initial", "salient")


class VariantSpec(NamedTuple):
    """What an attention variant of the paper's ablation (Table 1) switches on.

    ``two_cores``: a lower (classification) and an upper (location) LSTM core, the upper one
    initialised from the context network (DRAM); otherwise one core does both.
    ``learned_sigma``: the emission network learns sigma and the steps are weighted by
    eq. 12-16 (Gaussian); otherwise sigma is ``fixed_sigma`` and every weight is 1.
    ``relative_moves``: l_{t+1} = l_t + Δl_t (eq. 9); otherwise the action is the next location.
    """

    two_cores: bool
    learned_sigma: bool
    relative_moves: bool


VARIANT_SPECS = {
    "gdram": VariantSpec(two_cores=True, learned_sigma=True, relative_moves=True),
    "dram": VariantSpec(two_cores=True, learned_sigma=False, relative_moves=True),
    "gram": VariantSpec(two_cores=False, learned_sigma=True, relative_moves=True),
    "ram": VariantSpec(two_cores=False, learned_sigma=False, relative_moves=False),
    "ram-dl": VariantSpec(two_cores=False, learned_sigma=False, relative_moves=True),
}


@dataclass
class GDRAMConfig:
    """Hyper-parameters of a GDRAM-family model.

    Attributes:
        num_classes: K, the number of classes.
        in_channels: C, channels of the input images.
        image_size: side of the square input images, or (H, W).
        glimpse_size: g, cells per side of every retina scale (the smallest scale covers g pixels).
        num_scales: S, concentric scales per glimpse.
        scale_factor: ratio of each scale's side to the previous one's.
        retina_mode: ``"bilinear"`` (the paper's sampling) or ``"area"`` (anti-aliased mean).
        num_glimpses: T, glimpses per image.
        hidden_size: width of the glimpse features, of the location MLP and of each LSTM core.
        glimpse_channels: channels of the glimpse CNN's two conv layers.
        context_channels: channels of the context CNN's two conv layers.
        mlp_hidden_size: hidden width of the emission, prediction and baseline MLPs.
        variant: one of :data:`VARIANTS` (the paper's Table 1 ablation).
        policy: where the glimpses go, one of :data:`POLICIES`: ``"learned"`` (the emission
            network, the paper), or an ablation that shows what learned attention adds (attention
            variants only): ``"random"`` (uniformly random moves), ``"center"`` (every glimpse at
            the image centre), ``"oracle"`` (every glimpse at the target box's centre: the ceiling;
            the model is the learned one, :func:`gdram.training.attention.run_policy` gives it the boxes).
            A checkpoint written when the policy was a training setting is read with that setting.
        fixed_sigma: the move's standard deviation for the non-Gaussian variants.
        official_footprint: the published glimpse footprint, whose first scale spans
            g * H / (H - 1) pixels instead of g (square images only).
        cnn_pool_size: spatial size the CNN baseline pools its features to before its FC layer.
        recipe: ``"robust"`` (default) or ``"paper"``: sets every ingredient below that is left
            None. A checkpoint's config that predates recipes is read as ``"paper"``.

    Recipe ingredients (None: the recipe's value, see :data:`RECIPE_INGREDIENTS`):
        sigma_range: (low, high), the learned sigma's range: log sigma = mid + half * tanh(.)
            with mid, half the centre and half-width of [log low, log high]. Paper (eq. 11):
            (e^-1/2, e^1/2), i.e. 29-79 px of noise per move on a 128-px image, a random walk;
            robust: (0.3, 1.0) on images of up to :data:`ROBUST_SIGMA_SIDE` (64) pixels, with absolute
            moves and ``bounded_mean`` 0.24-0.81 of the image's half-width (8-26 px on a 64-px image),
            wide enough for the reward to say where the target is (see :mod:`gdram.analysis.alignment`:
            at a fifth of that the REINFORCE estimate is blind to it). On larger images the range keeps
            its pixels (x 64 / the longer side: (0.15, 0.5) at 128 px): the target, the glimpse and the
            warm-up's jitter are sized in pixels too, and the 64-px range on a 128-px canvas put a
            glimpse on the border for one seed in eight (README, "The paper's 128x128 canvas").
        weight_trains_sigma: the classification loss trains sigma through the uncertainty
            weight (eq. 12-16, paper); robust: the weight reads sigma detached, so sigma stays
            exploration noise trained by REINFORCE alone.
        unclipped_log_prob: REINFORCE uses log pi of the sample before its clip to [-1, 1] (the
            unbiased estimator); the paper takes the clipped action's log-density.
        policy_trains: what the policy gradient trains. ``"emission"`` (paper): only the
            emission head (its input is detached), so the upper core and the context network
            get no gradient from any loss. ``"where"`` (robust): the emission network, the upper
            core and the context network (the upper core's input from the lower core is
            detached); one-core variants let it into their single core.
        zero_init_mu: the mu head starts at zero weights and bias (first glimpse at the
            centre, no move), instead of PyTorch's default initialisation (paper).
        baseline_init: the baseline's initial output: a value in (0, 1), ``"chance"``
            (1 / num_classes, the reward's level before any learning; robust) or None
            (PyTorch's default initialisation, about 0.5; paper).
        context_mode: how the context network downsamples the image to g x g
            (``F.interpolate`` mode): ``"nearest"`` (paper), ``"area"`` (robust: keeps a small
            digit's mass in the coarse view, so the first glimpse can find it).
        reward: ``"final"`` (paper, eq. 17): r = 1 when the weighted prediction is right, for
            every move; ``"steps"``: the move placing glimpse t earns the share of right step
            predictions from t on (eq. 10), a per-step reward-to-go; ``"probs"``: the
            mean probability those step predictions give the label (graded: it tells a glimpse
            that helps from one that does not before the arg-max changes, and its REINFORCE
            estimate points at the target more often, see :mod:`gdram.analysis.alignment`); ``"gain"`` (robust):
            what glimpse t alone adds, p_t(y) - p_{t-1}(y) of the step predictions (p_{-1} =
            1 / num_classes), no reward-to-go: each absolute move is judged by its own glimpse,
            without the noise of the moves after it (biased where a glimpse's worth is in what it
            tells later moves; one sample's estimate points at the target 1.4-1.5x as well as
            with ``"probs"``, :mod:`gdram.analysis.alignment`).
        normalize_advantage: divide each step's advantage r - b_t by its standard deviation
            over the batch (robust), so the policy's step size does not follow the reward's scale.
        policy_lr_scale: the learning rate of the modules the policy gradient trains, relative
            to the trainer's lr.
        location_gradient: also train the policy with the pathwise gradient of the
            classification loss through the retina's location input (the sampled move is
            mu + sigma * noise, differentiable; the paper uses REINFORCE alone, eq. 22-24).
        baseline_before_move: the baseline of a move reads the state the emission network read
            to make it (robust). The paper's b_t reads the state after the glimpse the move
            placed, so it depends on the action it is subtracted from: the REINFORCE estimate
            then carries a bias of -grad E[b], which pushes glimpses to where the baseline
            expects little reward (the empty border).
        episodes_per_image: K, sampled glimpse sequences of each training image per step; with
            K > 1 a move's baseline is the mean reward of the image's other episodes (see
            :func:`gdram.training.loss.hybrid_loss`), and a step costs K times as much.
        emission_batch_norm: BatchNorm in the emission network's hidden layer (paper). Early
            on the core states of a batch barely differ, so BatchNorm blows their differences
            up, and evaluation (running statistics) then sees other means than training did:
            the mean path saturates onto a border while the sampled one does not (robust: none).
        border_penalty: weight of :func:`gdram.training.loss.border_loss`, which pulls a mean glimpse
            that left the image back to its border (the clip makes the outside a plateau with no
            reward gradient; the paper has none).
        moves: ``"relative"`` (paper, eq. 9): l_{t+1} = l_t + m * Δl_t, so the sampling noise of
            every move adds up along an episode (a random walk that the clip stops at the border,
            where the policy then learns to stay); ``"absolute"`` (robust, as RAM and DRAM do):
            the action is the next location, each glimpse's noise is its own. The variants whose
            moves are absolute by design (``ram``) are absolute under either value, so with
            ``"absolute"`` ``ram-dl`` looks where ``ram`` does.
        bounded_mean: with absolute moves, the action's [-1, 1] spans the glimpse centres the clip
            allows (location = bound * action, bound = 1 - g' as in :meth:`GDRAM.clip_location`),
            so the policy's mean always lies inside the image (robust). Without it (paper, RAM) a
            mean that drifts past the clip sits on a plateau: every sample near it lands on the
            same border place, the reward cannot tell them apart, and nothing brings it back.
            No effect on relative moves.
        straight_through_mean: the gradient passes the mean's tanh (eq. 7) as if it were the
            identity. A mean that noise pushed into tanh's saturation (the border) gets no
            gradient back through tanh, so it stays there for good; with this its pre-tanh value
            keeps the full REINFORCE gradient and comes back when glimpses inside the image
            earn more. Inside the image the gradient hardly changes (x 1 / (1 - mu^2): at most
            1.33 for |mu| <= 0.5). Robust: on; the paper: off.
        policy_warmup: epochs at the start of training without the REINFORCE term: the
            classifier, the baseline and the glimpse networks learn from the initial policy's
            sampled glimpses (with ``zero_init_mu``, around the centre with sigma's spread)
            before the policy gradient starts, so that its reward already tells glimpses
            apart. While the classifier is at chance the reward is noise, and Adam turns a
            noise gradient into steady steps that drive the mean into tanh's saturation (the
            border) before anything can be learned (the paper: 0; robust: 2).
        warmup_glimpses: where the warm-up's glimpses go (learned policy). ``"initial"`` (paper): the
            initial policy's sampled glimpses. ``"salient"`` (robust): every glimpse at the image's most
            salient place (:func:`gdram.training.attention.salient_locations`: the peak of the local
            contrast over a window of twice the glimpse size; no boxes), each step jittered by half a
            glimpse, and the policy's first mean glimpse is pulled there (the guidance loss's squared
            distance, ``guidance_weight``). On the 128x128 cluttered digits the initial policy's glimpses
            fall on the digit 5% of the time, so the classifier learns nothing in the warm-up and the
            reward after it is noise; the salient place lies in the digit's box for 97% of the images.
    """

    num_classes: int = 10
    in_channels: int = 3
    image_size: int | tuple[int, int] = 128
    glimpse_size: int = 12
    num_scales: int = 4
    scale_factor: float = 2.0
    retina_mode: str = "bilinear"
    num_glimpses: int = 8
    hidden_size: int = 128
    glimpse_channels: tuple[int, int] = (128, 256)
    context_channels: int = 64
    mlp_hidden_size: int = 256
    variant: str = "gdram"
    policy: str = "learned"
    fixed_sigma: float = 0.15
    official_footprint: bool = False
    cnn_pool_size: int = 5
    recipe: str = "robust"
    sigma_range: tuple[float, float] | None = None
    weight_trains_sigma: bool | None = None
    unclipped_log_prob: bool | None = None
    policy_trains: str | None = None
    zero_init_mu: bool | None = None
    baseline_init: float | str | None = None
    context_mode: str | None = None
    reward: str | None = None
    normalize_advantage: bool | None = None
    policy_lr_scale: float | None = None
    location_gradient: bool | None = None
    baseline_before_move: bool | None = None
    episodes_per_image: int | None = None
    emission_batch_norm: bool | None = None
    border_penalty: float | None = None
    moves: str | None = None
    bounded_mean: bool | None = None
    straight_through_mean: bool | None = None
    policy_warmup: int | None = None
    warmup_glimpses: str | None = None

    @classmethod
    def from_dict(cls, values: dict, train: dict | None = None) -> GDRAMConfig:
        """The config stored in a checkpoint (``values``) beside the trainer's settings (``train``).

        One written before recipes existed is the paper's; one written before ``moves`` and
        ``bounded_mean`` existed made relative moves with an unbounded mean (under either recipe);
        one written before the policy was part of the config takes it from ``train["policy"]``.
        """
        stored_policy = {} if train is None or "policy" not in train else {"policy": train["policy"]}
        before = {
            "recipe": "paper",
            "moves": "relative",
            "bounded_mean": False,
            "straight_through_mean": False,
            "policy_warmup": 0,
            "warmup_glimpses": "initial",
        }
        return cls(**{**before, **stored_policy, **values})

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):  # NumPy numbers (e.g. a data set's class count) as Python's
            setattr(self, field.name, python_scalars(getattr(self, field.name)))
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {RECIPES}, got {self.recipe!r}")
        if isinstance(self.sigma_range, list):
            self.sigma_range = tuple(self.sigma_range)
        sigma_in_pixels = self.recipe == "robust" and self.sigma_range is None
        for name, value in RECIPE_INGREDIENTS[self.recipe].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.baseline_init == "chance":
            self.baseline_init = 1.0 / self.num_classes if isinstance(self.num_classes, int) else None
        self._check_ingredients()
        if isinstance(self.image_size, list):
            self.image_size = tuple(self.image_size)
        if isinstance(self.glimpse_channels, list):
            self.glimpse_channels = tuple(self.glimpse_channels)
        for name in (
            "num_classes",
            "in_channels",
            "glimpse_size",
            "num_scales",
            "num_glimpses",
            "hidden_size",
            "context_channels",
            "mlp_hidden_size",
            "cnn_pool_size",
        ):
            _check_positive_int(name, getattr(self, name))
        if isinstance(self.image_size, tuple):
            if len(self.image_size) != 2:
                raise ValueError(f"image_size must be an int or (H, W), got {self.image_size!r}")
            for side in self.image_size:
                _check_positive_int("image_size", side)
        else:
            _check_positive_int("image_size", self.image_size)
        if not (isinstance(self.glimpse_channels, tuple) and len(self.glimpse_channels) == 2):
            raise ValueError(f"glimpse_channels must be a pair of ints, got {self.glimpse_channels!r}")
        for channels in self.glimpse_channels:
            _check_positive_int("glimpse_channels", channels)
        _check_positive_float("scale_factor", self.scale_factor)
        _check_positive_float("fixed_sigma", self.fixed_sigma)
        if self.retina_mode not in RETINA_MODES:
            raise ValueError(f"retina_mode must be one of {RETINA_MODES}, got {self.retina_mode!r}")
        if self.context_mode not in CONTEXT_MODES:
            raise ValueError(f"context_mode must be one of {CONTEXT_MODES}, got {self.context_mode!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {self.policy!r}")
        if self.policy != "learned" and self.variant not in VARIANT_SPECS:
            raise ValueError(f"the {self.policy} location policy needs an attention variant, not {self.variant!r}")
        if not isinstance(self.official_footprint, bool):
            raise ValueError(f"official_footprint must be a bool, got {self.official_footprint!r}")
        height, width = self.image_hw
        if self.glimpse_size < 4:
            raise ValueError(f"glimpse_size must be at least 4 (two 2x2 poolings), got {self.glimpse_size}")
        if self.glimpse_size >= min(height, width):
            raise ValueError(
                f"glimpse_size ({self.glimpse_size}) must be smaller than the image's sides {self.image_hw}"
            )
        if self.official_footprint and height != width:
            raise ValueError(f"official_footprint needs square images, got image_size={self.image_size!r}")
        if sigma_in_pixels and max(height, width) > ROBUST_SIGMA_SIDE:
            scale = ROBUST_SIGMA_SIDE / max(height, width)
            self.sigma_range = (self.sigma_range[0] * scale, self.sigma_range[1] * scale)

    def _check_ingredients(self) -> None:
        low_high = self.sigma_range
        if not (isinstance(low_high, tuple) and len(low_high) == 2):
            raise ValueError(f"sigma_range must be a pair (low, high), got {low_high!r}")
        for value in low_high:
            _check_positive_float("sigma_range", value)
        if not low_high[0] < low_high[1]:
            raise ValueError(f"sigma_range must have low < high, got {low_high!r}")
        for name in (
            "weight_trains_sigma",
            "unclipped_log_prob",
            "zero_init_mu",
            "normalize_advantage",
            "location_gradient",
            "baseline_before_move",
            "emission_batch_norm",
            "bounded_mean",
            "straight_through_mean",
        ):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.policy_trains not in POLICY_TRAINS:
            raise ValueError(f"policy_trains must be one of {POLICY_TRAINS}, got {self.policy_trains!r}")
        if self.reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {self.reward!r}")
        if self.warmup_glimpses not in WARMUP_GLIMPSES:
            raise ValueError(f"warmup_glimpses must be one of {WARMUP_GLIMPSES}, got {self.warmup_glimpses!r}")
        if self.moves not in MOVES:
            raise ValueError(f"moves must be one of {MOVES}, got {self.moves!r}")
        init = self.baseline_init
        if init is not None and (isinstance(init, (bool, str)) or not 0 < init < 1):
            raise ValueError(f"baseline_init must lie in (0, 1), be 'chance' or None, got {init!r}")
        _check_positive_float("policy_lr_scale", self.policy_lr_scale)
        _check_positive_int("episodes_per_image", self.episodes_per_image)
        _check_non_negative_int("policy_warmup", self.policy_warmup)
        if (
            isinstance(self.border_penalty, bool)
            or not isinstance(self.border_penalty, (int, float))
            or not (math.isfinite(self.border_penalty) and self.border_penalty >= 0)
        ):
            raise ValueError(f"border_penalty must be a finite number >= 0, got {self.border_penalty!r}")

    @property
    def image_hw(self) -> tuple[int, int]:
        """(H, W) of the input images."""
        if isinstance(self.image_size, tuple):
            return self.image_size
        return (self.image_size, self.image_size)

    @property
    def spec(self) -> VariantSpec:
        """The switches of this attention variant (``ValueError`` for ``"cnn"``, which has none)."""
        if self.variant not in VARIANT_SPECS:
            raise ValueError(f"variant {self.variant!r} is not an attention model; use create_model")
        return VARIANT_SPECS[self.variant]

    @property
    def retina_base_size(self) -> float | None:
        """``base_size`` of the retina op: g * H / (H - 1) for the published footprint, else None (= g)."""
        if not self.official_footprint:
            return None
        height = self.image_hw[0]
        return self.glimpse_size * height / (height - 1)


def python_scalars(value: Any) -> Any:
    """``value`` with NumPy scalars (also inside a tuple or list) replaced by the Python numbers they hold."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, list)):
        return type(value)(python_scalars(item) for item in value)
    return value


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_non_negative_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")


def _check_positive_float(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
