"""Training steps on the CPU in fp32 against bf16 autocast, per method, in the same process, and the fraction of
the CPU's peak FLOP/s each achieves.

Each method's step is timed on one batch held in memory (the loader taken out), channels_last as the trainer runs
it, alternating fp32 and bf16 rounds so that a change in the machine's load hits both; the best round of each is
kept. The ratio says what bf16 autocast (the default on CPUs with AVX512-BF16 or AMX; ``--no-amp`` turns it off)
gains on this CPU: such CPUs run bf16 convolutions natively, others emulate them and lose.

FLOPs per step are counted by ``torch.utils.flop_counter.FlopCounterMode`` over one whole ``training_step``
(forward, backward, and every extra forward: EMA targets, keys, teachers, the critic's penalty): convolutions and
matrix products, multiply and add counted as 2; element-wise work is not counted, so the fractions are lower
bounds. Two peaks, both printed:
- measured: the best rate of a 2048 x 2048 matrix product (oneDNN/MKL) in the same dtype on the same threads, the
  rate the hardware reaches on the friendliest work;
- nominal: cores x clock x FLOP per cycle per core. The clock is /proc/cpuinfo's (the base clock; boost is higher,
  so a fraction above 1 is possible); FLOP per cycle from the core's vector units: AMD Zen 4 (family 25, with
  AVX-512) has two 256-bit FMA pipes, 2 x 8 x 2 = 32 fp32, and its VDPBF16PS doubles that for bf16 (64); other
  CPUs: ``--flop-per-cycle FP32,BF16``.

    .venv/bin/python bench/cpu_bf16.py                   # every method, CIFAR encoders, batch 64
    .venv/bin/python bench/cpu_bf16.py --methods rotnet,simclr --threads 1 --rounds 5
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from train.data.sources import Batch  # noqa: E402
from train.methods import RunContext, get_method, list_methods  # noqa: E402

# the quick presets' settings (experiments/paper_cifar.py, experiments/targets/modern.py); DeepCluster's k at
# CIFAR scale
OPTIONS = {"monogan": {"g_upsampling": "resize"}, "rotnet": {"head_dim": 1024},
           "deepcluster": {"head_dim": 1024, "k": 100}, "supervised": {"head_dim": 1024},
           "distill": {"teacher": "random:cifar"}}  # a seeded random teacher: the cost of a step, not its use
ARCH = {name: "resnet18-cifar-w16" for name in ("simclr", "mocov2", "byol", "dino")}  # modern.py's quick preset
CONTEXTS = {"fp32": contextlib.nullcontext, "bf16": lambda: torch.autocast("cpu", dtype=torch.bfloat16)}
ZEN4_FLOP_PER_CYCLE = (32, 64)  # fp32, bf16 per core (see the module doc)


def build(name: str, batch_size: int):
    """The method configured as the trainer runs it, with one batch held in memory."""
    cls = get_method(name)
    torch.manual_seed(0)
    model = cls(cls.Options(**OPTIONS.get(name, {})), ARCH.get(name, "cifar"), num_samples=1024,
                num_classes=10 if cls.data_kind == "labelled" else None, device=torch.device("cpu"))
    model.to(memory_format=torch.channels_last)
    model.channels_last = True
    model.configure(RunContext.for_epochs(10, steps_per_epoch=16))
    if name == "deepcluster":
        model.set_labels(torch.arange(1024) % 100, epoch=0)
    gen = torch.Generator().manual_seed(0)
    images = (torch.rand(batch_size, 3, 32, 32, generator=gen) * 255).to(torch.uint8)
    batch = Batch(images, torch.arange(batch_size),
                  torch.randint(0, 10, (batch_size,)) if cls.data_kind == "labelled" else None)
    model.train()
    return model, batch, gen


def step_flops(model, batch: Batch, gen: torch.Generator) -> int | None:
    """FLOPs of one training step (see the module doc for what is counted); None where the counter cannot follow
    the step (torch 2.14's FlopCounterMode refuses the double backward of a WGAN-GP gradient penalty)."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with FlopCounterMode(display=False) as counter:
            model.training_step(batch, gen)
    except RuntimeError:
        return None
    return counter.get_total_flops()


def time_steps(model, batch: Batch, gen: torch.Generator, steps: int, rounds: int) -> dict[str, float]:
    """Best seconds per step in fp32 and under bf16 autocast, rounds alternating."""
    best = {mode: float("inf") for mode in CONTEXTS}
    for _ in range(rounds):
        for mode, context in CONTEXTS.items():
            for _ in range(2):  # warm-up: oneDNN picks and caches its kernels per shape and dtype
                with context():
                    model.training_step(batch, gen)
            t = time.perf_counter()
            for _ in range(steps):
                with context():
                    model.training_step(batch, gen)
            best[mode] = min(best[mode], (time.perf_counter() - t) / steps)
    return best


def gemm_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """The best FLOP/s of an n x n matrix product in ``dtype`` on this process's threads."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def nominal_peak(flop_per_cycle: tuple[int, int] | None) -> tuple[float, float, str]:
    """fp32 and bf16 FLOP/s from cores x clock x FLOP per cycle, and how they were derived."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields = dict(line.split(":", 1) for line in info.splitlines()[:30] if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    mhz = float(fields.get("cpu MHz", "nan"))
    zen4 = fields.get("vendor_id") == "AuthenticAMD" and fields.get("cpu family") == "25" and "avx512f" in info
    per_cycle = flop_per_cycle or (ZEN4_FLOP_PER_CYCLE if zen4 else None)
    if per_cycle is None:
        return float("nan"), float("nan"), "unknown core: pass --flop-per-cycle FP32,BF16"
    cores = torch.get_num_threads()
    how = (f"{cores} cores x {mhz / 1000:.3f} GHz x {per_cycle[0]} / {per_cycle[1]} FLOP per cycle "
           f"({'AMD Zen 4, two 256-bit FMA pipes' if zen4 and not flop_per_cycle else 'given'})")
    return cores * mhz * 1e6 * per_cycle[0], cores * mhz * 1e6 * per_cycle[1], how


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default=None, help="comma-separated (default: every registered method)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--flop-per-cycle", default=None, help="FP32,BF16 FLOP per cycle per core (default: known "
                    "cores only)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from train.process.devices import cpu_bf16_instructions

    per_cycle = tuple(int(v) for v in args.flop_per_cycle.split(",")) if args.flop_per_cycle else None
    nominal = nominal_peak(per_cycle)
    measured = {"fp32": gemm_peak(torch.float32), "bf16": gemm_peak(torch.bfloat16)}
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16: "
          f"{', '.join(cpu_bf16_instructions()) or 'none'}, batch {args.batch_size}")
    print(f"# peak, measured (2048^2 GEMM): fp32 {measured['fp32'] / 1e9:.0f}, bf16 {measured['bf16'] / 1e9:.0f} "
          f"GFLOP/s; nominal: fp32 {nominal[0] / 1e9:.0f}, bf16 {nominal[1] / 1e9:.0f} GFLOP/s ({nominal[2]})")
    print("| method | GFLOP/step | fp32 images/s | bf16 images/s | bf16/fp32 | fp32 GFLOP/s (of GEMM, of nominal) "
          "| bf16 GFLOP/s (of GEMM, of nominal) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in args.methods.split(",") if args.methods else list_methods():
        model, batch, gen = build(name, args.batch_size)
        flops = step_flops(model, batch, gen)
        best = time_steps(model, batch, gen, args.steps, args.rounds)
        cells = []
        for mode, peak in (("fp32", 0), ("bf16", 1)):
            rate = (flops or float("nan")) / best[mode]
            cells.append(f"{rate / 1e9:.0f} ({rate / measured[mode]:.0%}, {rate / nominal[peak]:.0%})"
                         if flops else "not counted")
        shown = f"{flops / 1e9:.1f}" if flops else "not counted"
        print(f"| {name} | {shown} | {args.batch_size / best['fp32']:.0f} | "
              f"{args.batch_size / best['bf16']:.0f} | {best['fp32'] / best['bf16']:.2f}x | {' | '.join(cells)} |",
              flush=True)


if __name__ == "__main__":
    main()
