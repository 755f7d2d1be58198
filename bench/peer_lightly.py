"""This toolkit's SimCLR, BYOL, DINO and MoCo v2 side by side with lightly's (lightly 1.6.0, `pip install -e
'.[peer]'`; a bench dependency only), on CIFAR-10, in one process.

What is shared: the backbone, the same ResNet-18 with the CIFAR stem at ``--width`` (this toolkit's
``resnet18-cifar-wN``, its pooled output the feature the heads sit on), built from the same seed so that both start
from bit-identical weights (checked); the batch size; the optimiser and its per-step rate, weight-decay and EMA
schedules (the toolkit's, applied to lightly's parameters by this script); each method's head widths, temperatures
and momenta; the views' recipe (lightly's transforms are given the toolkit's parameters); the training images and
their order; one DataLoader worker each; the same precision.

What remains different, and is the libraries' own:
- the augmentation: the toolkit draws every view on the whole batch in the training process
  (train/augment/multiview.py); lightly builds each view with PIL/torchvision transforms per image in the loader worker;
- the input scaling: the toolkit feeds (-1, 1), lightly normalises by ImageNet's mean and standard deviation;
- the heads' code: lightly's SimCLR head has BatchNorm after its last layer (``SimCLRProjectionHead``), its DINO
  head has no BatchNorm, as the toolkit's; initial weights of the heads differ (different construction order);
- the losses' scale: the toolkit's BYOL loss is the paper's 2 - 2 cos summed over both directions, lightly's is
  the negative cosine averaged (its examples), a factor 4 in gradient at the same rate; lightly's MoCo is NT-Xent
  over a memory bank of the same size and temperature (InfoNCE; the same loss up to the positive's position);
- memory format: the toolkit trains channels_last; lightly as its users run it (``--lightly-channels-last`` for
  the like-for-like compute).

Two measurements per method:
- throughput: paired rounds, the two alternating (``--rounds`` of ``--round-steps`` steps, after warm-up), images per
  second end to end (loader included); the median of each and the ratio of medians;
- learning: from the same initial weights, ``--steps`` steps over ``--seeds`` seeds; the weighted kNN top-1 (k 20,
  cosine; :func:`train.monitors.knn.knn_predict`) of the pooled backbone feature, ``--knn-train`` training images
  as the bank and all 10,000 test images, before and after; the gain and its spread over seeds.

    .venv/bin/python bench/peer_lightly.py --data cifar10-jpg:../shared/data/cifar10-jpg --measure throughput
    .venv/bin/python bench/peer_lightly.py --data cifar10-jpg:../shared/data/cifar10-jpg --measure learning \\
        --methods simclr --seeds 0,1,2 --steps 300
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from train.augment.multiview import simclr_jitter_strength  # noqa: E402
from train.data.sources import Batch  # noqa: E402
from train.methods import RunContext, get_method  # noqa: E402
from train.methods.multiview_base import pooled  # noqa: E402
from train.methods.schedules import cosine_schedule, ema_momentum  # noqa: E402
from train.models import build_encoder  # noqa: E402
from train.monitors.knn import knn_predict  # noqa: E402

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
METHODS = ("simclr", "byol", "dino", "mocov2")


# ---- data -------------------------------------------------------------------------------------------------------
def cifar_arrays(spec: str, cache: Path) -> dict[str, np.ndarray]:
    """CIFAR-10's train and test images as uint8 (N, 32, 32, 3) arrays with their labels, cached in ``cache``."""
    if cache.exists():
        with np.load(cache) as z:
            return dict(z)
    from train.data.specs import open_data

    data = open_data(spec)
    arrays = {}
    for split, images in (("train", data.train), ("test", data.test)):
        pairs = [images[i] for i in range(len(images))]
        arrays[f"{split}_x"] = np.stack([np.asarray(im.convert("RGB")) for im, _ in pairs])
        arrays[f"{split}_y"] = np.array([label for _, label in pairs], dtype=np.int64)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **arrays)
    return arrays


