"""`ablation`: Table 1, MonoGAN trained on Image B rendered with every subset of {scale, rotation, jitter}, against
the supervised and random baselines (shared with `cifar10` through --work)."""

from __future__ import annotations

import functools
from pathlib import Path

from experiments.commands import render_stage
from experiments.paper_cifar import PRESETS, baseline_reports, baselines, train_and_probe, write_report
from experiments.registry import Target, register
from experiments.stage import Stage

ABLATION = {  # Table 1 rows: (label, scale, rotate, jitter)
    "none": ("(c) No aug.", False, False, False),
    "jitter": ("(d) Jitter", False, False, True),
    "rotation": ("(e) Rotation", False, True, False),
    "scale": ("(f) Scale", True, False, False),
    "rot-jitter": ("(g) Rot. & jitter", False, True, True),
    "rot-scale": ("(h) Rot. & scale", True, True, False),
    "jitter-scale": ("(i) Jitter & scale", True, False, True),
    "all": ("(j) All", True, True, True),
}



def ablation_stages(work: Path, preset: dict, src: Path, data: str, device: str) -> tuple[list[Stage], list]:
    stages, reports = [], []
    for name, (label, scale, rotate, jitter) in ABLATION.items():
        shards = work / "shards" / f"cifar-B-{name}"
        stages.append(render_stage(shards, src, preset["n_patches"], scale, rotate, jitter))
        run = "monogan" if name == "all" else f"monogan-{name}"
        stages += train_and_probe(work, "monogan", shards, preset, data, device, run_name=run)
        reports.append((work / "probes" / run / "results.json", label))
    stages += baselines(work, preset, data, device)
    return stages, [*baseline_reports(work, "(a) Fully sup.", "(b) Random feat."), *reports]


TARGET = register(Target("ablation", ablation_stages, functools.partial(write_report, title="CIFAR-10 Table 1"),
                         PRESETS, work="reproduce-cifar10", order=20))
