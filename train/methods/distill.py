"""Knowledge distillation through one image's patches (Asano & Saeed, ICLR 2023, "The augmented image prior:
distilling 1000 classes by extrapolating from a single image", arXiv 2112.00725): a randomly initialised student
learns to match a frozen supervised teacher's softened outputs on augmented patches, and no label is ever read.

Every choice, with its reference ("CIFAR script": the authors' cifar/distill.py, distiller.py, data.py and
cutmix_utils.py, TensorFlow; "ImageNet script": their in1k/distill.py and distiller.py, PyTorch Lightning; both in
github.com/yukimasano/single-img-extrapolating):

- Loss: KL(softmax(teacher / T) || softmax(student / T)) x T^2, averaged over the batch, T = 8 (both scripts'
  default temperature). The T^2 factor is Hinton et al.'s (2015), which keeps gradient magnitudes comparable across
  temperatures; the authors' scripts leave it out (Keras ``KLDivergence``, torch ``KLDivLoss(batchmean)``). Under
  Adam a constant factor barely changes the updates (only through epsilon), so the two agree closely.
- Teacher and student see the same batch, mixed once (both scripts: the teacher's forward is on the mixed ``x``).
  The teacher is frozen and in eval mode (no dropout, BatchNorm running statistics), never trained, and held outside
  the module tree: it is in neither the checkpoint's weights nor ``encoder.pt``. The checkpoint records its path and
  sha256 (``extra_state``; a resume whose teacher file changed is refused), ``config.json`` its path (``--teacher``)
  and the student's ``encoder.pt`` both, beside the classifier.
- Mixing, ``--mix`` (default cutmix: both scripts apply CutMix to every batch, and the paper's augmentation
  ablation finds it the most important ingredient): CutMix with one lambda ~ Beta(0.25, 0.25) and one box per
  batch, pasted from the batch in reverse order (the CIFAR script's cutmix_utils.py, from the Keras CutMix
  example); mixup with one alpha ~ U(0, 1) per batch, ``alpha x + (1 - alpha) reversed(x)`` (the CIFAR script's
  ``mixup``). No label is mixed: the teacher labels the mixed image.
- Augmentation before mixing: below 64 px, CIFAR's flip and pad-4 random 32 px crop (the CIFAR script's
  ``augment_distill``; it pads with black before normalising, we pad with 0 of the (-1, 1) range, mid-grey); from
  64 px, random-resized crops (scale 0.08-1) and flips (the ImageNet script's first and fifth transforms; its colour
  jitter, greyscale and solarisation are not applied: a rendered set is already colour-jittered by the render).
- Optimiser: Adam without weight decay at 1e-3 below 64 px (the CIFAR script compiles ``tf.keras.optimizers.Adam()``
  with Keras' defaults: lr 1e-3, epsilon 1e-7, which we use; its --learning_rate flag is never passed on); AdamW at
  0.01 with weight decay 5e-4 from 64 px (the ImageNet script's defaults, epsilon 1e-8). Constant rate (both scripts'
  default; the ImageNet script's optional --lr_schedule halves it at epochs 100 and 150 of 200: ``--milestones``).
  Batch 512 and 1,000 epochs (the CIFAR script's defaults; the ImageNet script's are 512 per GPU and 200 epochs).
  The paper's text gives further schedules per experiment that we have not checked against these defaults.
- Student: any registered encoder (``--arch``; default ``resnet18-cifar``, the registry's nearest to the CIFAR
  script's WRN-16-4 student) with one linear classifier on its pooled output (a map averaged over its positions),
  PyTorch's default initialisation, as many classes as the teacher has. Its ``encoder.pt`` carries that classifier
  (``probe classify`` scores it; ``probe linear`` probes its layers like any encoder's).
- Teacher: an ``encoder.pt`` that carries a classifier (``train supervised``'s, another distilled student's), read
  with ``weights_only`` (a crafted file runs nothing), fed the input range it was trained on: the toolkit's (-1, 1),
  or the mean / std its config records. ``random:ARCH[:classes=N]`` is a seeded random network with a pooled linear
  classifier (default 10 classes): a control without knowledge to distil, and the smoke tests' teacher.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from common.errors import EncoderError, OptionError
from common.hashing import sha256_files
from common.options import opt
from train.augment import views
from train.data.sources import Batch
from train.losses import distillation_loss
from train.methods import register_method
from train.methods.base import Method, MethodOptions, RunContext, step_schedule
from train.models import ENCODERS, build_encoder, output_shape
from train.models.encoder_io import EncoderClassifier, attach_classifier, load_classifier
from train.models.heads import pooled_linear_head

RANDOM_PREFIX = "random:"
RANDOM_TEACHER_CLASSES = 10
RANDOM_TEACHER_SEED = 0
CUTMIX_BETA = 0.25  # lambda ~ Beta(0.25, 0.25): the CIFAR script's cutmix_utils.py
SMALL_INPUT = 64  # below this input size, the CIFAR script's recipe; from it, the ImageNet script's


def sample_gamma(shape: float, n: int, generator: torch.Generator, tries: int = 16) -> Tensor:
    """``n`` draws from Gamma(shape, 1) on the CPU from ``generator`` (Marsaglia & Tsang, 2000; shapes below 1 by
    boosting, x U^(1/shape)). The rejection step is vectorised over ``tries`` candidates per draw and the first
    accepted one kept (acceptance is above 95% per candidate, so all 16 fail with probability below 1e-20): no
    data-dependent loop, no host synchronisation, and the stream is the generator's, so a resume repeats it."""
    d = (shape + 1 if shape < 1 else shape) - 1 / 3
    c = 1 / math.sqrt(9 * d)
    z = torch.randn(n, tries, generator=generator, dtype=torch.float64)
    u = torch.rand(n, tries, generator=generator, dtype=torch.float64)
    v = (1 + c * z) ** 3
    accepted = (v > 0) & (u.log() < 0.5 * z * z + d - d * v + d * v.clamp(min=1e-300).log())
    first = accepted.to(torch.uint8).argmax(dim=1, keepdim=True)
    x = d * v.gather(1, first).squeeze(1)
    if shape < 1:
        x = x * torch.rand(n, generator=generator, dtype=torch.float64) ** (1 / shape)
    return x


