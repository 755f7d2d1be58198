"""What every target's report starts with: the preset, the device, the commit, the data, the wall time, and a table
of the finished stages."""

from __future__ import annotations

import os
import platform
import time

from experiments.stage import git_commit
from probe.results import data_label as data_name  # the report_header argument data_label is no function
from probe.results import md_code


def stage_row(record: dict) -> str:
    """A finished stage's line in the reports' wall-time table: its name, wall time and the commit(s) it ran at."""
    commits = ", ".join(record.get("commits") or [record["commit"]])
    return f"| {record['stage']} | {record['wall_s']:.0f} | {commits} |"


def device_name(device: str) -> str:
    """The device the stages ran on: the GPU that --device names (cuda and auto: the trainers' cuda:LOCAL_RANK)."""
    import torch

    if device != "cpu" and torch.cuda.is_available():
        named = torch.device("cuda" if device == "auto" else device)
        index = named.index if named.index is not None else int(os.environ.get("LOCAL_RANK", "0"))
        return f"{torch.cuda.get_device_name(index)} (cuda:{index})"
    return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores"


def report_header(title: str, preset: str, note: str, device: str, data_label: str, data: str,
                  stages: list[dict], missing: list[str]) -> list[str]:
    """The report's first lines: its title, what ran where (`data_label`: what `data` was used for), and a line per
    finished stage; stages not yet run are listed as such."""
    total = sum(s["wall_s"] for s in stages)
    return [f"# {title}", "",
            f"- preset: **{preset}** ({note})",
            f"- device: {device_name(device)}; commit {git_commit()}; {time.strftime('%Y-%m-%d')}",
            f"- {data_label}: {md_code(data_name(data))}",
            f"- wall time: {total / 60:.1f} min over {len(stages)} stages",
            *([f"- **incomplete**: {len(missing)} stages not yet run ({', '.join(missing)}); the tables below hold "
               f"the finished ones only"] if missing else []), "",
            "| stage | wall (s) | commit |", "| --- | ---: | --- |",
            *[stage_row(s) for s in stages]]