class Uint8Images(Dataset):
    """The toolkit's side: an image as a uint8 (3, H, W) tensor and its index (its loader's batch is augmented on
    the device in the training step)."""

    def __init__(self, images: np.ndarray):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return torch.from_numpy(self.images[i]).permute(2, 0, 1).contiguous(), i


class PILViews(Dataset):
    """lightly's side: a lightly transform applied to the PIL image (a list of views)."""

    def __init__(self, images: np.ndarray, transform: Callable):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i]))


class Batches:
    """Batches of ``dataset`` in a seeded order, one loader worker, epoch after epoch; ``close`` ends the worker
    (a side's worker holds a copy of the images: one left running per run would add up over a bench)."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int):
        # spawn, not fork: a forked worker would inherit (and try to shut down) the other side's loader
        self.loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=1,
                                 generator=torch.Generator().manual_seed(seed), multiprocessing_context="spawn")
        self.iterator: Iterator | None = None

    def __next__(self):
        if self.iterator is None:
            self.iterator = iter(self.loader)
        try:
            return next(self.iterator)
        except StopIteration:
            self.iterator = iter(self.loader)
            return next(self.iterator)

    def close(self) -> None:
        if self.iterator is not None:
            self.iterator._shutdown_workers()
            self.iterator = None


# ---- the shared settings ----------------------------------------------------------------------------------------
@dataclass
class Recipe:
    """One method's settings, given to both sides."""

    name: str
    options: dict = field(default_factory=dict)  # the toolkit's Options overrides (heads, schedules)

    def ours_options(self, steps: int):
        cls = get_method(self.name)
        return cls.Options(**{**self.options, "warmup_epochs": 0.1})  # one "epoch" = the run: 10% warm-up


def recipes(jitter: float) -> dict[str, Recipe]:
    return {"simclr": Recipe("simclr", {"jitter_strength": jitter} if jitter else {}),
            "byol": Recipe("byol"), "mocov2": Recipe("mocov2"),
            "dino": Recipe("dino", {"teacher_temperature_epochs": 0.3, "freeze_last_layer_epochs": 0.01})}


