"""``prefix-rft export``: a run's weights as a complete Hugging Face model folder.

Every weight version the learner publishes is already a complete folder (``learner/weights/v{N}``);
exporting checks it is and copies it where the user wants it, so pruning or a new run in the same
directory never takes it away. The default is the final weights, named by the learner's final.json.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from pydantic import BaseModel

from shared.modeling import check_model_folder
from shared.records import FinalRecord

LEARNER_DIR = "learner"
WEIGHTS_DIR = "weights"
FINAL_DIR = "final"  # where a finished `prefix-rft run` leaves its final weights


class ExportError(ValueError):
    """What the user asked for is not there; the message says what is."""


class Exported(BaseModel):
    run_dir: Path
    version: int
    out: Path


def published_versions(run_dir: Path) -> list[int]:
    root = run_dir / LEARNER_DIR / WEIGHTS_DIR
    found = (int(p.name[1:]) for p in root.glob("v*") if p.name[1:].isdigit() and p.is_dir())
    return sorted(found)


def version_dir(run_dir: Path, version: int | None) -> tuple[int, Path]:
    """The folder of ``version`` in ``run_dir`` (None: the final one); ExportError saying what exists."""
    if not (run_dir / LEARNER_DIR).is_dir():
        raise ExportError(f"{run_dir} is not a run directory (no {LEARNER_DIR}/)")
    versions = published_versions(run_dir)
    have = f"versions on disk: {', '.join(f'v{v}' for v in versions)}" if versions else "no versions on disk"
    if version is None:
        final = FinalRecord.read(run_dir / LEARNER_DIR)
        if final is None:
            raise ExportError(f"{run_dir}: the run has not finished (no {LEARNER_DIR}/final.json); "
                              f"pass --version N ({have})")
        version = final.version
    if version not in versions:
        raise ExportError(f"{run_dir}: no weights version {version} ({have})")
    return version, run_dir / LEARNER_DIR / WEIGHTS_DIR / f"v{version}"


def export(run_dir: Path, out: Path, version: int | None = None, replace: bool = False) -> Exported:
    """Copy a version (default: the final one) of ``run_dir`` to ``out`` as a complete model folder.
    ExportError for a missing version or an ``out`` that holds something; ModelFolderError for a
    version that is not a complete folder (written before versions were)."""
    version, source = version_dir(run_dir, version)
    check_model_folder(source)
    if out.exists() and not replace and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} already exists and is not empty: choose another folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Copied next to its destination and renamed into place: a half-copied folder is never seen.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Exported(run_dir=run_dir, version=version, out=out)


def export_final(run_dir: Path) -> Exported:
    """The run's final weights to ``run_dir/final`` (replaced if there: a resumed run ends again)."""
    return export(run_dir, run_dir / FINAL_DIR, replace=True)
