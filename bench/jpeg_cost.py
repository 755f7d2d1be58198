"""What does the JPEG copy of CIFAR-10 cost the linear probes? An estimate from one more JPEG generation.

The shared copy (`shared/data/cifar10-jpg`) was encoded at quality 75 with 4:2:0 chroma subsampling: the files'
quantisation tables are libjpeg's quality-75 tables and their sampling is 2x2 (`inspect` prints both). At 32x32 that
leaves the colour channels 16x16. The original pixels cannot be had here, so the cost of that first generation
cannot be probed directly; this script makes a second generation whose cost can be, and measures how large it is
against a first generation on clean images of the same size.

Re-encoding on the same block grid at the same quality gives back the same pixels (JPEG is idempotent there:
`inspect` measures it), so the second generation is encoded on a grid shifted by OFFSET pixels (edge-reflected
border, cropped back after decoding), where the quantisation loses information again.

    .venv/bin/python bench/jpeg_cost.py inspect ../shared/data/cifar10-jpg \
        --clean ../shared/data/imagenet-sample-1000.tar
    .venv/bin/python bench/jpeg_cost.py reencode ../shared/data/cifar10-jpg runs/exp/cifar10-jpg-gen2
    .venv/bin/probe linear ENCODER --data cifar10-jpg:runs/exp/cifar10-jpg-gen2 --out PROBE_DIR

`inspect` prints, as PSNR over the whole set (from the mean squared error, so identical images do not give an
infinite mean), the second generation on the CIFAR copy, and the first and second generation on clean 32x32 photos
(the ImageNet sample, centre square box-filtered down, which averages its own JPEG artefacts away).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, JpegImagePlugin
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.errors import DataError  # noqa: E402
from pipeline.sources import read_rgb  # noqa: E402
from probe.datasets import open_data  # noqa: E402

SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}
SPLITS = ("train", "test")
SIDE = 32


def encode_decode(pixels: np.ndarray, quality: int, subsampling: str) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality, subsampling=SUBSAMPLING[subsampling])
    return np.asarray(Image.open(buffer).convert("RGB"))


def encode_decode_shifted(pixels: np.ndarray, quality: int, subsampling: str, offset: int) -> np.ndarray:
    """One JPEG generation on a block grid shifted by `offset` pixels down and right (16 px = one 4:2:0 MCU)."""
    if offset == 0:
        return encode_decode(pixels, quality, subsampling)
    height, width = pixels.shape[:2]
    # pad to whole 16x16 MCUs so no edge block is padded by the encoder's own rule
    pad_after_h = -(offset + height) % 16
    pad_after_w = -(offset + width) % 16
    padded = np.pad(pixels, ((offset, pad_after_h), (offset, pad_after_w), (0, 0)), mode="reflect")
    return encode_decode(padded, quality, subsampling)[offset:offset + height, offset:offset + width]


def cifar_root(path: Path) -> Path:
    """The folder holding train/<class>/ and test/<class>/ of a `cifar10-jpg:` data set (its tarballs extracted)."""
    data = open_data(f"cifar10-jpg:{path}")
    return Path(data.notes.get("extracted_to", path))


def image_files(root: Path, split: str) -> list[Path]:
    files = sorted(p for p in (root / split).glob("*/*") if p.is_file())
    if not files:
        raise DataError(f"{root / split}: no images")
    return files


def squared_error(before: np.ndarray, after: np.ndarray) -> float:
    return float(np.sum((before.astype(np.float64) - after.astype(np.float64)) ** 2))


def psnr(total_squared_error: float, values: int) -> float:
    mse = total_squared_error / values
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def set_psnr(pairs: Iterator[tuple[np.ndarray, np.ndarray]]) -> float:
    """PSNR (dB) of the mean squared error over every pixel of every pair."""
    total, count = 0.0, 0
    for before, after in pairs:
        total += squared_error(before, after)
        count += before.size
    return psnr(total, count)


def clean_photos(imagenet_tar: Path, limit: int) -> list[np.ndarray]:
    """Clean 32x32 photos: each photo's centre square box-filtered down (averaging its JPEG artefacts away)."""
    photos = []
    with tarfile.open(imagenet_tar) as tar:
        for member in tar:
            if not member.isfile() or not member.name.lower().endswith((".jpeg", ".jpg")):
                continue
            with Image.open(io.BytesIO(tar.extractfile(member).read())) as image:
                image = image.convert("RGB")
                width, height = image.size
                side = min(width, height)
                left, top = (width - side) // 2, (height - side) // 2
                square = image.crop((left, top, left + side, top + side)).resize((SIDE, SIDE), Image.BOX)
            photos.append(np.asarray(square))
            if len(photos) == limit:
                break
    if not photos:
        raise DataError(f"{imagenet_tar}: no JPEG photos")
    return photos