def backbone(arch: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_encoder(arch)


# ---- the toolkit's side -----------------------------------------------------------------------------------------
class Ours:
    """The toolkit's method as ``train`` runs it: channels_last, its own views and schedules."""

    def __init__(self, recipe: Recipe, arch: str, seed: int, steps: int, data: np.ndarray, batch_size: int):
        cls = get_method(recipe.name)
        torch.manual_seed(seed)  # the encoder is built first in Method.__init__: the same weights as backbone()
        self.method = cls(recipe.ours_options(steps), arch, num_samples=len(data), device=torch.device("cpu"))
        self.method.to(memory_format=torch.channels_last)
        self.method.channels_last = True
        self.method.configure(RunContext(1, steps, steps))
        self.method.train()
        self.generator = torch.Generator().manual_seed(seed)
        self.batches = Batches(Uint8Images(data), batch_size, seed)
        self.step_count = 0

    @property
    def encoder(self) -> nn.Module:
        return self.method.encoder

    def normalise(self, images: Tensor) -> Tensor:
        return images.float() / 127.5 - 1

    def step(self) -> int:
        images, index = next(self.batches)
        self.method.training_step(Batch(images, index), self.generator)
        self.step_count += 1
        self.method.on_step_end(self.step_count)
        return len(images)


# ---- lightly's side ---------------------------------------------------------------------------------------------
class Lightly:
    """The same method written with lightly's heads, losses and transforms, as its examples do, on the shared
    backbone, optimiser and schedules."""

    def __init__(self, recipe: Recipe, arch: str, seed: int, steps: int, data: np.ndarray, batch_size: int,
                 channels_last: bool):
        self.name, self.steps, self.step_count, self.ema = recipe.name, steps, 0, []
        self.opts = recipe.ours_options(steps)
        if self.name == "mocov2":  # its automatic values, as the toolkit's method resolves them for 32 px
            from train.methods.mocov2 import resolved_options

            self.opts = resolved_options(self.opts, 32)
        self.memory = torch.channels_last if channels_last else torch.contiguous_format
        self.encoder = backbone(arch, seed)
        build = {"simclr": self._simclr, "byol": self._byol, "mocov2": self._moco, "dino": self._dino}
        transform = build[self.name]()
        self.modules = nn.ModuleList([self.encoder, *self.heads]).to(memory_format=self.memory).train()
        trainable = [p for p in self.modules.parameters() if p.requires_grad]
        o = self.opts
        self.optimizer = (torch.optim.AdamW(trainable, lr=o.lr, weight_decay=o.weight_decay) if self.name == "dino"
                          else torch.optim.SGD(trainable, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay))
        self.batches = Batches(PILViews(data, transform), batch_size, seed)

    def normalise(self, images: Tensor) -> Tensor:
        mean = torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1)
        return (images.float() / 255 - mean) / std

    def features(self, x: Tensor, encoder: nn.Module | None = None) -> Tensor:
        return pooled((encoder or self.encoder)(x.contiguous(memory_format=self.memory)))

    # each builder sets self.heads, self.loss_fn (views -> loss) and returns the transform
    def _simclr(self):
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead
        from lightly.transforms import SimCLRTransform

        o = self.opts
        self.head = SimCLRProjectionHead(self.encoder.out_channels, o.proj_hidden, o.proj_dim)
        self.heads, criterion = [self.head], NTXentLoss(o.temperature)
        self.loss_fn = lambda v: criterion(*self.head(self.features(torch.cat(v))).float().chunk(2))
        strength = o.jitter_strength or simclr_jitter_strength(32)
        return SimCLRTransform(input_size=32, cj_strength=strength, gaussian_blur=0.0,
                               normalize={"mean": IMAGENET_MEAN, "std": IMAGENET_STD})

    def _byol(self):
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
        from lightly.transforms import BYOLTransform, BYOLView1Transform, BYOLView2Transform

        o = self.opts
        self.projector = BYOLProjectionHead(self.encoder.out_channels, o.proj_hidden, o.proj_dim)
        self.predictor = BYOLPredictionHead(o.proj_dim, o.proj_hidden, o.proj_dim)
        self.target_encoder, self.target_projector = _frozen(self.encoder), _frozen(self.projector)
        self.heads, criterion = [self.projector, self.predictor], NegativeCosineSimilarity()

        def loss(views):
            both, n = torch.cat(views), len(views[0])
            p = self.predictor(self.projector(self.features(both))).float()
            with torch.no_grad():
                z = self.target_projector(self.features(both, self.target_encoder)).float()
            return 0.5 * (criterion(p[:n], z[n:]) + criterion(p[n:], z[:n]))

        self.loss_fn = loss
        self.ema = [(self.target_encoder, self.encoder), (self.target_projector, self.projector)]
        norm = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
        return BYOLTransform(BYOLView1Transform(input_size=32, gaussian_blur=0.0, normalize=norm),
                             BYOLView2Transform(input_size=32, gaussian_blur=0.0, normalize=norm))

    def _moco(self):
        from lightly.loss import NTXentLoss
        from lightly.models.modules import MoCoProjectionHead
        from lightly.transforms import MoCoV2Transform

        o = self.opts
        self.head = MoCoProjectionHead(self.encoder.out_channels, o.proj_hidden, o.proj_dim)
        self.key_encoder, self.key_head = _frozen(self.encoder), _frozen(self.head)
        self.heads = [self.head]
        criterion = NTXentLoss(o.temperature, memory_bank_size=(o.queue_size, o.proj_dim))

        def loss(views):
            q = self.head(self.features(views[0])).float()
            from lightly.models.utils import update_momentum

            update_momentum(self.encoder, self.key_encoder, o.key_momentum)
            update_momentum(self.head, self.key_head, o.key_momentum)
            with torch.no_grad():
                k = self.key_head(self.features(views[1], self.key_encoder)).float()
            return criterion(q, k)

        self.loss_fn, self.ema = loss, []
        return MoCoV2Transform(input_size=32, gaussian_blur=0.0,
                               normalize={"mean": IMAGENET_MEAN, "std": IMAGENET_STD})

    def _dino(self):
        from lightly.loss import DINOLoss
        from lightly.models.modules import DINOProjectionHead
        from lightly.transforms import DINOTransform

        o = self.opts
        def head() -> nn.Module:
            return DINOProjectionHead(self.encoder.out_channels, o.head_hidden, o.bottleneck, o.out_dim,
                                      freeze_last_layer=max(1, round(o.freeze_last_layer_epochs * self.steps)))

        self.head, self.teacher_head = head(), head()  # a weight-normalised layer cannot be deep-copied
        self.teacher_head.load_state_dict(self.head.state_dict())
        self.teacher_head.requires_grad_(False)
        self.teacher_encoder = _frozen(self.encoder)
        self.heads = [self.head]
        criterion = DINOLoss(o.out_dim, o.teacher_temperature, o.teacher_temperature_end,
                             round(o.teacher_temperature_epochs * self.steps), o.student_temperature,
                             o.center_momentum)

        def loss(views):
            n_global = 2
            with torch.no_grad():
                teacher = self.teacher_head(self.features(torch.cat(views[:n_global]), self.teacher_encoder))
            student = [self.head(self.features(torch.cat(views[:n_global])))]
            if len(views) > n_global:
                student.append(self.head(self.features(torch.cat(views[n_global:]))))
            student = torch.cat(student).float().chunk(len(views))
            return criterion(list(teacher.float().chunk(n_global)), list(student), epoch=self.step_count)

        self.loss_fn = loss
        self.ema = [(self.teacher_encoder, self.encoder), (self.teacher_head, self.head)]
        local = max(8, round(32 * 96 / 224))
        return DINOTransform(global_crop_size=32, local_crop_size=local, n_local_views=o.local_crops,
                             gaussian_blur=(0.0, 0.0, 0.0),
                             normalize={"mean": IMAGENET_MEAN, "std": IMAGENET_STD})

    def _schedules(self, batch_size: int) -> float:
        """The toolkit's rate (and DINO's weight decay) for this step, set on lightly's optimiser; the EMA
        momentum returned."""
        o, s = self.opts, self.step_count
        peak = o.lr * batch_size / 256
        lr = cosine_schedule(s, self.steps, peak, final=getattr(o, "min_lr", 0.0),
                             warmup_steps=round(o.warmup_epochs * self.steps))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            if self.name == "dino":
                group["weight_decay"] = cosine_schedule(s, self.steps, o.weight_decay, final=o.weight_decay_end)
        base = getattr(o, "target_momentum", getattr(o, "teacher_momentum", 0.996))
        return ema_momentum(s, self.steps, base)

    def step(self) -> int:
        views = [v.contiguous(memory_format=self.memory) for v in next(self.batches)]
        n = len(views[0])
        momentum = self._schedules(n)
        loss = self.loss_fn(views)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.name == "dino":
            self.head.cancel_last_layer_gradients(self.step_count)
        self.optimizer.step()
        torch.clear_autocast_cache()
        from lightly.models.utils import update_momentum

        for target, online in self.ema:
            update_momentum(online, target, momentum)
        self.step_count += 1
        return n


