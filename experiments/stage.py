"""A stage (one command of a tool and the files it makes) and its runner.

Every stage records its command, wall time and the commit in RECORDS/NAME.json when it succeeds; a stage whose
record and outputs exist, made by the same command from inputs no newer than the record, is skipped, so the same
driver command resumes after an interruption (a training resumes from its last checkpoint). A deadline stops the
running stage cleanly (:class:`TimeLimit`), as Ctrl-C does (:class:`Interrupted`). An interrupted stage's wall time
is kept in RECORDS/NAME.partial.json (written every minute as well, so a driver killed outright loses at most a
minute of it) and added to the record of the attempt that completes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from common.fileio import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
BIN = Path(sys.executable).parent
PARTIAL_EVERY_S = 60.0  # how often a running stage's wall time so far is written to its .partial.json


@dataclass
class Stage:
    name: str
    command: list[str]
    outputs: list[Path]
    run_dir: Path | None = None  # a training run: resumed from its checkpoint, cleared if it never wrote one
    meta: dict = field(default_factory=dict)
    # files an earlier stage makes (shards, an encoder): one newer than this stage's record makes it run again,
    # as make does, so a retrained encoder is probed again even though the probe's command is the same
    inputs: list[Path] = field(default_factory=list)


class TimeLimit(Exception):
    """The deadline passed during a stage: its process was stopped as a Ctrl-C stops it."""


class Interrupted(Exception):
    """Ctrl-C during a stage: its process was stopped as a Ctrl-C stops it (complete shards and checkpoints kept)."""


class StageFailed(Exception):
    """A stage's process exited with an error status."""


def finished_record(stage: Stage, records: Path) -> dict | None:
    """The stage's record if it has finished and its outputs are all there, else None."""
    record = records / f"{stage.name}.json"
    if record.exists() and all(p.exists() for p in stage.outputs):
        return json.loads(record.read_text())
    return None


def portable_command(command: list[str], work: Path) -> list[str]:
    """``command`` as a record keeps it: a tool of this environment by its name, a path in the work folder (alone or
    as a data kind's ``KIND:PATH``) relative to it. A record then names no folder of this machine's but the inputs
    given from outside, and a work folder moved elsewhere, or to another machine, still finds its stages done."""
    def portable(arg: str) -> str:
        kind, sep, rest = arg.partition(":") if ":" in arg and not arg.startswith("/") else ("", "", arg)
        path = Path(rest)
        if not path.is_absolute():
            return arg
        if path.parent == BIN:
            return kind + sep + path.name
        if path.is_relative_to(work):
            return kind + sep + (path.relative_to(work).as_posix() or ".")
        return arg
    return [portable(arg) for arg in command]


def ran_before(stage: Stage, records: Path) -> bool:
    """Whether the stage's command has run to completion in this work folder (its record holds the same command):
    a preset's commands are checked against the tools' options only when they have not (experiments.tool_options),
    since reading train's options costs a torch import."""
    record = records / f"{stage.name}.json"
    work = records.parent
    return record.exists() and as_built(json.loads(record.read_text()), work) == portable_command(stage.command, work)


def as_built(record: dict, work: Path) -> list[str]:
    """The command a record of the work folder ``work`` holds, as its stage builds it: without the --resume a resumed
    attempt added, in :func:`portable_command`'s form (records written before it hold absolute paths)."""
    return portable_command([a for a in record["command"] if a != "--resume"], work)


def _reusable(stage: Stage, records: Path) -> dict | None:
    """The stage's record when it can stand for running it now; a stale one (another command, a newer input) is
    removed, with the run folder it made."""
    record = records / f"{stage.name}.json"
    if (done := finished_record(stage, records)) is None:
        return None
    newer = [p for p in stage.inputs if p.exists() and p.stat().st_mtime > record.stat().st_mtime]
    same = as_built(done, records.parent) == portable_command(stage.command, records.parent)
    if same and not newer:
        print(f"[{stage.name}] done before ({done['wall_s']:.0f} s), skipped", flush=True)
        return done
    # a changed preset or input must not be answered with old outputs, nor resume the old run's checkpoint
    why = "with a different command" if not same else f"from an older {newer[0]}"
    print(f"[{stage.name}] done before {why}; running it again", flush=True)
    record.unlink()
    if stage.run_dir is not None:
        shutil.rmtree(stage.run_dir, ignore_errors=True)
    return None


