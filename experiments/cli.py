"""Reproduce the paper's CIFAR-10 results end to end: render -> train -> probe -> report, resumable stage by stage.

    python -m experiments cifar10  [--preset quick|full] [--work runs/reproduce-cifar10]
    python -m experiments ablation [--preset quick|full] [--work runs/reproduce-cifar10]
    python -m experiments cifar100 --data cifar100:PATH [--preset quick|full] [--work ...]
    python -m experiments modern   [--preset quick|full] [--work runs/reproduce-modern]
    python -m experiments continuum [--preset quick|full] [--work runs/reproduce-cifar10]
    python -m experiments distill  [--preset quick|full] [--data cifar100:PATH] [--work runs/reproduce-distill]

(`python experiments/reproduce.py TARGET ...` is the same command.) The targets are the modules of
experiments/targets/: `cifar10` is Table 3's CIFAR-10 rows, `cifar100` its CIFAR-100 columns (the pickles must be
given: the set is not in shared/data), `ablation` Table 1, `modern` the same question asked of SimCLR, MoCo v2,
BYOL and DINO on a ResNet-18 (issue 21), `continuum` Table 2's N = 1, 10, 1,000 and full set at CIFAR scale,
`distill` the sequel's single-image distillation of a classifier. Targets run with the same --work folder share
their common stages.

Every stage records its command, wall time and the commit in WORK/stages/NAME.json when it succeeds; a stage whose
record and outputs exist is skipped, so the same command resumes after an interruption (training resumes from its
last checkpoint). `--time-limit` stops cleanly after that many seconds (exit status 3: run the command again), so a
preset can be run as a series of bounded batch commands. `--stages` runs a subset of the stages, and
`--report-only` writes the report from the stages finished so far (experiments/stage.py). Every stage's command is
checked against its tool's options before any stage runs, so a preset's typo is one line at once.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
import time
from pathlib import Path

from common.errors import ToolkitError
from experiments.registry import Target, targets
from experiments.stage import (
    ROOT,
    SHARED,
    Interrupted,
    Stage,
    StageFailed,
    TimeLimit,
    finished_record,
    ran_before,
    run_stage,
)
from experiments.tool_options import PresetError, check_stages


def positive_seconds(text: str) -> float:
    """--time-limit: a positive number of seconds, refused up front (a spent limit would stop the first stage
    part-way, and 0 would silently mean no limit)."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not seconds > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text!r}: must be a positive number of seconds")
    return seconds


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    presets = sorted({name for target in targets().values() for name in target.presets})
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    ap.add_argument("target", choices=list(targets()))
    ap.add_argument("--preset", choices=presets, default="quick")
    ap.add_argument("--work", type=Path, default=None, help="default runs/reproduce-cifar10 (modern: -modern)")
    ap.add_argument("--src", type=Path, default=SHARED / "paper-images" / "animals.png", help="Image B by default")
    ap.add_argument("--data", default=None,
                    help="probe/supervised data as KIND:PATH (cifar10-jpg:DIR or cifar10:cifar-10-batches-py; "
                         "cifar100:cifar-100-python for cifar100, which requires it); default: "
                         f"cifar10-jpg:{SHARED / 'cifar10-jpg'}")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--time-limit", type=positive_seconds, default=None,
                    help="seconds; stop cleanly (exit 3) when reached")
    ap.add_argument("--stages", default=None,
                    help="comma-separated glob patterns (e.g. 'train-monogan,probe-monogan'): run only the matching "
                         "stages, e.g. to spread a preset over machines sharing --work; the report is then skipped")
    ap.add_argument("--report-only", action="store_true",
                    help="run nothing: write the report from the stages finished so far, listing those not yet run")
    return ap


def load(target: Target, preset: str, work: Path, src: Path, data: str, device: str
         ) -> tuple[list[Stage], list[tuple[Path, str]]]:
    """The target's stages for the preset (each once: targets share stages) and its reports, the data located
    (ToolkitError); and, before any stage runs, every stage's command that has not run to completion in `work`
    (selected by --stages or not) checked against its tool's options (PresetError)."""
    if preset not in target.presets:
        raise PresetError(f"target {target.name} has no preset {preset!r}; known: {', '.join(target.presets)}")
    stages, reports = target.build(work, target.presets[preset], src, data, device)
    stages = list({s.name: s for s in stages}.values())  # shared stages once
    check_stages([s for s in stages if not ran_before(s, work / "stages")], preset)
    return stages, reports


def selected(stages: list[Stage], patterns: str | None) -> list[Stage]:
    """The stages --stages names (every stage without it); a selection of none is refused in one line."""
    if not patterns:
        return stages
    chosen = [s for s in stages if any(fnmatch.fnmatchcase(s.name, p) for p in patterns.split(","))]
    if not chosen:
        raise SystemExit(f"--stages {patterns}: matches none of this target's stages")
    return chosen


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    args = parser(prog).parse_args(argv)
    target = targets()[args.target]
    if not args.src.is_file():
        raise SystemExit(f"{args.src}: source image not found (pass --src)")
    if args.data is None and target.data_required:
        raise SystemExit(target.data_required)
    args.data = args.data or f"cifar10-jpg:{SHARED / 'cifar10-jpg'}"
    args.work = args.work or ROOT / "runs" / target.work
    try:
        stages, reports = load(target, args.preset, args.work, args.src, args.data, args.device)
    except ToolkitError as e:  # the CIFAR-10 data is located (and a JPEG archive unpacked) before any stage runs
        raise SystemExit(f"--data {args.data}: {e}") from None
    except PresetError as e:
        raise SystemExit(f"reproduce {args.target}: {e}") from None
    stages = selected(stages, args.stages)
    records = args.work / "stages"
    if args.report_only:
        finished = {s.name: record for s in stages if (record := finished_record(s, records)) is not None}
        missing = [s.name for s in stages if s.name not in finished]
        if not any(p.exists() for p, _ in reports):
            raise SystemExit(f"{args.work}: no probe has finished yet; nothing to report")
        report = target.report(args.work, args.target, args.preset, reports, list(finished.values()), args.device,
                               args.data, missing)
        print(f"report: {report} ({len(finished)} stages done, {len(missing)} not yet run)")
        return
    done = run_all(stages, records, time.time() + args.time_limit if args.time_limit else None)
    if args.stages:
        print(f"{len(done)} selected stages done; run without --stages to finish the rest and write the report")
        return
    report = target.report(args.work, args.target, args.preset, reports, done, args.device, args.data)
    print(f"report: {report}")


def run_all(stages: list[Stage], records: Path, deadline: float | None) -> list[dict]:
    """Every stage in order, each run or skipped; a time limit, a Ctrl-C or a failed stage end the command with a
    line saying how to go on."""
    done = []
    try:
        for stage in stages:
            done.append(run_stage(stage, records, deadline))
    except TimeLimit as e:
        print(f"time limit reached during {e}; run the same command again to continue", flush=True)
        sys.exit(3)
    except Interrupted as e:
        print(f"interrupted during {e}; run the same command again to continue", flush=True)
        sys.exit(130)
    except StageFailed as e:
        raise SystemExit(str(e)) from None
    return done


def run(prog: str | None = None) -> None:
    """main(), with a failing disk (every file is written through common.fileio) reported as one line."""
    try:
        main(prog=prog)
    except OSError as e:
        if e.filename is None:
            raise
        raise SystemExit(f"{e.filename}: {e.strerror or e}") from None
