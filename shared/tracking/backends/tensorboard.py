"""Tensorboard: event files under ``<dir>/tensorboard/<run name>`` (``tensorboard --logdir <dir>/tensorboard``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from shared.tracking.base import RunIdentity, Tracker, flatten, require


class TensorboardTracker(Tracker):
    def __init__(self, run: RunIdentity):
        require("tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.logdir = run.dir / "tensorboard" / run.name
        self.writer = SummaryWriter(log_dir=str(self.logdir))

    def log_params(self, params: Mapping[str, Any]) -> None:
        from tensorboard.plugins.hparams import summary_v2 as hp

        # The hparams plugin's own record (its dashboard's table), written into this run's event file,
        # and the whole document as text, readable as it was written.
        self.writer.file_writer.add_summary(hp.hparams_pb(flatten(params)))
        text = yaml.safe_dump(dict(params), sort_keys=False)
        self.writer.add_text("config", "\n".join("    " + line for line in text.splitlines()), 0)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        # Tensorboard has no table type: its text plugin renders a Markdown table.
        def cell(value: Any) -> str:
            return str(value).replace("|", "\\|").replace("\n", "<br>")

        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
        self.writer.add_text(key, "\n".join(lines), step)

    def close(self) -> None:
        self.writer.close()
