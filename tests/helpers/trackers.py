"""Read back what a run logged, through each tracker's own reader."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any


def tensorboard_run(logdir: Path):
    """Tensorboard's EventAccumulator over one run's event files, loaded."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def tensorboard_scalars(accumulator, tag: str) -> dict[int, float]:
    return {event.step: event.value for event in accumulator.Scalars(tag)}


def tensorboard_text(accumulator, tag: str) -> dict[int, str]:
    return {event.step: event.tensor_proto.string_val[0].decode() for event in accumulator.Tensors(tag)}


def tensorboard_hparams(accumulator) -> dict[str, Any]:
    """The hyper-parameters the run recorded through tensorboard's hparams plugin."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    values = {}
    for key, value in info.hparams.items():
        kind = value.WhichOneof("kind")
        values[key] = getattr(value, kind)
    return values


def mlflow_run(uri: str, experiment: str, name: str):
    """mlflow's client on the store: the run called ``name`` in ``experiment``."""
    import os

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    (run,) = client.search_runs([exp.experiment_id], filter_string=f"attributes.run_name = '{name}'")
    return client, run


def wandb_offline_records(run_dir: Path) -> dict[str, list]:
    """The records of an offline run's ``run-<id>.wandb`` file, parsed with wandb's own protobuf
    schema (``wandb_internal_pb2.Record``): wandb 0.31 ships no Python reader of the file, whose
    framing is LevelDB's log format (32 KiB blocks; a record is crc, length, type, data)."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("run-*.wandb")
    data = path.read_bytes()
    ident, _magic, _version = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B", f"{path} is not a W&B transaction log"
    block, position, pending = 32768, 7, b""
    found: dict[str, list] = {}
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:  # a block's tail too short for a header is padding
            position += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if length == 0 and kind == 0:
            position += left
            continue
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            found.setdefault(record.WhichOneof("record_type"), []).append(record)
            pending = b""
    return found


def wandb_history(records: dict[str, list]) -> list[dict[str, Any]]:
    rows = []
    for record in records.get("history", []):
        items = record.history.item
        rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items})
    return rows


def wandb_config(records: dict[str, list]) -> dict[str, Any]:
    config = {}
    for record in records.get("run", []):
        config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
    for record in records.get("config", []):
        config.update({item.key: json.loads(item.value_json) for item in record.config.update})
    return config


def tensorboard_table(accumulator, tag: str) -> dict[int, list[dict[str, str]]]:
    """A table logged as tensorboard text (a Markdown table, ``|`` escaped, new lines as ``<br>``): its
    rows at each step, as column -> cell."""
    import re

    def cells(line: str) -> list[str]:
        parts = re.split(r"(?<!\\)\|", line.strip())[1:-1]
        return [part.strip().replace("\\|", "|").replace("<br>", "\n") for part in parts]

    tables = {}
    for step, text in tensorboard_text(accumulator, tag).items():
        header, _rule, *rows = text.splitlines()
        columns = cells(header)
        tables[step] = [dict(zip(columns, cells(row))) for row in rows]
    return tables
