"""metrics.json: how a run went, as one typed record (written while it runs, read by the report,
evaluate and the console summary).

Files written by older versions load: keys this version does not know are kept in `extra`, keys
they lack take the defaults below.
"""

from __future__ import annotations

import json
import socket
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from captioner.paths import process_alive, write_atomically

# running | completed | failed | preempted (a run writes these); the report adds killed and missing
STATUSES = ("running", "completed", "failed", "preempted")


@dataclass
class RunSummary:
    status: str = "running"
    pid: int | None = None
    host: str | None = None
    config: dict[str, Any] = field(default_factory=dict)  # dataset, cnn, rnn, weights, seed, model...
    settings_key: str | None = None  # a hash of the whole config but ckpt_path (runs/run.py)
    provenance: dict[str, Any] = field(default_factory=dict)  # git commit, library versions, device
    features: str | None = None  # the features file trained on (known before training starts)
    test: dict[str, float] = field(default_factory=dict)  # bleu1..4, meteor, rouge_l, cider
    best_val_cider: float | None = None
    epochs: int | None = None
    stages: dict[str, int] = field(default_factory=dict)  # validated epochs per training stage
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per validation
    train_time_s: float | None = None
    test_decode_s: float | None = None
    test_captions_per_s: float | None = None
    wall_time_s: float | None = None
    checkpoint: str | None = None  # the best (or, preempted, the last) checkpoint
    resumed_from: str | None = None
    error: str | None = None  # failed or preempted: why
    resume: str | None = None  # preempted: how to go on
    wandb_run_id: str | None = None  # with logger=wandb: the W&B run a resume continues
    extra: dict[str, Any] = field(default_factory=dict)  # keys of other versions, kept as they were

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunSummary:
        known = {f.name: f for f in fields(cls) if f.name != "extra"}
        # a null where a dict or list belongs (files of older versions) reads as empty
        given = {k: v for k, v in values.items()
                 if k in known and not (v is None and known[k].default is MISSING)}
        return cls(**given, extra={k: v for k, v in values.items() if k not in known})

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        extra = values.pop("extra")
        return {**extra, **{k: v for k, v in values.items() if v is not None or k == "best_val_cider"}}

    @property
    def process_alive_here(self) -> bool | None:
        """Whether the process that wrote this summary is still alive; None where that cannot be
        told from here (no pid recorded, or another machine's process)."""
        if not isinstance(self.pid, int) or self.host != socket.gethostname():
            return None
        return process_alive(self.pid)

    @property
    def uncommitted_changes(self) -> bool:
        """Whether any part of the run trained code with uncommitted changes: this process's
        (`git_dirty`) or, resumed, an earlier one's (`code_before_resume`, runs/provenance.py)."""
        return self.provenance.get("git_dirty") is True or any(
            code.get("git_dirty") is True for code in self.provenance.get("code_before_resume") or [])

    def write(self, path: Path) -> None:
        write_atomically(path, json.dumps(self.as_dict(), indent=2))

    @classmethod
    def read(cls, path: Path) -> RunSummary | None:
        """The summary at `path`, or None when there is none; unreadable JSON raises ValueError
        naming the file."""
        if not Path(path).is_file():
            return None
        try:
            values = json.loads(Path(path).read_text())
        except json.JSONDecodeError as error:  # half written (killed), or a merge left markers in it
            raise ValueError(f"{path}: not valid JSON ({error})") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path}: not a run summary (a JSON {type(values).__name__})")
        return cls.from_dict(values)