def inspect(args: argparse.Namespace) -> None:
    files = image_files(cifar_root(args.cifar), "test")
    files = files[:: max(1, len(files) // args.limit)][: args.limit]  # every class, not the first folder
    with Image.open(files[0]) as first:
        tables = first.quantization
        sampling = {v: k for k, v in SUBSAMPLING.items()}.get(JpegImagePlugin.get_sampling(first), "other")
    print(f"{files[0]}: luminance table starts {list(tables[0])[:8]}, chroma sampling {sampling}")
    cifar = [read_rgb(p) for p in files]
    same_grid = set_psnr((x, encode_decode(x, args.quality, args.subsampling)) for x in cifar)

    def shifted(pixels: np.ndarray) -> np.ndarray:
        return encode_decode_shifted(pixels, args.quality, args.subsampling, args.offset)

    print(f"CIFAR copy, re-encoded on the same grid: PSNR {same_grid:.2f} dB ({len(cifar)} test images)")
    print(f"CIFAR copy, second generation (grid offset {args.offset}): PSNR "
          f"{set_psnr((x, shifted(x)) for x in cifar):.2f} dB")
    if args.clean:
        photos = clean_photos(args.clean, args.limit)
        once = [encode_decode(x, args.quality, args.subsampling) for x in photos]
        first = set_psnr(zip(photos, once, strict=True))
        print(f"clean 32x32 photos ({len(photos)}), first generation: PSNR {first:.2f} dB")
        print(f"clean 32x32 photos, second generation (grid offset {args.offset}): PSNR "
              f"{set_psnr((x, shifted(x)) for x in once):.2f} dB")


def reencode(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if out.exists():
        raise DataError(f"{out}: already exists; remove it or name another folder")
    root = cifar_root(args.cifar)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        for split in SPLITS:
            files = image_files(root, split)
            total, count = 0.0, 0
            for path in tqdm(files, desc=split, unit="img"):
                before = read_rgb(path)
                after = encode_decode_shifted(before, args.quality, args.subsampling, args.offset)
                total += squared_error(before, after)
                count += before.size
                # PNG, so the decoded second generation is stored exactly (a third JPEG pass would not be)
                target = scratch / split / path.parent.name / f"{path.stem}.png"
                target.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(after).save(target)
            print(f"{split}: {len(files)} images, PSNR against the shared copy {psnr(total, count):.2f} dB")
        os.replace(scratch, out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("inspect", "reencode"):
        command = commands.add_parser(name)
        command.add_argument("cifar", type=Path, help="a cifar10-jpg folder (train.tar.gz and test.tar.gz)")
        if name == "reencode":
            command.add_argument("out", type=Path)
        else:
            command.add_argument("--clean", type=Path, help="the ImageNet sample tarball, for clean photos")
            command.add_argument("--limit", type=int, default=2000, help="images to measure")
        command.add_argument("--quality", type=int, default=75)
        command.add_argument("--subsampling", choices=sorted(SUBSAMPLING), default="4:2:0")
        command.add_argument("--offset", type=int, default=4, help="grid shift of the second generation, pixels")
    args = parser.parse_args()
    try:
        {"inspect": inspect, "reencode": reencode}[args.command](args)
    except DataError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