def sample_beta(a: float, b: float, n: int, generator: torch.Generator) -> Tensor:
    """``n`` draws from Beta(a, b) (as X / (X + Y), X ~ Gamma(a), Y ~ Gamma(b)), float64 on the CPU."""
    x, y = sample_gamma(a, n, generator), sample_gamma(b, n, generator)
    return x / (x + y).clamp(min=1e-300)


def cutmix(x: Tensor, generator: torch.Generator) -> Tensor:
    """One box per batch from the batch in reverse order pasted into it; its side is ``S sqrt(1 - lambda)``,
    lambda ~ Beta(0.25, 0.25), its centre uniform over the image, clipped to it (the CIFAR script's cutmix)."""
    size = x.shape[-1]
    lam = sample_beta(CUTMIX_BETA, CUTMIX_BETA, 1, generator)
    cut = torch.floor(size * torch.sqrt(1 - lam)).long()
    centre = torch.randint(0, size, (2,), generator=generator)
    low = (centre - cut // 2).clamp(0, size)
    high = (centre + cut // 2).clamp(0, size)
    bounds = torch.cat([low, high]).to(x.device, non_blocking=True)  # y0, x0, y1, x1
    pos = torch.arange(size, device=x.device)
    rows = (pos >= bounds[0]) & (pos < bounds[2])
    cols = (pos >= bounds[1]) & (pos < bounds[3])
    return torch.where(rows[:, None] & cols[None, :], x.flip(0), x)


def mixup(x: Tensor, generator: torch.Generator) -> Tensor:
    """``alpha x + (1 - alpha) reversed(x)`` with one alpha ~ U(0, 1) per batch (the CIFAR script's mixup)."""
    alpha = torch.rand((), generator=generator).to(x.device, dtype=x.dtype, non_blocking=True)
    return alpha * x + (1 - alpha) * x.flip(0)


MIXES = {"cutmix": cutmix, "mixup": mixup, "none": lambda x, generator: x}


# ---- the teacher ------------------------------------------------------------------------------------------------
@dataclass
class Teacher:
    """The frozen network whose outputs the student learns, with what identifies it."""

    model: EncoderClassifier
    source: str  # the --teacher given
    sha256: str | None  # of its file (None for random:ARCH)
    num_classes: int
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None  # its training input's mean / std in [0, 1] units

    @property
    def record(self) -> dict[str, Any]:
        return {"source": self.source, "sha256": self.sha256, "num_classes": self.num_classes}


def open_teacher(spec: str) -> Teacher:
    """The teacher ``--teacher`` names (module doc), frozen, in eval mode, on the CPU; an EncoderError (one line)
    for a file that is unreadable, crafted, or carries no classifier."""
    if spec.startswith(RANDOM_PREFIX):
        return _random_teacher(spec)
    model, info = load_classifier(Path(spec), map_location="cpu")
    model.requires_grad_(False)
    return Teacher(model, spec, sha256_files(spec), int(info["num_classes"]), _recorded_normalize(info["config"]))


def _random_teacher(spec: str) -> Teacher:
    arch, _, extra = spec[len(RANDOM_PREFIX):].partition(":")
    if arch not in ENCODERS:
        raise EncoderError(f"--teacher {spec}: unknown architecture {arch!r} (known: {', '.join(sorted(ENCODERS))})")
    classes = RANDOM_TEACHER_CLASSES
    if extra:
        key, _, value = extra.partition("=")
        if key != "classes" or not value.isdigit() or int(value) < 2:
            raise EncoderError(f"--teacher {spec}: expected random:ARCH or random:ARCH:classes=N (N >= 2)")
        classes = int(value)
    with torch.random.fork_rng(devices=[]):  # the same random teacher whatever the run's seed and stream
        torch.manual_seed(RANDOM_TEACHER_SEED)
        encoder = build_encoder(arch)
        model = EncoderClassifier(encoder, pooled_linear_head(output_shape(encoder)[0], classes))
    model.requires_grad_(False)
    return Teacher(model.eval(), spec, None, classes, None)


def _recorded_normalize(config: dict[str, Any]) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """A mean / std the teacher's config records (`probe finetune`'s encoders do); None: the toolkit's (-1, 1)."""
    recorded = config.get("normalize")
    if isinstance(recorded, dict) and {"mean", "std"} <= recorded.keys():
        return tuple(map(float, recorded["mean"])), tuple(map(float, recorded["std"]))
    return None


def check_teacher_fits(teacher: Teacher, arch: str) -> None:
    """The student (``arch``) must take the input size the teacher was trained at: they see the same images."""
    student_size = int(build_encoder(arch).input_size)
    if teacher.model.input_size != student_size:
        raise EncoderError(f"--teacher {teacher.source}: takes {teacher.model.input_size} px input, but the student "
                           f"--arch {arch} takes {student_size} px; choose a student of the teacher's input size")


# ---- the method -------------------------------------------------------------------------------------------------
@dataclass
class DistillOptions(MethodOptions):
    teacher: str = opt("", "the teacher: an encoder.pt that carries a classifier (a `train supervised` run's), or "
                           "random:ARCH[:classes=N] (a seeded random network: a control)")
    temperature: float = opt(8.0, "distillation temperature T: KL(softmax(teacher/T) || softmax(student/T)) x T^2",
                             min=0, min_open=True)
    mix: str = opt("cutmix", "batch mixing, the teacher labelling the mixed images", choices=tuple(MIXES))
    lr: float = opt(0.0, "Adam(W) learning rate (0: automatic, 1e-3 below 64 px, the authors' CIFAR script; 0.01 "
                         "from 64 px, their ImageNet script)", min=0, min_open=True, auto=0)
    weight_decay: float = opt(-1.0, "AdamW's decoupled weight decay (-1: automatic, 0 below 64 px; 5e-4 from 64 px)",
                              min=0, auto=-1)
    milestones: list = opt([], "epochs at which the learning rate halves (none: constant, the authors' default)",
                           min=0, increasing=True)


@register_method
class Distill(Method):
    name = "distill"
    Options = DistillOptions
    summary = ("Knowledge distillation through a set's patches (Asano & Saeed, 2023): a random student learns a "
               "frozen teacher's softened outputs, no labels.")
    examples = ("train distill shards/cifar-B --teacher runs/sup-cifar/encoder.pt --out runs/distill-B",
                "train distill shards/cifar-B --teacher runs/sup-cifar/encoder.pt --arch cifar --mix mixup "
                "--out runs/distill-B-mixup")
    data_kind = "rendered"
    default_arch = "resnet18-cifar"
    default_epochs = 1000
    default_batch_size = 512
    gradient_sync = "ddp"  # one optimiser; the student's forward is the method's forward
    small_options = {"teacher": "random:cifar"}

    @classmethod
    def check_options(cls, opts: MethodOptions, arch: str) -> None:
        """A teacher that is given, readable, carries a classifier and takes the student's input size."""
        if not opts.teacher:
            raise OptionError("Missing option '--teacher': distill needs a teacher, an encoder.pt that carries a "
                              "classifier (e.g. a `train supervised` run's)")
        check_teacher_fits(open_teacher(opts.teacher), arch)

    def __init__(self, opts: DistillOptions, arch: str, num_samples: int, num_classes=None, device="cpu"):
        super().__init__(opts, arch, num_samples, num_classes, device)
        if not opts.teacher:
            raise ValueError("distill: no --teacher given")
        teacher = open_teacher(opts.teacher)
        check_teacher_fits(teacher, arch)
        # not a submodule: never trained, never in state_dict (checkpoint) or encoder.pt, untouched by .train()
        object.__setattr__(self, "teacher", teacher)
        self.head = pooled_linear_head(output_shape(self.encoder)[0], teacher.num_classes)
        attach_classifier(self.encoder, self.head, about={"distilled_from": teacher.record,
                                                          "temperature": opts.temperature, "mix": opts.mix})
        self._teacher_input: tuple[Tensor, Tensor] | None = None

    @property
    def small_input(self) -> bool:
        return self.input_size < SMALL_INPUT

    def configure(self, ctx: RunContext) -> None:
        o: DistillOptions = self.opts
        lr = o.lr or (1e-3 if self.small_input else 0.01)
        wd = (0.0 if self.small_input else 5e-4) if o.weight_decay == -1 else o.weight_decay
        eps = 1e-7 if self.small_input else 1e-8  # Keras' Adam default (CIFAR script); torch's (ImageNet script)
        self.optimizers["main"] = torch.optim.AdamW(self.parameters(), lr=lr, weight_decay=wd, eps=eps)
        self.schedulers["main"] = step_schedule(self.optimizers["main"], o.milestones, 0.5)
        self.teacher.model.to(ctx.device).eval()
        if self.teacher.normalize is not None:  # (-1, 1) -> [0, 1] -> the teacher's mean / std: one affine map
            mean, std = (torch.tensor(v, device=ctx.device).view(1, -1, 1, 1) for v in self.teacher.normalize)
            self._teacher_input = (0.5 / std, (0.5 - mean) / std)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(self.prepare(x)))

    def augment(self, images: Tensor, generator: torch.Generator) -> Tensor:
        x = views.to_unit_range(images)
        if self.small_input:
            return views.padded_random_crop(x, self.input_size, pad=4, generator=generator)
        return views.random_resized_crop(x, self.input_size, generator=generator)

    def mixed_batch(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """The batch both networks see: augmented, then mixed."""
        return MIXES[self.opts.mix](self.augment(images, generator), generator)

    def example_views(self, images: Tensor, generator: torch.Generator) -> list[Tensor]:
        return [self.mixed_batch(images, generator)]

    @torch.no_grad()
    def teacher_logits(self, x: Tensor) -> Tensor:
        if self._teacher_input is not None:
            scale, shift = self._teacher_input
            x = x * scale + shift
        return self.teacher.model(x)

    def training_step(self, batch: Batch, generator: torch.Generator) -> dict[str, Tensor]:
        x = self.mixed_batch(batch.images, generator)
        target = self.teacher_logits(x)
        logits = self.replicated(x)
        loss = distillation_loss(logits, target, self.opts.temperature)
        self.optimizer_step("main", loss)
        agreement = (logits.argmax(1) == target.argmax(1)).float().mean()
        return {"loss": loss.detach(), "agreement": agreement.detach()}

    def extra_state(self) -> dict[str, Any]:
        return {"teacher": self.teacher.record}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        recorded = state.get("teacher", {})
        if recorded.get("sha256") != self.teacher.sha256:
            raise ValueError(f"the teacher {self.teacher.source} is not the file the run was trained with "
                             f"(sha256 {str(recorded.get('sha256'))[:12]}..., now {str(self.teacher.sha256)[:12]}...)")
