"""What a bundle's models were made from: the run's weights and the converter that made them.

The same weights converted by another TensorFlow release give other bytes (re-exporting the
2026-11-28 embedder with TensorFlow 2.21.0 on 2026-12-03 gave other sha256s for both files,
parity within 0.2 points), while one release gives the same bytes every time. So a model
card's sha256 can only be checked against the versions recorded here.
"""

from __future__ import annotations

import importlib
import shlex
from importlib import metadata
from pathlib import Path

from sigedge.bundle import sha256_file

#: Packages whose release decides the bytes of a converted model.
CONVERTER_PACKAGES = ("tensorflow", "tf-keras", "tensorflow-model-optimization")


def converter_versions() -> dict[str, str]:
    out = {}
    for name in CONVERTER_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def weights_sha256(run: Path) -> dict[str, str]:
    """sha256 of the run's weight files (``*.h5``), by file name."""
    return {p.name: sha256_file(p) for p in sorted(Path(run).glob("*.h5"))}


def provenance(run: Path) -> dict:
    """sha256 of the run's weight files and the converter's package versions."""
    return {"weights_sha256": weights_sha256(run), "converted_with": converter_versions()}


#: Options a retraining command always spells out, so that it reads as the schedule it ran.
ALWAYS_SHOWN = ("epochs", "qat_epochs", "steps", "batch", "seed", "lr")
#: Options that say where a run reads and writes, not what it learns.
NOT_REPEATED = {"data", "out", "cache", "resume"}


def training_command(module: str, run: Path | str, cfg: dict[str, str | list[str]]) -> str:
    """The command line that re-trains ``run`` with ``module`` (e.g. ``training.train_detector``),
    from the options its state.json recorded (``cfg``: option name to ``str(value)``, a
    repeatable option's values as a list; ``training.common.recorded_options``).

    Every option of the module's own parser is repeated where the run recorded a value other
    than today's default (the schedule always), so that a flag added to training is never
    silently dropped from a model card's command. A repeatable option (list default) is given
    once per value; runs before 2026-12-03 recorded it space-joined, which is split on spaces.
    Values are shell-quoted.

    An option the run did not record (the run is older than the option) takes the value the
    module's ``BEFORE_THE_OPTION`` gives it, what training did before the option existed (e.g.
    ``training.train_detector``); without one it is left out, as today's default is what
    training did before.
    """
    script = importlib.import_module(module)
    cfg = {**getattr(script, "BEFORE_THE_OPTION", {}), **cfg}
    defaults = vars(script.parse_args(["--out", str(run)]))
    parts = [f"python -m {module} --out", shlex.quote(str(run))]
    for k, default in defaults.items():
        v = cfg.get(k)
        if k in NOT_REPEATED or v is None or v in ("None", "False", "", []):
            continue
        if isinstance(default, list):
            values = v if isinstance(v, list) else v.split()
            if k not in ALWAYS_SHOWN and values == [str(x) for x in default]:
                continue
        elif k not in ALWAYS_SHOWN and v == str(default):
            continue
        else:
            values = [v]
        flag = f"--{k.replace('_', '-')}"
        parts += [flag if v == "True" else f"{flag} {shlex.quote(x)}" for x in values]
    return " ".join(parts)
