"""The stages every target builds from: Image B rendered into a set, a linear probe of an encoder, the CIFAR data a
supervised run trains on, and where probes on a data set go."""

from __future__ import annotations

from pathlib import Path

from experiments.stage import BIN, Stage


def render_stage(shards: Path, src: Path, n: int, scale: bool, rotate: bool, jitter: bool, *, n_src: int = 1,
                 seed: int | None = None) -> Stage:
    """`pipeline render` of `n_src` images of `src` (a file, or a folder picked from by the seeded --n-src pick)
    into `n` patches of 32 px, with the augmentations that are on; `seed` None: render's default, unnamed, so the
    one-image stages keep the command they always had."""
    cmd = [str(BIN / "pipeline"), "render", "--n-src", str(n_src), "--src", str(src), "--size", "32",
           "--n-patches", str(n), "--out", str(shards)]
    cmd += [] if seed is None else ["--seed", str(seed)]
    cmd += [flag for on, flag in ((scale, "--no-scale"), (rotate, "--no-rotate"), (jitter, "--no-jitter")) if not on]
    return Stage(f"render-{shards.name}", cmd, [shards / "manifest.json"])


def probe_stage(work: Path, name: str, encoder: str, preset: dict, data: str, device: str) -> Stage:
    """`probe linear` of one encoder on `data`; on CIFAR-100 the stage is named probe-cifar100-NAME (the CIFAR-10
    probe of the same encoder keeps probe-NAME)."""
    folder = probe_folder(work, data)
    out = folder / name
    inputs = [] if encoder.startswith("random:") else [Path(encoder)]
    prefix = "probe-" if folder.name == "probes" else f"probe-{folder.name.removeprefix('probes-')}-"
    return Stage(f"{prefix}{name}", [str(BIN / "probe"), "linear", encoder, "--data", data, "--out", str(out),
                                   "--device", device, *preset["probe"]], [out / "results.json"], inputs=inputs)


def data_set_of(data: str) -> str:
    """The paper's data set a --data specification holds: cifar100 for `cifar100:`, else CIFAR-10."""
    return "cifar100" if data.partition(":")[0] == "cifar100" else "cifar10"


def probe_folder(work: Path, data: str) -> Path:
    """Where probes on `data` go: WORK/probes for CIFAR-10 (either copy), WORK/probes-cifar100 for CIFAR-100, so
    that targets sharing --work keep their probes apart."""
    return work / ("probes" if data_set_of(data) == "cifar10" else f"probes-{data_set_of(data)}")


def workers_option(preset: dict) -> list[str]:
    """The preset's loader workers for training stages, or none: train's default for the machine (the GPU preset)."""
    return ["--workers", str(preset["workers"])] if "workers" in preset else []


def supervised_data(data: str) -> str:
    """What `train supervised` reads for the probe data `data`: the JPEG copy's extracted image folders, else the
    path itself."""
    kind, _, path = data.partition(":")
    return str(cifar_imagefolder(Path(path)) if kind == "cifar10-jpg" else Path(path))


def cifar_imagefolder(path: Path) -> Path:
    """The shared CIFAR-10 JPEG tarballs, extracted once (the same cache `probe` uses) into train/ and test/."""
    from train.data.archive import default_cache_dir, extracted

    if (path / "train").is_dir():
        return path
    return extracted([path / "train.tar.gz", path / "test.tar.gz"], default_cache_dir(), name="cifar10-jpg")
