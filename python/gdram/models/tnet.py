"""TNet (Papadopoulos, Korus & Memon, "Hard-Attention for Scalable Image Classification", NeurIPS 2021):
top-down hard attention over an image pyramid, every crop read by :func:`gdram_ext.box_glimpse`.

Level 1 reads the whole image downscaled (to ``TNetConfig.overview_side``); a location module scores the n x n
cells of a grid over each attended box and keeps a few; each kept cell is cropped from the
full-resolution image, resized to the base resolution and read by the same backbone, and so on inside
each kept cell. The features of every attended box (with a positional encoding of where it is) are
averaged and classified by one linear layer.

Shapes: B batch, C image channels, S image side, s base side, n grid side, F feature size, K classes,
M_l boxes per image at level l (``TNetConfig.boxes_per_level``), T = sum_l M_l attended boxes per image.
Box centres are (x, y) in [-1, 1] image coordinates (box_glimpse's), box sides are in pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from gdram.models.tnet_config import SMALL_CNN, TNetConfig
from gdram_ext import box_glimpse

POSITION_FREQUENCIES = 8  # sine/cosine frequencies per coordinate of (row, column, level)
POSITION_MAX_WAVELENGTH = 100.0  # frequencies from 1 down to 1 / 100 radians per grid step, as the reference


def child_boxes(
    centres: torch.Tensor,
    sides: torch.Tensor,
    cells: torch.Tensor,
    image_size: int,
    grid_size: int,
    cell_fraction: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The boxes of chosen grid cells inside their parent boxes.

    A parent of side P is covered by an n x n grid of cells of side ``cell_fraction * P`` whose origins
    lie ``(1 - cell_fraction) / (n - 1) * P`` apart (the first cell at the parent's top-left corner, the
    last at its bottom-right corner); cell index ``row * n + col``.

    Args:
        centres: (N, 2) parent centres (x, y) in [-1, 1] image coordinates.
        sides: (N,) parent sides in pixels.
        cells: (N, k) int64 chosen cell indices in [0, n * n).
        image_size: S, the image's side in pixels.
        grid_size: n.
        cell_fraction: a cell's side over its parent's side.

    Returns:
        ((N, k, 2) centres in [-1, 1] image coordinates, (N, k) sides in pixels).
    """
    stride = (1 - cell_fraction) / (grid_size - 1)
    grid = torch.stack((cells % grid_size, cells // grid_size), dim=-1).to(centres.dtype)  # (N, k, 2): (col, row)
    parent = sides[:, None, None]
    # offset of the cell's centre from the parent's centre, in pixels
    offset = parent * (grid * stride + cell_fraction / 2 - 0.5)
    child_centres = centres[:, None, :] + offset * (2.0 / image_size)
    child_sides = (sides * cell_fraction)[:, None].expand_as(cells)
    return child_centres, child_sides


def oracle_cells(
    centres: torch.Tensor,
    sides: torch.Tensor,
    targets: torch.Tensor,
    image_size: int,
    grid_size: int,
    cell_fraction: float,
    count: int,
) -> torch.Tensor:
    """The oracle's choice: the ``count`` cells of each parent whose centres lie nearest the target's centre.

    Cells are scored by the negative squared distance from their centre (:func:`child_boxes`' geometry) to
    the target; on the grid's lattice the nearest centre is the nearest along each axis, so the first cell
    kept holds the target whenever any cell does.

    Args:
        centres: (N, 2) parent centres (x, y) in [-1, 1] image coordinates.
        sides: (N,) parent sides in pixels.
        targets: (N, 2) the target box's centre (x, y) in [-1, 1] image coordinates, per parent.
        image_size: S, the image's side in pixels.
        grid_size: n.
        cell_fraction: a cell's side over its parent's side.
        count: k, cells kept per parent.

    Returns:
        (N, k) int64 cells, nearest first.
    """
    every = torch.arange(grid_size * grid_size, device=centres.device).expand(centres.shape[0], -1)  # (N, n * n)
    cell_centres, _ = child_boxes(centres, sides, every, image_size, grid_size, cell_fraction)  # (N, n * n, 2)
    scores = -((cell_centres - targets[:, None, :]) ** 2).sum(dim=2)
    return scores.topk(count, dim=1).indices


def plackett_luce_log_prob(log_probs: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Per-draw terms of the Plackett-Luce log-probability of an ordered sample without replacement.

    Draw j picked ``cells[:, j]`` among the cells not drawn before: its term is
    log p_{c_j} - log(1 - sum_{i<j} p_{c_i}); the terms sum to the ordered sample's log-probability.

    Args:
        log_probs: (N, M) log-probabilities of the M cells.
        cells: (N, k) distinct cell indices, in draw order.

    Returns:
        (N, k) terms, differentiable with respect to ``log_probs``.
    """
    chosen = log_probs.gather(1, cells)
    drawn_before = torch.cumsum(chosen.exp(), dim=1) - chosen.exp()
    remaining = (1 - drawn_before).clamp(min=torch.finfo(log_probs.dtype).tiny)
    return chosen - remaining.log()


def choose_cells(log_probs: torch.Tensor, count: int, sample: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep ``count`` cells of each grid: the most probable, or a Gumbel top-k sample without replacement.

    Args:
        log_probs: (N, M) log-probabilities of the M cells of each of N grids.
        count: k, cells kept per grid.
        sample: draw k cells without replacement (log p + Gumbel noise, top k in order: an exact
            Plackett-Luce sample), whose log-probability terms are :func:`plackett_luce_log_prob`'s;
            otherwise the k most probable cells, with their own log-probabilities (the reference code).

    Returns:
        ((N, k) int64 cells in decreasing score order, (N, k) log-probability terms).
    """
    if not sample:
        chosen, cells = log_probs.topk(count, dim=1)
        return cells, chosen
    uniform = torch.rand_like(log_probs).clamp(min=torch.finfo(log_probs.dtype).tiny)
    cells = (log_probs.detach() - torch.log(-torch.log(uniform))).topk(count, dim=1).indices
    return cells, plackett_luce_log_prob(log_probs, cells)


def pool_map(feature_map: torch.Tensor, pooling: str) -> torch.Tensor:
    """A feature map's vector, ``(N, F, h, w) -> (N, F)``: each channel's maximum or mean over the map."""
    return feature_map.amax(dim=(2, 3)) if pooling == "max" else feature_map.mean(dim=(2, 3))


class SmallCNN(nn.Module):
    """The CPU backbone: three 3x3 stride-2 conv + BatchNorm + ReLU layers of F/4, F/2 and F channels.

    ``forward(crops (N, C, s, s)) -> (feature map (N, F, s/8, s/8), vector (N, F) = its pooled map)``
    (:func:`pool_map`, ``pooling`` "max" or "mean").
    """

    def __init__(self, in_channels: int, feature_size: int, pooling: str = "max") -> None:
        super().__init__()
        self.pooling = pooling
        widths = (max(1, feature_size // 4), max(1, feature_size // 2), feature_size)
        layers: list[nn.Module] = []
        for width in widths:
            layers += [nn.Conv2d(in_channels, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
            in_channels = width
        self.layers = nn.Sequential(*layers)

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feature_map = self.layers(crops)
        return feature_map, pool_map(feature_map, self.pooling)


class TorchvisionBackbone(nn.Module):
    """A torchvision classifier (random init) without its pooling and head, projected to F channels.

    The convolutional body is the model's ``features`` (EfficientNet, MobileNet, ConvNeXt, VGG, ...) or
    every child before ``avgpool`` and ``fc`` (ResNet, ResNeXt, RegNet, ...); a 1x1 conv projects its
    channels to F, and an image with C != 3 channels first passes a 1x1 conv to 3.

    ``forward(crops (N, C, s, s)) -> (feature map (N, F, h, w), vector (N, F) = its pooled map)``
    (:func:`pool_map`, ``pooling`` "max" or "mean").
    """

    def __init__(self, name: str, in_channels: int, feature_size: int, base_size: int, pooling: str = "max") -> None:
        super().__init__()
        self.pooling = pooling
        import torchvision

        if name not in torchvision.models.list_models(module=torchvision.models):
            raise ValueError(f"backbone must be {SMALL_CNN!r} or a torchvision classifier name, got {name!r}")
        model = torchvision.models.get_model(name, weights=None)
        if hasattr(model, "features"):
            body = model.features
        elif hasattr(model, "avgpool") and hasattr(model, "fc"):
            body = nn.Sequential(*(child for key, child in model.named_children() if key not in ("avgpool", "fc")))
        else:
            raise ValueError(f"backbone {name!r} has neither a 'features' body nor 'avgpool' and 'fc' to drop")
        self.adapter = nn.Identity() if in_channels == 3 else nn.Conv2d(in_channels, 3, 1)
        self.body = body
        with torch.no_grad():
            channels = body.eval()(torch.zeros(1, 3, base_size, base_size)).shape[1]
        body.train()
        self.projection = nn.Conv2d(channels, feature_size, 1)

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feature_map = self.projection(self.body(self.adapter(crops)))
        return feature_map, pool_map(feature_map, self.pooling)


def build_backbone(config: TNetConfig) -> nn.Module:
    """The backbone ``config.backbone`` names: (N, C, s, s) -> ((N, F, h, w), (N, F))."""
    if config.backbone == SMALL_CNN:
        return SmallCNN(config.in_channels, config.feature_size, config.pooling)
    return TorchvisionBackbone(
        config.backbone, config.in_channels, config.feature_size, config.base_size, config.pooling
    )


class LocationModule(nn.Module):
    """Scores the n x n cells of each attended box: log pi(cell) = log_softmax(z / ||z||_2).

    The backbone's feature map, pooled to n x n (``pooling``: each cell's maximum or mean), is concatenated
    with the box's feature vector tiled over the grid (context) and the cells' (x, y) in [-1, 1]; two 1x1
    convs (ReLU between) give one logit z per cell. z is L2-normalised over the cells before the softmax, so
    two cells' odds are at most e^sqrt(2). Its inputs are detached: the location module trains, and the
    backbone does not learn from it.

    ``forward(feature_map (N, F, h, w), vector (N, F)) -> (N, n * n)`` log-probabilities, row-major cells.
    """

    def __init__(self, feature_size: int, grid_size: int, pooling: str = "max") -> None:
        super().__init__()
        self.pool = nn.AdaptiveMaxPool2d(grid_size) if pooling == "max" else nn.AdaptiveAvgPool2d(grid_size)
        steps = torch.linspace(-1.0, 1.0, grid_size)
        rows, cols = torch.meshgrid(steps, steps, indexing="ij")
        self.register_buffer("coordinates", torch.stack((cols, rows))[None], persistent=False)  # (1, 2, n, n)
        self.scores = nn.Sequential(
            nn.Conv2d(2 * feature_size + 2, feature_size, 1), nn.ReLU(), nn.Conv2d(feature_size, 1, 1)
        )

    def forward(self, feature_map: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(feature_map.detach())
        batch, _, n, _ = pooled.shape
        context = vector.detach()[:, :, None, None].expand(-1, -1, n, n)
        coordinates = self.coordinates.to(pooled.dtype).expand(batch, -1, -1, -1)
        logits = self.scores(torch.cat((pooled, context, coordinates), dim=1)).flatten(1)
        return F.log_softmax(F.normalize(logits, dim=1), dim=1)


def position_encoding(positions: torch.Tensor) -> torch.Tensor:
    """Sines and cosines of each coordinate of (row, column, level) at POSITION_FREQUENCIES frequencies.

    Frequencies go geometrically from 1 to 1 / POSITION_MAX_WAVELENGTH radians per unit, as in the
    Transformer's encoding. ``positions (N, 3) -> (N, 6 * POSITION_FREQUENCIES)``, per coordinate
    [sin(f_0 p), ..., sin(f_7 p), cos(f_0 p), ..., cos(f_7 p)].
    """
    exponents = torch.arange(POSITION_FREQUENCIES, dtype=positions.dtype, device=positions.device)
    frequencies = torch.exp(-math.log(POSITION_MAX_WAVELENGTH) * exponents / (POSITION_FREQUENCIES - 1))
    angles = positions[:, :, None] * frequencies  # (N, 3, P)
    return torch.cat((angles.sin(), angles.cos()), dim=2).flatten(1)


class PositionalFusion(nn.Module):
    """A feature with where it was read: ReLU(v + Linear(encoding(row, column, level))).

    Level 1 is at (0, 0, 0); a cell (r, c) kept inside a box at (row, column, l - 1) is at
    (row * n + r, column * n + c, l). ``forward(vector (N, F), positions (N, 3)) -> (N, F)``.
    """

    def __init__(self, feature_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(6 * POSITION_FREQUENCIES, feature_size)

    def forward(self, vector: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return F.relu(vector + self.linear(position_encoding(positions.to(vector.dtype))))


class RewardBaseline(nn.Module):
    """The REINFORCE baseline b: a moving average of the batch's mean reward, in a buffer (checkpointed).

    ``update(rewards (B,))``: b <- decay * b + (1 - decay) * mean(rewards).
    """

    value: torch.Tensor

    def __init__(self, init: float, decay: float) -> None:
        super().__init__()
        self.decay = decay
        self.register_buffer("value", torch.tensor(float(init)))

    @torch.no_grad()
    def update(self, rewards: torch.Tensor) -> None:
        self.value.mul_(self.decay).add_((1 - self.decay) * rewards.mean().to(self.value.dtype))


@dataclass
class TNetResult:
    """What :meth:`TNet.forward` read and predicted (lists run over levels; L = ``config.levels``).

    Attributes:
        logits: (B, K), the classifier on the mean of all T attended features.
        feature_logits: (B, T, K), the same classifier on each feature alone (level 1's first, then
            each level's boxes in order).
        centres: L tensors (B, M_l, 2), the boxes read at level l (level 1: the whole image), in [-1, 1].
        sides: L tensors (B, M_l), their sides in pixels.
        cells: L - 1 tensors (B, M_{l+1}) int64, the cell (row * n + col) each box of level l + 1 is
            inside its parent: box m of level l + 1 lies in box m // k of level l (k = cells kept per box).
        log_probs: L - 1 tensors (B, M_{l+1}), the log-probability term of each chosen cell (its own
            log pi for top-k and for cells kept ``towards`` a place; its Plackett-Luce draw term for Gumbel
            top-k; 0 for the oracle).
    """

    logits: torch.Tensor
    feature_logits: torch.Tensor
    centres: list[torch.Tensor]
    sides: list[torch.Tensor]
    cells: list[torch.Tensor]
    log_probs: list[torch.Tensor]

    @property
    def log_prob(self) -> torch.Tensor:
        """(B,) the log-probability of every cell choice of each image (0 with one level)."""
        total = self.logits.new_zeros(self.logits.shape[0])
        for terms in self.log_probs:
            total = total + terms.sum(dim=1)
        return total


class TNet(nn.Module):
    """TNet: the backbone reads the whole image at the overview size, then the kept cells at the base size, level
    by level.

    ``forward(images (B, C, S, S), sample=None, boxes=None, towards=None) -> TNetResult``. ``sample`` draws
    the cells (Gumbel top-k) instead of keeping the top k; by default it does in training when
    ``config.sampling`` is ``"gumbel"``. ``boxes`` (B, 4): each image's target box x0, y0, x1, y1 in pixels,
    read only by the ``"oracle"`` policy (which needs them all finite and ignores ``sample``). ``towards``
    (B, 2): a place (x, y) in [-1, 1] per image, for the learned policy only (the salient warm-up): the
    cells kept are those nearest it (:func:`oracle_cells`), with the location module's log pi of each.
    Each level's crops, for the whole batch, are one :func:`gdram_ext.box_glimpse` call.
    """

    def __init__(self, config: TNetConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = build_backbone(config)
        self.location = LocationModule(config.feature_size, config.grid_size, config.pooling)
        self.fusion = PositionalFusion(config.feature_size)
        self.classifier = nn.Linear(config.feature_size, config.num_classes)
        self.reward_baseline = RewardBaseline(config.baseline_init, config.baseline_decay)

    def forward(
        self,
        images: torch.Tensor,
        sample: bool | None = None,
        boxes: torch.Tensor | None = None,
        towards: torch.Tensor | None = None,
    ) -> TNetResult:
        config = self.config
        expected = (config.in_channels, config.image_size, config.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"images must have shape (B, {', '.join(map(str, expected))}), got {tuple(images.shape)}")
        if towards is not None and (config.policy != "learned" or tuple(towards.shape) != (images.shape[0], 2)):
            raise ValueError(
                f"towards (B, 2) places steer the learned policy only; got shape {tuple(towards.shape)} "
                f"for {images.shape[0]} images under the {config.policy!r} policy"
            )
        if config.policy == "oracle":
            towards = self._oracle_targets(images, boxes)
        if sample is None:
            sample = self.training and config.sampling == "gumbel"
        batch, n = images.shape[0], config.grid_size
        geometry = (config.image_size, n, config.cell_fraction)  # of the cells, for child_boxes and oracle_cells
        centres = images.new_zeros(batch, 1, 2)
        sides = images.new_full((batch, 1), float(config.image_size))
        positions = images.new_zeros(batch, 1, 3)
        features, all_centres, all_sides, all_cells, all_log_probs = [], [centres], [sides], [], []
        for level in range(config.levels):
            parents = centres.shape[1]  # boxes per image at this level
            side = config.overview_side if level == 0 else config.base_size
            crops = box_glimpse(images, centres, sides, side, config.retina_mode)
            feature_map, vector = self.backbone(crops.flatten(0, 1))
            features.append(self.fusion(vector, positions.flatten(0, 1)).view(batch, parents, -1))
            if level == config.levels - 1:
                break
            kept = config.cells_per_level[level]
            parent_centres, parent_sides = centres.flatten(0, 1), sides.flatten(0, 1)
            if towards is not None:  # the cells nearest the oracle's target or the warm-up's salient place
                place = towards.to(parent_centres).repeat_interleave(parents, dim=0)  # (B * parents, 2)
                cells = oracle_cells(parent_centres, parent_sides, place, *geometry, kept)
                if config.policy == "oracle":  # nothing to learn: log-probabilities 0
                    log_probs = vector.new_zeros(cells.shape)
                else:
                    log_probs = self.location(feature_map, vector).gather(1, cells)
            else:
                if config.policy == "random":  # uniform log-probabilities, (B * parents, n * n)
                    scores = feature_map.new_full((feature_map.shape[0], n * n), -math.log(n * n))
                else:
                    scores = self.location(feature_map, vector)
                cells, log_probs = choose_cells(scores, kept, sample or config.policy == "random")  # (B * parents, k)
            centres, sides = child_boxes(parent_centres, parent_sides, cells, *geometry)
            grid = torch.stack((cells // n, cells % n), dim=-1).to(positions.dtype)  # (B * parents, k, 2)
            parent = positions.flatten(0, 1)[:, None, :2]
            level_column = positions.new_full((*cells.shape, 1), float(level + 1))
            positions = torch.cat((parent * n + grid, level_column), dim=-1).view(batch, parents * kept, 3)
            centres, sides = centres.reshape(batch, parents * kept, 2), sides.reshape(batch, parents * kept)
            all_centres.append(centres)
            all_sides.append(sides)
            all_cells.append(cells.view(batch, parents * kept))
            all_log_probs.append(log_probs.view(batch, parents * kept))
        attended = torch.cat(features, dim=1)  # (B, T, F)
        return TNetResult(
            logits=self.classifier(attended.mean(dim=1)),
            feature_logits=self.classifier(attended),
            centres=all_centres,
            sides=all_sides,
            cells=all_cells,
            log_probs=all_log_probs,
        )

    def _oracle_targets(self, images: torch.Tensor, boxes: torch.Tensor | None) -> torch.Tensor:
        """(B, 2) the centres (x, y) in [-1, 1] of the images' (B, 4) target boxes; refuses missing ones."""
        batch, problem = images.shape[0], None
        if boxes is None:
            problem = "got none"
        elif tuple(boxes.shape) != (batch, 4):
            problem = f"got shape {tuple(boxes.shape)}"
        elif not bool(torch.isfinite(boxes).all()):
            problem = f"{int((~torch.isfinite(boxes).all(dim=1)).sum())} of {batch} are missing (not finite)"
        if problem is not None:
            raise ValueError(
                "the oracle policy needs every image's target box (box_* arrays in the data): "
                f"boxes (B, 4) x0, y0, x1, y1 in pixels, all finite; {problem}"
            )
        boxes = boxes.to(images)
        return torch.stack((boxes[:, 0] + boxes[:, 2], boxes[:, 1] + boxes[:, 3]), dim=1) / self.config.image_size - 1


class TNetLossParts(NamedTuple):
    """Scalar tensors: ``total`` = ``classification`` + w_f * ``per_feature`` + w_r * ``reinforce``."""

    total: torch.Tensor
    classification: torch.Tensor
    per_feature: torch.Tensor
    reinforce: torch.Tensor


def tnet_loss(
    result: TNetResult,
    labels: torch.Tensor,
    config: TNetConfig,
    baseline: RewardBaseline,
    *,
    update_baseline: bool = True,
    imitate: bool = False,
) -> TNetLossParts:
    """TNet's loss from a forward's result and the (B,) int64 labels.

    * classification: cross-entropy of ``result.logits`` (the mean feature's prediction);
    * per_feature: cross-entropy of every attended feature's own prediction, averaged over the B * T
      features, weighted by ``config.per_feature_weight``;
    * reinforce: mean over images of -(r - b) * log pi(all cell choices of the image), weighted by
      ``config.reinforce_weight``, with the reward r = 1 when the arg-max of ``result.logits`` is the
      label (else 0) and b = ``baseline.value`` (detached); 0 with one level.

    With ``update_baseline`` (the default) the baseline then moves towards the batch's mean reward. With
    ``imitate`` (the salient warm-up: the cells were kept ``towards`` a place) the reinforce term is instead
    the mean over images of -log pi(the kept cells), a cross-entropy that teaches the location module those
    cells, and the baseline stays.
    """
    labels = labels.long()
    classification = F.cross_entropy(result.logits, labels)
    per_image = result.feature_logits.shape[1]
    per_feature = F.cross_entropy(result.feature_logits.flatten(0, 1), labels.repeat_interleave(per_image))
    if imitate:
        reinforce = -result.log_prob.mean()
    else:
        rewards = (result.logits.detach().argmax(dim=1) == labels).to(result.logits.dtype)
        advantage = rewards - baseline.value.to(rewards.dtype)
        reinforce = -(advantage * result.log_prob).mean()
        if update_baseline:
            baseline.update(rewards)
    total = classification + config.per_feature_weight * per_feature + config.reinforce_weight * reinforce
    return TNetLossParts(total, classification, per_feature, reinforce)
