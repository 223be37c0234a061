"""Per-frame results of `skinedge run`: one record per classified frame, written as CSV or JSON Lines
(`--results`), a console line per image for folder sources, and accuracy where the folder holds class
sub-folders (the true label is the sub-folder's name).

A record holds what the screen showed: a frame the gates refused has no top-k (empty label columns), only its
gate outcome and scores (edge.answer); the CSV columns and JSON keys follow the fields.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

from edge.gates import message

if TYPE_CHECKING:
    from edge.answer import Answer

SUFFIXES = (".csv", ".jsonl")
TOP_K = 3


def check_results_path(path: Path) -> None:
    """ValueError unless `path` ends in .csv or .jsonl and its folder exists (checked before the run starts)."""
    if path.suffix.lower() not in SUFFIXES:
        raise ValueError(f"--results {path}: expected a .csv or .jsonl file name")
    if not path.parent.is_dir():
        raise ValueError(f"--results {path}: folder {path.parent} does not exist")


def cam_peak(cam: np.ndarray | None) -> tuple[float, float] | None:
    """Where the heat map is hottest, as (x, y) fractions of the classified view's width and height (cell centre)."""
    if cam is None or cam.size == 0:
        return None
    y, x = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return (round((x + 0.5) / cam.shape[1], 4), round((y + 0.5) / cam.shape[0], 4))


@dataclass
class FrameRecord:
    """What `skinedge run` concluded about one frame."""

    index: int  # frame number from the source, from 0
    source: str  # the image's path relative to the folder, or the frame number of a camera or video
    time_utc: str  # when the result was shown
    top: list[tuple[str, float]]  # the top-k labels and probabilities, best first; empty when the gates refused
    uncertain: bool | None  # top-1 probability below thresholds.min_confidence (UNCERTAIN); None when refused
    cam_peak: tuple[float, float] | None  # (x, y) of the shown heat map's maximum, fractions of the view
    true_label: str | None = None  # the class sub-folder's name, where the folder has them
    # edge.answer.Answer.record(): outcome ('pass', 'blurred', 'not recognised', ...), the scores and the model
    gate: dict[str, object] = field(default_factory=dict)

    @classmethod
    def of(cls, index: int, source: str | None, answer: Answer, min_confidence: float, cam: np.ndarray | None,
           true_label: str | None = None) -> FrameRecord:
        """The record of one answer; `cam` is the map the screen showed (with gradcam.every_n > 1, maybe an
        earlier frame's)."""
        top = [(label, round(p, 6)) for label, p in answer.top(TOP_K)]
        return cls(index=index, source=source if source is not None else str(index),
                   time_utc=datetime.now(timezone.utc).isoformat(timespec="milliseconds"), top=top,
                   uncertain=top[0][1] < min_confidence if top else None,
                   cam_peak=cam_peak(cam) if top else None, true_label=true_label, gate=answer.record())

    @property
    def correct(self) -> bool | None:
        """Right or wrong where the true label is known and the board answered; None otherwise."""
        return None if self.true_label is None or not self.top else self.top[0][0] == self.true_label

    def flat(self) -> dict[str, object]:
        """One CSV row: top-k as label_i / prob_i columns, the heat-map peak as cam_x / cam_y, the gate record's
        keys (gate, gate_sharpness, ..., gate_ood_score) as columns of their own."""
        row: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "top":
                for i in range(TOP_K):
                    label, p = value[i] if i < len(value) else ("", "")
                    row[f"label_{i + 1}"], row[f"prob_{i + 1}"] = label, p
            elif f.name == "cam_peak":
                row["cam_x"], row["cam_y"] = value if value is not None else ("", "")
            elif f.name == "gate":
                row.update({k: "" if v is None else v for k, v in value.items()})
            else:
                row[f.name] = "" if value is None else value
        return row

    def line(self) -> str:
        """The console line: source, top-1 (or UNCERTAIN) and runner-up, or what the gates said; true label."""
        if not self.top:
            s = f"{self.source}: {message(str(self.gate.get('gate')))}"
        else:
            (label, p), rest = self.top[0], self.top[1:]
            s = f"{self.source}: {label} {p:.0%}" + (" UNCERTAIN" if self.uncertain else "")
            if rest:
                s += f" (then {rest[0][0]} {rest[0][1]:.0%})"
        if self.true_label is not None:
            s += f"  true {self.true_label} " + ("not answered" if self.correct is None else
                                                 "ok" if self.correct else "WRONG")
        return s


class ResultsLog:
    """on_record callback for the pipeline: writes each record to `path` (.csv or .jsonl) as it comes, prints
    a line per image when `echo`, and counts accuracy over the answered records with a true label."""

    def __init__(self, path: Path | None = None, echo: bool = False):
        self.path, self.echo = path, echo
        self.records = 0
        self.refused = 0  # frames the gates refused: no class was shown or written
        self.labelled = 0
        self.right = 0
        self._file: IO[str] | None = open(path, "w", newline="") if path else None  # noqa: SIM115 - closed in close()
        self._csv: csv.DictWriter | None = None

    def __call__(self, rec: FrameRecord) -> None:
        self.records += 1
        self.refused += not rec.top
        if rec.correct is not None:
            self.labelled += 1
            self.right += rec.correct
        if self.echo:
            print(rec.line(), flush=True)
        if self._file is None:
            return
        if self.path.suffix.lower() == ".jsonl":
            self._file.write(json.dumps(asdict(rec)) + "\n")
        else:
            row = rec.flat()
            if self._csv is None:
                self._csv = csv.DictWriter(self._file, fieldnames=list(row))
                self._csv.writeheader()
            self._csv.writerow(row)
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def summary(self) -> str | None:
        """'accuracy 47/50 = 94.0% ...' where some answered images had a true label, and how many frames the gates
        refused; None when there is nothing to say."""
        parts = []
        if self.labelled:
            parts.append(f"accuracy {self.right}/{self.labelled} = {self.right / self.labelled:.1%} on the answered "
                         "images in class sub-folders (true label = folder name)")
        if self.refused:
            parts.append(f"{self.refused} of {self.records} frame(s) not answered: the gates refused them")
        return "; ".join(parts) or None
