"""`probe visualize`: what units of each tap respond to (the paper's Figure 5, left): regularised activation
maximisation as in Lucid (Olah et al., 2017/2018), written with torch.

The image is parameterised as Lucid's default: a Fourier spectrum scaled by 1/frequency (so the optimiser moves
low frequencies as easily as high ones), mapped through a decorrelated colour basis and a sigmoid into [0, 1].
Each step sees it padded with grey and randomly translated (jitter), scaled and rotated (Lucid's
`standard_transforms`), so that only patterns robust to small transformations survive: without these the
optimum is high-frequency noise. The objective is Lucid's `channel`: a unit's mean activation over positions.

The taps are post-ReLU (the encoder contract), so a unit that is zero everywhere on the near-grey start image would
get no gradient and stay grey. As Lucid's `redirected_relu_grad` does, the trunk's ReLUs pass the gradient on to
their negative inputs for an image whose gradient would otherwise be zero, except where it would push them lower.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from common.errors import EncoderError, OptionError
from probe.encoders import Encoder, probing_trunk, require_layers
from probe.sheets import Panel, save_sheet, tile, to_uint8
from probe.transforms import Normalization
from train.models.contract import tap_shapes

# Lucid's square root of ImageNet's colour covariance (lucid.optvis.param.color), columns scaled to norm <= 1
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_CORRELATION = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()


@dataclass(frozen=True)
class MaximizeSettings:
    size: int = 64  # side of the optimised image, px
    steps: int = 256
    lr: float = 0.05  # Adam, as Lucid
    decay_power: float = 1.0  # spectrum scaled by 1/f^decay_power
    jitter: float = 1 / 16  # largest translation, as a fraction of the side (Lucid: 8 px of 128)
    scales: tuple[float, float] = (0.9, 1.1)  # Lucid: 1 + (i - 5) / 50 for i in 0..10
    degrees: float = 10.0  # Lucid: -10..10
    seed: int = 0


@dataclass
class MaximizedUnit:
    tap: str
    unit: int
    image: Tensor  # (3, H, W) in [0, 1]
    start: float  # the unit's mean activation on the initial image, untransformed
    end: float  # ... and on the final image


class FourierImage(nn.Module):
    """A batch of images in [0, 1] from learnable spectra with Lucid's 1/f scaling and colour decorrelation."""

    def __init__(self, count: int, size: int, generator: torch.Generator, decay_power: float = 1.0,
                 sd: float = 0.01):
        super().__init__()
        fy = torch.fft.fftfreq(size).unsqueeze(1)
        fx = torch.fft.rfftfreq(size).unsqueeze(0)
        frequencies = (fx.square() + fy.square()).sqrt()
        # Lucid multiplies by sqrt(w * h) before an unnormalised inverse FFT, the same as an orthonormal one
        scale = 1.0 / frequencies.clamp_min(1.0 / size) ** decay_power
        self.register_buffer("scale", scale)
        self.size = size
        self.spectrum = nn.Parameter(torch.randn(count, 3, size, size // 2 + 1, 2, generator=generator) * sd)

    def forward(self) -> Tensor:
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        image = torch.fft.irfft2(spectrum, s=(self.size, self.size), norm="ortho") / 4.0  # Lucid's /4
        decorrelated = torch.einsum("bchw,dc->bdhw", image, COLOR_CORRELATION)
        return torch.sigmoid(decorrelated)


def random_transform(images: Tensor, settings: MaximizeSettings, generator: torch.Generator) -> Tensor:
    """Each image padded with grey and moved by its own random translation, scale and rotation (one resampling,
    bilinear), the regularisers of Lucid's `standard_transforms`."""
    count = images.shape[0]
    uniform = torch.rand(count, 4, generator=generator)
    angle = (uniform[:, 0] * 2 - 1) * math.radians(settings.degrees)
    scale = settings.scales[0] + uniform[:, 1] * (settings.scales[1] - settings.scales[0])
    shift = (uniform[:, 2:] * 2 - 1) * settings.jitter * 2  # grid coordinates span 2 per side
    cos, sin = angle.cos() / scale, angle.sin() / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    # zero padding around (image - 0.5) is Lucid's constant grey padding
    return F.grid_sample(images - 0.5, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 0.5


class _RedirectedReLUFunction(torch.autograd.Function):
    """ReLU whose backward, for an image whose ReLU gradient is zero everywhere, lets the gradient through to the
    negative inputs it would raise (Lucid's redirected_relu_grad); the forward is ReLU's."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        relu_grad = torch.where(x < 0, torch.zeros_like(grad), grad)
        if x.dim() < 2:  # no batch dimension to tell one image from another
            return relu_grad
        # the optimiser descends the loss, so a positive gradient would push a negative input lower still
        redirected = torch.where((x < 0) & (grad > 0), torch.zeros_like(grad), grad)
        passes = relu_grad.flatten(1).norm(dim=1) > 0
        return torch.where(passes.view(-1, *([1] * (x.dim() - 1))), relu_grad, redirected)


class RedirectedReLU(nn.Module):
    """nn.ReLU's drop-in for activation maximisation: the same forward, the redirected backward above."""

    def forward(self, x: Tensor) -> Tensor:
        return _RedirectedReLUFunction.apply(x)


def redirect_relus(module: nn.Module) -> nn.Module:
    """`module` with every nn.ReLU child replaced by RedirectedReLU, in place (used on the probing copy)."""
    for name, child in module.named_children():
        if type(child) is nn.ReLU:
            setattr(module, name, RedirectedReLU())
        else:
            redirect_relus(child)
    return module


def check_units(encoder: Encoder, units: list[tuple[str, int]], size: int) -> None:
    """Refuse a tap the encoder lacks or a unit index beyond the tap's width, naming it."""
    require_layers(encoder, sorted({tap for tap, _ in units}))
    widths = tap_widths(encoder, size)
    for tap, unit in units:
        if not 0 <= unit < widths[tap]:
            raise OptionError(f"{encoder.source}: tap {tap} has {widths[tap]} units, so unit {unit} does not exist")


def tap_widths(encoder: Encoder, size: int) -> dict[str, int]:
    """Units (channels of a map, entries of a vector) of every tap, for input of `size` px."""
    try:
        shapes = tap_shapes(encoder.module, list(encoder.taps), size)
    except RuntimeError as exc:
        raise EncoderError(f"{encoder.source}: cannot run {encoder.arch!r} on {size} px input ({exc})") from None
    return {tap: int(shape[0]) for tap, shape in shapes.items()}


def random_units(encoder: Encoder, taps: list[str], count: int, seed: int, size: int) -> list[tuple[str, int]]:
    """`count` distinct units of each tap, drawn from `seed` (the paper's "random non-cherry-picked" filters)."""
    widths = tap_widths(encoder, size)
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for tap in require_layers(encoder, taps):
        picks = torch.randperm(widths[tap], generator=generator)[:count].sort().values.tolist()
        chosen += [(tap, unit) for unit in picks]
    return chosen


def unit_activations(features: dict[str, Tensor], units: list[tuple[str, int]]) -> Tensor:
    """Image i's mean activation of units[i] (mean over positions of a map, the entry of a vector)."""
    values = []
    for index, (tap, unit) in enumerate(units):
        activation = features[tap][index, unit]
        values.append(activation.mean() if activation.dim() else activation)
    return torch.stack(values)


def maximize_units(encoder: Encoder, units: list[tuple[str, int]], settings: MaximizeSettings,
                   normalization: Normalization, progress: bool = False) -> list[MaximizedUnit]:
    """One optimised image per unit, all optimised together as one batch (the images do not interact: the
    encoder runs in eval mode), deterministic from `settings.seed` on the CPU."""
    check_units(encoder, units, settings.size)
    trunk = redirect_relus(probing_trunk(encoder).requires_grad_(False))
    taps = sorted({tap for tap, _ in units}, key=encoder.taps.index)
    mean = torch.tensor(normalization.mean).view(1, 3, 1, 1)
    std = torch.tensor(normalization.std).view(1, 3, 1, 1)
    generator = torch.Generator().manual_seed(settings.seed)
    param = FourierImage(len(units), settings.size, generator, settings.decay_power)
    optimizer = torch.optim.Adam(param.parameters(), lr=settings.lr)

    def activations(images: Tensor) -> Tensor:
        return unit_activations(trunk.forward_taps((images - mean) / std, taps), units)

    with torch.no_grad():
        start = activations(param())
    for _ in tqdm(range(settings.steps), disable=not progress, leave=False, desc="maximise"):
        optimizer.zero_grad()
        loss = -activations(random_transform(param(), settings, generator)).sum()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        images = param()
        end = activations(images)
    return [MaximizedUnit(tap, unit, images[i], float(start[i]), float(end[i]))
            for i, (tap, unit) in enumerate(units)]


def save_visualization_sheet(title: str, maximized: list[MaximizedUnit], out: Path,
                             retrieved: list | None = None) -> Path:
    """One sheet per encoder: a row per tap; for each unit its maximising image, beside it (with retrieval)
    the grid of its top images (probe.retrieval.Retrieved, in the same order as `maximized`)."""
    rows: dict[str, list[Panel]] = {}
    for index, unit in enumerate(maximized):
        panels = rows.setdefault(unit.tap, [])
        panels.append(Panel(f"{unit.tap}:{unit.unit}", to_uint8(unit.image)))
        if retrieved:
            found = retrieved[index]
            grid = tile([image.permute(1, 2, 0).numpy() for image in found.images], columns=3)
            panels.append(Panel(f"top {len(found.images)}", grid))
    return save_sheet(list(rows.values()), out, title, row_labels=list(rows))