def _frozen(module: nn.Module) -> nn.Module:
    twin = copy.deepcopy(module)
    twin.requires_grad_(False)
    return twin


# ---- measurements -----------------------------------------------------------------------------------------------
def precision(bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def worker_cpu_seconds(side) -> float:
    """CPU seconds used so far by the side's loader worker (its /proc stat: user + system ticks)."""
    iterator = side.batches.iterator
    if iterator is None or not getattr(iterator, "_workers", None):
        return 0.0
    fields = Path(f"/proc/{iterator._workers[0].pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_round(side, steps: int, bf16: bool) -> tuple[float, float]:
    """Images per second of ``steps`` steps, loader included: per wall second, and per CPU second of the training
    process and its loader worker together (steadier on a shared machine: another job's load takes wall time, not
    this work's CPU time)."""
    images, start = 0, time.perf_counter()
    cpu_start = time.process_time() + worker_cpu_seconds(side)
    for _ in range(steps):
        with precision(bf16):
            images += side.step()
    cpu = time.process_time() + worker_cpu_seconds(side) - cpu_start
    return images / (time.perf_counter() - start), images / cpu


def throughput(name: str, args, arrays) -> dict:
    recipe = recipes(args.jitter)[name]
    ours = Ours(recipe, args.arch, 0, 10_000, arrays["train_x"], args.batch_size)
    theirs = Lightly(recipe, args.arch, 0, 10_000, arrays["train_x"], args.batch_size, args.lightly_channels_last)
    for side in (ours, theirs):
        timed_round(side, 3, args.bf16)  # warm-up: the worker's start, oneDNN's kernel choice
    rates = {"ours": [], "lightly": []}
    for _ in range(args.rounds):
        rates["ours"].append(timed_round(ours, args.round_steps, args.bf16))
        rates["lightly"].append(timed_round(theirs, args.round_steps, args.bf16))
    ours.batches.close()
    theirs.batches.close()
    wall = {k: statistics.median(r[0] for r in v) for k, v in rates.items()}
    cpu = {k: statistics.median(r[1] for r in v) for k, v in rates.items()}
    return {"method": name, "ours": wall["ours"], "lightly": wall["lightly"], "ratio": wall["ours"] / wall["lightly"],
            "ours_cpu": cpu["ours"], "lightly_cpu": cpu["lightly"], "ratio_cpu": cpu["ours"] / cpu["lightly"],
            "load": os.getloadavg()[0], "rounds": rates}


@torch.no_grad()
def knn_top1(side, encoder: nn.Module, arrays, bank: np.ndarray) -> float:
    was = encoder.training
    encoder.eval()

    def feats(images: np.ndarray) -> Tensor:
        out = []
        for start in range(0, len(images), 500):
            x = side.normalise(torch.from_numpy(images[start:start + 500]).permute(0, 3, 1, 2))
            out.append(pooled(encoder(x)).float())
        return torch.cat(out)

    predicted = knn_predict(feats(arrays["train_x"][bank]), torch.from_numpy(arrays["train_y"][bank]),
                            feats(arrays["test_x"]), 10, k=20)
    encoder.train(was)
    return 100.0 * (predicted.numpy() == arrays["test_y"]).mean()


def learning(name: str, seed: int, args, arrays) -> dict:
    recipe = recipes(args.jitter)[name]
    bank = np.random.default_rng(1234).choice(len(arrays["train_x"]), args.knn_train, replace=False)
    row = {"method": name, "seed": seed, "steps": args.steps}
    for label, make in (("ours", lambda: Ours(recipe, args.arch, seed, args.steps, arrays["train_x"],
                                              args.batch_size)),
                        ("lightly", lambda: Lightly(recipe, args.arch, seed, args.steps, arrays["train_x"],
                                                    args.batch_size, args.lightly_channels_last))):
        side = make()
        before = knn_top1(side, side.encoder, arrays, bank)
        start = time.perf_counter()
        for _ in range(args.steps):
            with precision(args.bf16):
                side.step()
        side.batches.close()
        row[label] = {"before": before, "after": knn_top1(side, side.encoder, arrays, bank),
                      "seconds": time.perf_counter() - start}
        print(f"  {name} seed {seed} {label}: kNN {before:.2f} -> {row[label]['after']:.2f} "
              f"({row[label]['seconds']:.0f} s)", flush=True)
    return row


def summarise(path: Path) -> str:
    """Markdown tables of the JSON lines in ``path``: learning (kNN gain per seed, mean and spread = max - min) and
    throughput (medians and ratio)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    lines = []
    learning = [r for r in rows if "seed" in r]
    if learning:
        lines += ["| method | steps | seeds | ours: kNN before -> after, gain per seed | lightly: same | gain ours "
                  "(mean, spread) | gain lightly (mean, spread) |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for name in dict.fromkeys(r["method"] for r in learning):
            mine = sorted((r for r in learning if r["method"] == name), key=lambda r: r["seed"])
            cells, gains = [], {}
            for side in ("ours", "lightly"):
                gains[side] = [r[side]["after"] - r[side]["before"] for r in mine]
                cells.append("; ".join(f"{r[side]['before']:.1f} -> {r[side]['after']:.1f} ({g:+.1f})"
                                       for r, g in zip(mine, gains[side], strict=True)))
            stats = [f"{statistics.mean(g):+.2f}, {max(g) - min(g):.2f}" for g in gains.values()]
            lines.append(f"| {name} | {mine[0]['steps']} | {','.join(str(r['seed']) for r in mine)} | "
                         f"{cells[0]} | {cells[1]} | {stats[0]} | {stats[1]} |")
    speed = [r for r in rows if "ratio" in r]
    if speed:
        lines += ["", "| method | precision | lightly channels_last | images/s: ours / lightly (ratio) | images per "
                  "CPU-s: ours / lightly (ratio) | load |", "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {r['method']} | {'bf16' if r['bf16'] else 'fp32'} | {r['lightly_channels_last']} | "
                  f"{r['ours']:.1f} / {r['lightly']:.1f} ({r['ratio']:.2f}x) | "
                  f"{r.get('ours_cpu', float('nan')):.1f} / {r.get('lightly_cpu', float('nan')):.1f} "
                  f"({r.get('ratio_cpu', float('nan')):.2f}x) | {r.get('load', float('nan')):.1f} |" for r in speed]
    return "\n".join(lines)


def check_same_start(arch: str) -> None:
    """Both sides' backbones are bit-identical at the start (the comparison's premise)."""
    ours = Ours(recipes(0)["simclr"], arch, 0, 10, np.zeros((256, 32, 32, 3), np.uint8), 128).encoder
    theirs = backbone(arch, 0)
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
        if not torch.equal(a, b):
            raise SystemExit(f"backbones differ at {name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="cifar10-jpg:../shared/data/cifar10-jpg")
    ap.add_argument("--cache", type=Path, default=ROOT / "runs" / "peer-lightly" / "cifar10-u8.npz")
    ap.add_argument("--measure", choices=("throughput", "learning"))
    ap.add_argument("--summarise", type=Path, help="print the tables of a --out file and exit")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--arch", default="resnet18-cifar-w16")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--jitter", type=float, default=0.0, help="SimCLR's jitter strength (0: the toolkit's default)")
    ap.add_argument("--bf16", action="store_true", help="both sides under bf16 autocast")
    ap.add_argument("--lightly-channels-last", action="store_true")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--round-steps", type=int, default=8)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--knn-train", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, help="append each result as one JSON line to this file")
    args = ap.parse_args()
    if args.summarise:
        print(summarise(args.summarise))
        return
    if args.measure is None:
        ap.error("--measure or --summarise is required")
    torch.set_num_threads(args.threads)
    import lightly

    check_same_start(args.arch)
    arrays = cifar_arrays(args.data, args.cache)
    print(f"# lightly {lightly.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.arch}, batch {args.batch_size}, {'bf16' if args.bf16 else 'fp32'}", flush=True)
    for name in args.methods.split(","):
        rows = ([throughput(name, args, arrays)] if args.measure == "throughput"
                else [learning(name, int(s), args, arrays) for s in args.seeds.split(",")])
        for row in rows:
            if args.measure == "throughput":
                print(f"{name:8s} ours {row['ours']:7.1f} images/s  lightly {row['lightly']:7.1f}  "
                      f"ratio {row['ratio']:.2f}x; per CPU-s: ours {row['ours_cpu']:.1f}  lightly "
                      f"{row['lightly_cpu']:.1f}  ratio {row['ratio_cpu']:.2f}x (load {row['load']:.1f})", flush=True)
            if args.out:
                with args.out.open("a") as f:
                    f.write(json.dumps({**row, "bf16": args.bf16, "lightly_channels_last":
                                        args.lightly_channels_last, "arch": args.arch}) + "\n")


if __name__ == "__main__":
    main()
