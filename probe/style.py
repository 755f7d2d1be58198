"""`probe style`: neural style transfer with any encoder's taps (the paper's Figure 3).

After Gatys, Ecker and Bethge (CVPR 2016) as in the PyTorch tutorial the paper used
(pytorch.org/tutorials/advanced/neural_style_tutorial.html): the image is optimised so that one tap's features
match the content image's (mean squared error) and the Gram matrices of several taps match the style image's,
with L-BFGS (or Adam) for a fixed number of steps, the image clamped to [0, 1] before each evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from common.errors import EncoderError, OptionError
from probe.encoders import Encoder, probing_trunk, require_layers
from probe.sheets import Panel, save_image, save_sheet, to_uint8
from probe.transforms import Normalization

OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise")


@dataclass(frozen=True)
class StyleSettings:
    """How one stylisation runs; taps are checked against the encoder (None: the defaults below)."""

    content_tap: str | None = None  # default: the middle tap (AlexNet conv3, the CIFAR encoder's conv3)
    style_taps: tuple[str, ...] | None = None  # default: every tap ("all CNN features", section 4.4)
    steps: int = 300  # the tutorial's
    optimizer: str = "lbfgs"
    lr: float | None = None  # default: 1 for L-BFGS (the tutorial's), 0.02 for Adam
    # The losses are relative squared errors (divided by the target's squared norm) rather than the tutorial's
    # raw ones, whose scale differs by orders of magnitude between encoders (VGG's 1e6 style weight leaves a
    # random CIFAR encoder's image unchanged); so one pair of weights serves every encoder.
    style_weight: float = 1e3
    content_weight: float = 1.0
    init: str = "content"  # start from the content image (the tutorial) or from seeded noise
    seed: int = 0

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise OptionError(f"optimizer {self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
        if self.init not in INITS:
            raise OptionError(f"init {self.init!r}: choose one of {', '.join(INITS)}")


@dataclass
class StyleResult:
    image: Tensor  # (1, 3, H, W) in [0, 1]
    content_tap: str
    style_taps: tuple[str, ...]
    history: list[dict[str, float]] = field(default_factory=list)  # per evaluation: step, content, style


def gram_matrix(features: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, C, C) normalised by C*H*W, as the tutorial; a vector tap (B, D) -> (B, D, D) / D."""
    flat = features.flatten(2) if features.dim() == 4 else features.unsqueeze(-1)
    return flat @ flat.transpose(1, 2) / flat[0].numel()


def relative_error(value: Tensor, target: Tensor) -> Tensor:
    """||value - target||^2 / ||target||^2: the tutorial's mean squared error, made independent of the scale of
    an encoder's features."""
    return F.mse_loss(value, target, reduction="sum") / target.square().sum().clamp_min(1e-12)


def chosen_taps(encoder: Encoder, settings: StyleSettings) -> tuple[str, tuple[str, ...]]:
    """The content tap and style taps, in network order; an EncoderError names a tap the encoder lacks."""
    taps = encoder.taps
    content = require_layers(encoder, [settings.content_tap or taps[len(taps) // 2]])[0]
    style = tuple(require_layers(encoder, list(settings.style_taps) if settings.style_taps else None))
    return content, style


def stylize(encoder: Encoder, content: Tensor, style: Tensor, settings: StyleSettings,
            normalization: Normalization, progress: bool = False) -> StyleResult:
    """`content` (1, 3, H, W) in [0, 1] restyled after `style` (any size) with `encoder`'s features."""
    content_tap, style_taps = chosen_taps(encoder, settings)
    trunk = probing_trunk(encoder).requires_grad_(False)
    mean = torch.tensor(normalization.mean).view(1, 3, 1, 1)
    std = torch.tensor(normalization.std).view(1, 3, 1, 1)
    names = sorted({content_tap, *style_taps}, key=encoder.taps.index)

    def taps_of(image: Tensor) -> dict[str, Tensor]:
        try:
            return trunk.forward_taps((image - mean) / std, names)
        except RuntimeError as exc:  # e.g. an encoder with a fixed input size (a ViT's position embedding)
            raise EncoderError(f"{encoder.source}: cannot run {encoder.arch!r} on a "
                               f"{image.shape[-1]}x{image.shape[-2]} image ({exc})") from None

    with torch.no_grad():
        content_target = taps_of(content)[content_tap]
        style_targets = {name: gram_matrix(f) for name, f in taps_of(style).items() if name in style_taps}
    generator = torch.Generator().manual_seed(settings.seed)
    image = (content.clone() if settings.init == "content"
             else torch.rand(content.shape, generator=generator)).requires_grad_(True)
    history: list[dict[str, float]] = []

    def losses() -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            image.clamp_(0, 1)
        features = taps_of(image)
        content_loss = relative_error(features[content_tap], content_target)
        style_loss = sum(relative_error(gram_matrix(features[n]), style_targets[n]) for n in style_taps)
        return content_loss, style_loss

    _optimise(image, losses, settings, history, progress)
    with torch.no_grad():
        image.clamp_(0, 1)
    return StyleResult(image.detach(), content_tap, style_taps, history)


def _optimise(image: Tensor, losses, settings: StyleSettings, history: list[dict[str, float]],
              progress: bool) -> None:
    """Run `settings.steps` loss evaluations, each recorded in `history` (the tutorial counts L-BFGS's inner
    evaluations as steps, and so does this; L-BFGS's line search may finish a few past the count)."""
    if settings.optimizer == "lbfgs":
        # with a strong-Wolfe line search: without one, the steps on a clamped image oscillate for encoders
        # whose losses are less smooth than VGG's
        optimizer = torch.optim.LBFGS([image], lr=settings.lr or 1.0, line_search_fn="strong_wolfe")
    else:
        optimizer = torch.optim.Adam([image], lr=settings.lr or 0.02)
    bar = tqdm(total=settings.steps, disable=not progress, leave=False, desc="style")

    def closure() -> Tensor:
        optimizer.zero_grad()
        content_loss, style_loss = losses()
        total = settings.content_weight * content_loss + settings.style_weight * style_loss
        total.backward()
        history.append({"step": len(history), "content": content_loss.item(), "style": style_loss.item()})
        bar.update(1)
        bar.set_postfix(style=f"{history[-1]['style']:.3g}", content=f"{history[-1]['content']:.3g}")
        return total

    while len(history) < settings.steps:
        if settings.optimizer == "lbfgs":  # never evaluate past the step count
            optimizer.param_groups[0]["max_eval"] = settings.steps - len(history)
        optimizer.step(closure)
    bar.close()


def save_style_sheet(content: Tensor, style: Tensor, results: list[tuple[str, StyleResult]], out: Path) -> Path:
    """Content, style and each encoder's result side by side, titled with the encoders' names (Figure 3);
    with one encoder, the stylised image alone."""
    if len(results) == 1:
        return save_image(results[0][1].image, out)
    panels = [Panel("content", to_uint8(content)), Panel("style", to_uint8(style))]
    panels += [Panel(name, to_uint8(result.image)) for name, result in results]
    first = results[0][1]
    title = f"style transfer: content loss on {first.content_tap}, style on {', '.join(first.style_taps)}"
    return save_sheet([panels], out, title, panel_inches=3.0)
