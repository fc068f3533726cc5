"""Loading the authors' published GDRAM state dicts: keys, shapes, errors and identical evaluation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from gdram import GDRAM, GDRAMConfig, from_official, to_official

BATCH_NORMS = ("glimpse_net.fc_g.1.", "glimpse_net.fc_g.5.", "emission_net.fc.1.")


def published_shapes(num_classes: int) -> dict[str, tuple[int, ...]]:
    """Every key of the published ``GDRAM`` state dict and its shape (the issue's list)."""
    layers = {  # prefix: weight shape (the bias has the first dimension)
        "glimpse_net.fc_g.0.": (128, 12, 3, 3),
        "glimpse_net.fc_g.4.": (256, 128, 3, 3),
        "glimpse_net.fc_l.0.": (128, 2),
        "glimpse_net.fc_gg.": (128, 2304),
        "glimpse_net.fc_lg.": (128, 128),
        "rnn2.context_net1.0.": (64, 3, 3, 3),
        "rnn2.context_net2.0.": (64, 64, 3, 3),
        "rnn2.fc.": (128, 576),
        "class_net.fc.0.": (256, 128),
        "class_net.fc.2.": (num_classes, 256),
        "emission_net.fc.0.": (256, 128),
        "emission_net.mu_net.0.": (2, 256),
        "emission_net.logvar_net.0.": (2, 256),
        "baseline_net.fc.0.": (256, 256),
        "baseline_net.fc.1.": (1, 256),
    }
    shapes: dict[str, tuple[int, ...]] = {}
    for prefix, weight in layers.items():
        shapes[prefix + "weight"] = weight
        shapes[prefix + "bias"] = weight[:1]
    for core in ("rnn1.lstm_cell.", "rnn2.lstm_cell."):
        shapes.update({core + "weight_ih": (512, 128), core + "weight_hh": (512, 128)})
        shapes.update({core + "bias_ih": (512,), core + "bias_hh": (512,)})
    for prefix, width in zip(BATCH_NORMS, (128, 256, 256), strict=True):
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[prefix + name] = (width,)
        shapes[prefix + "num_batches_tracked"] = ()
    return shapes


def published_state_dict(num_classes: int = 10, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors of the published keys and shapes, with valid BatchNorm statistics."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in published_shapes(num_classes).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(100)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else 16
            state[key] = torch.randn(shape, generator=generator) / math.sqrt(fan_in)
    return state


def published_forward(state: dict[str, torch.Tensor], images: torch.Tensor, steps: int = 8) -> dict[str, torch.Tensor]:
    """The published implementation's evaluation-mode forward, written out on its state dict."""
    batch, channels, height, _ = images.shape
    size, scales = 12, 4
    half_glimpse = size / (height / 2) / 2

    def linear(x: torch.Tensor, prefix: str) -> torch.Tensor:
        return F.linear(x, state[prefix + "weight"], state[prefix + "bias"])

    def batch_norm(x: torch.Tensor, prefix: str) -> torch.Tensor:
        return F.batch_norm(
            x, state[prefix + "running_mean"], state[prefix + "running_var"], state[prefix + "weight"],
            state[prefix + "bias"], training=False,
        )  # fmt: skip

    def conv(x: torch.Tensor, prefix: str) -> torch.Tensor:
        return F.conv2d(x, state[prefix + "weight"], state[prefix + "bias"], padding=1)

    def lstm(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
        gates = F.linear(x, state[prefix + "weight_ih"], state[prefix + "bias_ih"])
        gates = gates + F.linear(h, state[prefix + "weight_hh"], state[prefix + "bias_hh"])
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def retina(location: torch.Tensor) -> torch.Tensor:
        patches = []
        for i in range(scales):
            theta = torch.zeros(batch, 2, 3)
            theta[:, 0, 0] = theta[:, 1, 1] = size / (height - 1) * 2**i
            theta[:, :, 2] = location
            grid = F.affine_grid(theta, [batch, channels, size, size], align_corners=False)
            patches.append(F.grid_sample(images, grid, align_corners=False))
        return torch.cat(patches, dim=1)

    def emission(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = F.relu(batch_norm(linear(h, "emission_net.fc.0."), "emission_net.fc.1."))
        mu = torch.tanh(linear(z, "emission_net.mu_net.0."))
        return mu, torch.exp(0.5 * torch.tanh(linear(z, "emission_net.logvar_net.0.")))

    small = F.interpolate(images, (size, size))
    context = F.max_pool2d(F.relu(conv(small, "rnn2.context_net1.0.")), 2)
    context = F.max_pool2d(F.relu(conv(context, "rnn2.context_net2.0.")), 2)
    h1, c1 = torch.zeros(batch, 128), torch.zeros(batch, 128)
    h2, c2 = linear(context.flatten(1), "rnn2.fc."), torch.zeros(batch, 128)
    location = emission(h2)[0].clamp(-1 + half_glimpse, 1 - half_glimpse)
    weight = torch.ones(batch)
    out: dict[str, list[torch.Tensor]] = {"locations": [], "weights": [], "baselines": [], "step_logits": []}
    for _ in range(steps):
        out["locations"].append(location)
        out["weights"].append(weight)
        x = F.max_pool2d(F.relu(batch_norm(conv(retina(location), "glimpse_net.fc_g.0."), "glimpse_net.fc_g.1.")), 2)
        x = F.max_pool2d(F.relu(batch_norm(conv(x, "glimpse_net.fc_g.4."), "glimpse_net.fc_g.5.")), 2)
        where = linear(F.relu(linear(location, "glimpse_net.fc_l.0.")), "glimpse_net.fc_lg.")
        z = F.relu(linear(x.flatten(1), "glimpse_net.fc_gg.") * where)
        h1, c1 = lstm(z, h1, c1, "rnn1.lstm_cell.")
        h2, c2 = lstm(h1, h2, c2, "rnn2.lstm_cell.")
        move, sigma = emission(h2)
        location = (location + move * half_glimpse * 2 ** (scales - 1)).clamp(-1 + half_glimpse, 1 - half_glimpse)
        hidden = torch.cat((h1, h2), dim=1)
        out["baselines"].append(torch.sigmoid(linear(linear(hidden, "baseline_net.fc.0."), "baseline_net.fc.1.")))
        out["step_logits"].append(linear(F.relu(linear(h1, "class_net.fc.0.")), "class_net.fc.2."))
        weight = 1 - (sigma.mean(dim=1) - math.exp(-0.5)) / (math.exp(0.5) - math.exp(-0.5))
    stacked = {name: torch.stack(values) for name, values in out.items()}
    stacked["baselines"] = stacked["baselines"].squeeze(2)
    weights = stacked["weights"]
    stacked["logits"] = (weights[..., None] * stacked["step_logits"]).sum(0) / weights.sum(0)[:, None]
    return stacked


def test_published_key_table_holds_the_published_parameter_counts() -> None:
    for classes, count in ((10, 1_134_799), (100, 1_157_929)):
        parameters = {
            key: shape
            for key, shape in published_shapes(classes).items()
            if not key.endswith(("running_mean", "running_var", "num_batches_tracked"))
        }
        assert sum(math.prod(shape) for shape in parameters.values()) == count


@pytest.mark.parametrize("num_classes", [10, 100])
def test_from_official_loads_the_published_keys_strictly_and_infers_the_classes(num_classes: int) -> None:
    state = published_state_dict(num_classes)
    model = from_official(state)
    assert isinstance(model, GDRAM) and not model.training
    config = model.config
    assert (config.num_classes, config.variant, config.official_footprint) == (num_classes, "gdram", True)
    assert (config.glimpse_size, config.num_scales, config.in_channels, config.image_hw) == (12, 4, 3, (128, 128))
    assert model.retina.base_size == pytest.approx(12 * 128 / 127)
    exported = to_official(model)
    assert set(exported) == set(state)
    for key, value in state.items():
        assert torch.equal(exported[key], value), key


def test_loaded_model_reproduces_the_published_evaluation() -> None:
    state = published_state_dict(10, seed=3)
    blocks = (torch.rand(2, 3, 16, 16) > 0.5).float()
    images = F.interpolate(blocks, size=(128, 128))  # sharp edges: a footprint off by 1/127 shows
    with torch.no_grad():
        ours = from_official(state)(images)
        theirs = published_forward(state, images)
    assert not torch.equal(theirs["locations"][0], theirs["locations"][-1])  # the eye does move
    for name, value in theirs.items():
        torch.testing.assert_close(getattr(ours, name), value, atol=2e-6, rtol=1e-5, msg=name)
    assert torch.equal(ours.logits.argmax(1), theirs["logits"].argmax(1))


def test_from_official_reads_a_checkpoint_file_also_saved_from_data_parallel(tmp_path) -> None:
    state = published_state_dict(10)
    path = tmp_path / "cifar10_gdram.pth"
    torch.save({"module." + key: value for key, value in state.items()}, path)
    model = from_official(path, num_glimpses=4)
    assert model.config.num_glimpses == 4
    assert torch.equal(model.prediction.mlp[2].weight, state["class_net.fc.2.weight"])
    assert torch.equal(from_official(str(path)).emission.log_var.bias, state["emission_net.logvar_net.0.bias"])


def test_missing_and_unexpected_keys_are_named() -> None:
    state = published_state_dict(10)
    del state["emission_net.logvar_net.0.bias"]
    state["emission_net.extra.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match=r"missing \['emission_net.logvar_net.0.bias'\].*emission_net.extra.weight"):
        from_official(state)


def test_keys_needed_to_infer_the_configuration_are_named() -> None:
    state = published_state_dict(10)
    del state["class_net.fc.2.weight"]
    with pytest.raises(KeyError, match="class_net.fc.2.weight"):
        from_official(state)


def test_tensors_of_wrong_shape_are_named() -> None:
    state = published_state_dict(10)
    state["baseline_net.fc.0.weight"] = torch.zeros(256, 255)
    with pytest.raises(ValueError, match=r"baseline_net.fc.0.weight: \(256, 255\)"):
        from_official(state)


def test_to_official_needs_the_published_architecture() -> None:
    with pytest.raises(ValueError, match="gdram"):
        to_official(GDRAM(GDRAMConfig(variant="dram")))
    with pytest.raises(ValueError, match="emission_batch_norm"):
        to_official(GDRAM(GDRAMConfig(recipe="robust")))