def run_stage(stage: Stage, records: Path, deadline: float | None) -> dict:
    """Run the stage (or skip it, see :func:`_reusable`) and return its record."""
    if (done := _reusable(stage, records)) is not None:
        return done
    cmd = list(stage.command)
    if stage.run_dir is not None:
        if (stage.run_dir / "checkpoint.pt").exists():
            cmd.append("--resume")
        elif stage.run_dir.exists():
            shutil.rmtree(stage.run_dir)  # interrupted before its first checkpoint: nothing to resume
    print(f"[{stage.name}] {' '.join(cmd)}", flush=True)
    partial = records / f"{stage.name}.partial.json"  # wall time and code of earlier, interrupted attempts
    before = json.loads(partial.read_text()) if partial.exists() else {}
    earlier = before.get("wall_s", 0.0)
    # the code a stage runs is the code its process imported when it started: a commit made while a long stage
    # runs must not be recorded as the one that produced it
    commits = [*before.get("commits", []), git_commit()]
    records.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    def save_partial() -> None:
        atomic_write_text(partial, json.dumps({"wall_s": round(earlier + time.time() - t0, 1),
                                               "commits": commits}) + "\n")

    returncode = _wait(stage.name, _start(cmd), deadline, save_partial)
    if returncode != 0:
        raise StageFailed(f"[{stage.name}] failed with exit status {returncode}; fix the cause and run the same "
                          f"command again to resume")
    done = {"stage": stage.name, "command": portable_command(cmd, records.parent),
            "wall_s": round(earlier + time.time() - t0, 1), "commit": commits[-1],
            "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    if len(set(commits)) > 1:  # resumed across commits: every attempt's code, oldest first
        done["commits"] = list(dict.fromkeys(commits))
    atomic_write_text(records / f"{stage.name}.json", json.dumps(done, indent=1) + "\n")
    partial.unlink(missing_ok=True)
    return done


def _start(cmd: list[str]) -> subprocess.Popen:
    # OpenMP threads that spin while waiting stall badly when the CPU is shared (measured on 2 cores under load:
    # 23 images/s spinning, 67 passive); passive waiting costs little on an idle machine.
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    # a session of its own, so the whole tree (loader workers too) can be signalled; a Ctrl-C in the terminal then
    # reaches this process only, which passes it on
    return subprocess.Popen(cmd, start_new_session=True, env=env)


def _wait(name: str, proc: subprocess.Popen, deadline: float | None, save_partial) -> int:
    """The stage's exit status; its wall time saved every PARTIAL_EVERY_S, and on a deadline or Ctrl-C, which stop
    it (TimeLimit, Interrupted)."""
    saved = time.time()
    try:
        while proc.poll() is None:
            if time.time() - saved > PARTIAL_EVERY_S:  # a driver killed outright (SIGKILL, a closed session)
                save_partial()  # loses at most this much of the stage's wall time
                saved = time.time()
            if deadline is not None and time.time() > deadline:
                stop_stage(proc)
                save_partial()
                raise TimeLimit(name)
            time.sleep(0.2)
    except KeyboardInterrupt:
        stop_stage(proc)
        save_partial()
        raise Interrupted(name) from None
    return proc.returncode


def stop_stage(proc: subprocess.Popen) -> None:
    """Stop a stage's process group as Ctrl-C would (the tools keep complete shards and checkpoints on an
    interrupt); kill it if it has not stopped within two minutes or on a second Ctrl-C."""
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)
    except ProcessLookupError:  # it had ended already
        pass
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                             text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
