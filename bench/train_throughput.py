"""Training throughput per method against the shard reader's decode rate, on the same machine.

For each method: images/s of training steps on device-resident batches (the loader taken out), after a
warm-up. For the reader: decoded samples/s of `pipeline.shard_reader.open_shards` through a DataLoader with W
workers, the way the trainers read. The ratio line says which one limits an end-to-end run. A DeepCluster
clustering pass (PCA-whitening + L2 + k-means on synthetic fc7-sized features) is timed too, at --cluster-n
samples, drawn and projected in chunks as DeepCluster streams them (1,281,167 x 4096 floats would be 21 GB).
Steps run with train's kernel settings (cuDNN autotuning and TF32 on CUDA, train.run.loop.backend_settings) and its
bf16 autocast region (train.run.loop.amp_autocast).

    .venv/bin/python bench/train_throughput.py                # CPU: CIFAR encoder, 32 px
    .venv/bin/python bench/train_throughput.py --methods simclr@resnet18-cifar,dino@vit-tiny  # METHOD@ARCH
    .venv/bin/python bench/train_throughput.py --arch alexnet --size 256 --batch-size 256 --cluster-n 1281167  # GPU

With ``--real-set KIND:PATH`` (e.g. ``imagefolder:`` of the shared ImageNet sample) it also times the real-set
loader of ``train METHOD KIND:PATH`` (decode in the workers, JPEG DCT scaling, shorter side to S, centre square)
beside the shard reader on patches rendered at the same S, at the methods' loader scales (``--real-sizes``:
256 for RotNet/DeepCluster's 224, 128 for BiGAN's 112, 32 for the CIFAR encoders), with and without DCT scaling.
With ``--workers 1`` the rates are per worker core.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from train.data.sources import Batch, ShardSource, default_workers, usable_cpus  # noqa: E402
from train.methods import RunContext, get_method, list_methods  # noqa: E402
from train.models import clustering  # noqa: E402
from train.process.devices import pick_device  # noqa: E402
from train.run.loop import amp_autocast, backend_settings  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_method(name: str, arch: str, size: int, batch_size: int, steps: int, warmup: int,
                 device: torch.device, amp: bool) -> float:
    cls = get_method(name)
    torch.manual_seed(0)
    n = max(batch_size * 4, 1024)
    m = cls(cls.Options(**({"k": 100} if name == "deepcluster" else {})), arch, num_samples=n,
            num_classes=1000 if cls.data_kind == "labelled" else None, device=device)
    m.to(device)
    if device.type == "cuda":
        m.to(memory_format=torch.channels_last)
        m.channels_last = True
    m.configure(RunContext.for_epochs(cls.default_epochs, device=device))
    if name == "deepcluster":
        m.set_labels(torch.arange(n) % 100, epoch=0)
    g = torch.Generator().manual_seed(0)
    imgs = (torch.rand(batch_size, 3, size, size, generator=g) * 255).to(torch.uint8).to(device)
    batch = Batch(imgs, torch.arange(batch_size, device=device),
                  torch.randint(0, 1000, (batch_size,), device=device) if cls.data_kind == "labelled" else None)
    use_amp = amp and device.type == "cuda"
    m.train()

    def step():
        with amp_autocast(device.type, use_amp):
            m.training_step(batch, g)

    for _ in range(warmup):
        step()
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * batch_size / (time.perf_counter() - t)


def bench_reader(location: str, batch_size: int, workers: int, max_samples: int) -> float:
    src = ShardSource(location, shuffle_buffer=1000)
    seen, t = 0, None
    for i, b in enumerate(src.loader(0, batch_size, seed=0, workers=workers)):
        if i == 2:  # skip worker start-up
            t, seen = time.perf_counter(), 0
        seen += len(b)
        if seen >= max_samples:
            break
    if t is None:
        raise SystemExit("the set is too small to time the reader; render more patches")
    return seen / (time.perf_counter() - t)


def feature_chunks(n: int, dim: int, device: torch.device, chunk: int = 65536, seed: int = 0):
    """n synthetic fc7-like rows in chunks of at most ``chunk``, drawn on ``device`` (the first chunk holds the PCA
    sample)."""
    g = torch.Generator(device).manual_seed(seed)
    for start in range(0, n, chunk):
        yield torch.randn(min(chunk, n - start), dim, generator=g, device=device)


def bench_clustering(n: int, dim: int, k: int, device: torch.device, backend: str,
                     pca_samples: int = 20_000) -> dict[str, float]:
    """PCA fit + projection + L2 (seconds, the rows' generation left out) and k-means, as one clustering pass does
    them in fp32 (clustering.full_fp32); one chunk of raw rows exists at a time."""
    chunks = feature_chunks(n, dim, device, chunk=max(65536, pca_samples))
    generating, reduced, pca = 0.0, [], None
    with clustering.full_fp32(device.type):
        t0 = time.perf_counter()
        while True:
            t = time.perf_counter()
            rows = next(chunks, None)
            sync(device)
            generating += time.perf_counter() - t
            if rows is None:
                break
            if pca is None:
                pca = clustering.fit_pca(rows[:pca_samples], 256)
            reduced.append(pca(rows))
        x = clustering.l2_normalize(torch.cat(reduced))
        sync(device)
        t1 = time.perf_counter()
        clustering.kmeans(x, k, niter=20, seed=0, backend=backend)
        sync(device)
        t2 = time.perf_counter()
    return {"pca_s": t1 - t0 - generating, "kmeans_s": t2 - t1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="cifar")
    ap.add_argument("--size", type=int, default=32, help="rendered patch size (the methods crop/resize it)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--methods", default=",".join(list_methods()),
                    help="comma-separated METHOD or METHOD@ARCH (default ARCH: --arch; '': no step timing)")
    ap.add_argument("--set", default=None, help="a rendered set to read (default: render a temporary one)")
    ap.add_argument("--render-n", type=int, default=4096, help="patches in the temporary set (0 and no --set: no "
                    "reader timing)")
    ap.add_argument("--workers", type=int, default=default_workers(), help="loader workers (default: train's)")
    ap.add_argument("--cluster-n", type=int, default=50_000, help="0: skip the clustering benchmark")
    ap.add_argument("--cluster-dim", type=int, default=0, help="feature width (0: 4096)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--real-set", default=None, help="KIND:PATH: time the real-set loader beside the shard reader")
    ap.add_argument("--real-sizes", default="256,128,32", help="loader scales for --real-set (px, comma-separated)")
    ap.add_argument("--no-amp", action="store_true")
    args = ap.parse_args()

    device = pick_device(args.device)
    what = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{usable_cpus()} CPU cores"
    print(f"# device {device} ({what}), torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.2f}")
    with backend_settings(device):  # train's kernel settings: cuDNN autotuning and TF32 on CUDA
        run(args, device)


def run(args: argparse.Namespace, device: torch.device) -> None:
    rates = {}
    for entry in filter(None, args.methods.split(",")):
        name, _, arch = entry.partition("@")
        arch = arch or args.arch
        ips = bench_method(name, arch, args.size, args.batch_size, args.steps, args.warmup, device,
                           not args.no_amp)
        rates[entry] = ips
        print(f"train  {name:12s} {arch:14s} {args.size:4d} px  batch {args.batch_size:4d}  "
              f"{ips:10.1f} images/s")

    if args.set is not None or args.render_n > 0:
        bench_reading(args, rates)
    if args.real_set:
        with tempfile.TemporaryDirectory() as tmp:
            packed = pack_real_set(args.real_set, Path(tmp))
            for size in (int(v) for v in args.real_sizes.split(",")):
                bench_real_set(args, size, packed)
    if args.cluster_n > 0:
        dim = args.cluster_dim or 4096
        k = clustering.default_k(args.cluster_n)
        backend = "torch" if device.type == "cuda" else "faiss"
        c = bench_clustering(args.cluster_n, dim, k, device, backend)
        print(f"cluster deepcluster n={args.cluster_n} dim={dim}->256 k={k} ({backend}): "
              f"PCA+L2 {c['pca_s']:.1f} s, k-means 20 iters {c['kmeans_s']:.1f} s")


def bench_reading(args: argparse.Namespace, rates: dict[str, float]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        location = args.set
        if location is None:
            from pipeline.config import RenderConfig
            from pipeline.render import render_set

            location = str(Path(tmp) / "set")
            render_set(location, RenderConfig(n_patches=args.render_n, size=args.size,
                                              shard_size=max(64, args.render_n // 8)),
                       workers=args.workers, log=lambda *a, **k: None)
        reader = bench_reader(location, args.batch_size, args.workers, max_samples=args.render_n or 20_000)
    print(f"reader open_shards decode   {args.size:4d} px  workers {args.workers:3d}  "
          f"{reader:10.1f} samples/s")
    for name, ips in rates.items():
        limit = "the reader limits" if reader < ips else "training limits"
        print(f"ratio  {name:27s} training/reader = {ips:.1f}/{reader:.1f} = {ips / reader:.3g}  ({limit})")


def bench_source(source, batch_size: int, workers: int, max_samples: int) -> float:
    """Images/s of one pass of ``source``'s loader, the first two batches (worker start-up) not counted."""
    seen, t = 0, None
    for i, b in enumerate(source.loader(0, batch_size, seed=0, workers=workers)):
        if i == 2:
            t, seen = time.perf_counter(), 0
        seen += len(b)
        if seen >= max_samples:
            break
    if t is None:
        raise SystemExit(f"{source.description}: too small to time; use more images")
    return seen / (time.perf_counter() - t)


def pack_real_set(spec: str, tmp: Path) -> Path | None:
    """The train split of an ``imagefolder:`` set packed by ``pipeline pack`` (as ``shards:`` reads it), else None."""
    from pipeline.pack import pack_set
    from train.data.specs import DataSpec

    parsed = DataSpec.parse(spec)
    if parsed.kind != "imagefolder":
        return None
    pack_set(Path(parsed.path) / "train", tmp / "packed" / "train", shard_size=256, log=lambda *a, **k: None)
    return tmp / "packed"


def bench_packed_reader(packed: Path, batch_size: int, workers: int) -> float:
    """The shard reader itself on the packed JPEGs (full-size decode, no resize; what `probe --data shards:` pays
    before its transforms)."""
    from torch.utils.data import DataLoader

    from pipeline.shard_reader import open_shards

    pipe = open_shards(packed / "train", decode="rgb", split_by_node=False)
    loader = DataLoader(pipe, batch_size=batch_size, num_workers=workers, collate_fn=len)
    seen, t = 0, None
    for i, n in enumerate(loader):
        if i == 2:
            t, seen = time.perf_counter(), 0
        seen += n
    return seen / (time.perf_counter() - t)


def bench_real_set(args: argparse.Namespace, size: int, packed: Path | None) -> None:
    """The real-set loader at ``size`` px (DCT scaling on and off; from files and from packed shards) beside the
    shard reader on ``size`` px rendered patches and on the packed JPEGs."""
    from pipeline.config import RenderConfig
    from pipeline.render import render_set
    from train.data.real_sets import RealImageSource

    source = RealImageSource(args.real_set, load_size=size)
    n = source.num_samples
    with tempfile.TemporaryDirectory() as tmp:
        render_set(Path(tmp) / "set", RenderConfig(n_patches=n, size=size, shard_size=max(64, n // 8)),
                   workers=max(1, args.workers), log=lambda *a, **k: None)
        reader = bench_reader(str(Path(tmp) / "set"), args.batch_size, args.workers, max_samples=n)
    real = bench_source(source, args.batch_size, args.workers, n)
    full = None
    if getattr(source.dataset, "dct_scaling", None) is not None:
        source.dataset.dct_scaling = False
        full = bench_source(source, args.batch_size, args.workers, n)
    print(f"reader open_shards (rendered)  {size:4d} px  workers {args.workers:3d}  {reader:10.1f} samples/s")
    print(f"real   {args.real_set} -> {size} px  workers {args.workers:3d}  {real:10.1f} images/s  "
          f"(real/reader = {real / reader:.2f})")
    if full is not None:
        print(f"real   without DCT scaling -> {size} px  workers {args.workers:3d}  {full:10.1f} images/s  "
              f"(DCT scaling gains {real / full:.2f}x)")
    if packed is not None:
        raw = bench_packed_reader(packed, args.batch_size, args.workers)
        from_shards = bench_source(RealImageSource(f"shards:{packed}", load_size=size), args.batch_size,
                                   args.workers, n)
        print(f"reader open_shards (packed JPEGs, full decode)  workers {args.workers:3d}  {raw:10.1f} samples/s")
        print(f"real   shards:{packed.name} -> {size} px  workers {args.workers:3d}  {from_shards:10.1f} images/s  "
              f"(real folder/packed reader = {real / raw:.2f}, real shards/packed reader = {from_shards / raw:.2f})")


if __name__ == "__main__":
    main()
