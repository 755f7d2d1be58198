"""The reproductions, as resumable stages: render -> train -> probe -> report.

    python -m experiments TARGET [--preset quick|full|smoke] [--work DIR] ...   (experiments/cli.py)
    python experiments/reproduce.py TARGET ...                                   (the same, as a script)
    python experiments/demo.py                                                   (`make demo`: make_demo.py)

- stage.py: a :class:`~experiments.stage.Stage` (one command of a tool, its outputs) and its runner: records,
  skipping, resuming, time limits, Ctrl-C.
- tool_options.py: every stage's command checked against the options of the tool command it runs, when a preset is
  loaded, so a typo in a preset fails before any stage runs.
- registry.py: the targets; each module of experiments/targets/ registers one (its presets, stages and report), so a
  new target is one new module there.
- commands.py: the stages every target builds from (a render, a probe, the CIFAR data as a training set).
- paper_cifar.py: the paper's CIFAR rows and their report, which the cifar10, cifar100 and ablation targets share.
- report.py: what every report starts with (preset, device, commit, wall time, the stages' table).

Layers: cli -> targets -> paper_cifar -> commands, report -> registry, stage, tool_options; nothing imports cli or
a target (tests/test_layering.py).
"""
