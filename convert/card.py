"""MODEL_CARD.md's sections about the model itself: its intended use, its training, its errors by class.

Intended use, users, out-of-scope uses and limitations are the model owner's to state, in a small YAML file
given to `skinedge convert --card card.yaml` (CARD_SCHEMA; checked before any work, one line naming the file and
key). The zoo's skin-lesion architectures default to the screening-aid wording of this project; any other model
without a card says that its use is not stated, rather than borrowing a skin-lesion disclaimer for a model of
birds or fruit. The training section comes from the record `skinedge train` keeps in the checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convert import validate
from edge.metrics import confusion_markdown, fmt, per_class_markdown
from edge.trust import safeyaml
from edge.trust.manifest import ManifestError, either, mapping, seq, text

CARD_SCHEMA = mapping({
    "intended_use": (text(2000), True),
    "intended_users": (text(500), False),
    "out_of_scope": (either(seq(text(500), 1, 50), text(2000)), False),
    "limitations": (either(seq(text(500), 1, 50), text(2000)), False),
    "contact": (text(200), False),
})
ZOO_DEFAULT = {  # the research architectures of convert/zoo: skin-lesion classifiers
    "intended_use": "Screening aid at the point of care: suggests which of its classes a skin-lesion image "
                    "resembles, with a heat map of what drove the answer. A trained health worker decides; it is "
                    "not a diagnosis.",
    "intended_users": "trained health workers",
    "out_of_scope": ["Diagnosis, or any decision taken without a trained health worker",
                     "Images that are not close-ups of skin (the out-of-distribution gate refuses most of them)",
                     ("Skin types, body sites, cameras or lighting the training data did not cover, until it is "
                      "validated on them")],
    "limitations": [("Not clinically validated by this conversion: the figures below are measured on the "
                     "validation images given to the converter")],
}
NOT_STATED = {"intended_use": "Not stated: this model was converted without a card file "
                              "(`skinedge convert --card card.yaml`: intended use, users, out-of-scope uses, "
                              "limitations; see README.md)."}


class CardError(ValueError):
    """A card file that cannot be used: one line naming the file and the key."""


def load_card(path: Path) -> dict:
    """The user's card file, schema-checked."""
    try:
        data = safeyaml.load(safeyaml.read(Path(path)))
        return CARD_SCHEMA(data, "")
    except (OSError, ValueError) as e:  # YamlError, ManifestError
        why = e.strerror if isinstance(e, OSError) else str(e)
        raise CardError(f"--card {path}: {why}" + (" (keys: intended_use, intended_users, out_of_scope, "
                                                   "limitations, contact)" if isinstance(e, ManifestError) else ""))


def default_card(arch: str) -> dict:
    from convert.zoo import ARCHS

    return ZOO_DEFAULT if arch in ARCHS else NOT_STATED


def _items(v: str | list[str] | None) -> str:
    if not v:
        return "- not stated\n"
    return "".join(f"- {x}\n" for x in ([v] if isinstance(v, str) else v))


def use_section(card: dict, source: str) -> str:
    """Intended use, users, out of scope, limitations; `source` says where they come from."""
    users = f"\n**Intended users:** {card['intended_users']}\n" if card.get("intended_users") else ""
    contact = f"\n**Contact:** {card['contact']}\n" if card.get("contact") else ""
    return (f"## Intended use\n({source})\n\n{card['intended_use']}\n{users}\n"
            f"**Out of scope:**\n{_items(card.get('out_of_scope'))}\n"
            f"**Limitations:**\n{_items(card.get('limitations'))}{contact}\n")


def training_section(run: dict | None) -> str:
    """The checkpoint's training record (convert.train.run_record) as Markdown, per-epoch figures included."""
    if not run:
        return ("## Training\nNo training record in the checkpoint (it was not made by `skinedge train`): data, "
                "epochs and figures unknown to this card.\n\n")
    try:
        return _training(run)
    except (KeyError, TypeError, ValueError) as e:  # a record this version does not know how to read
        return f"## Training\nThe checkpoint's training record could not be read ({type(e).__name__}: {e}).\n\n"


def _training(run: dict) -> str:
    tr, va = run["train"], run["validation"]
    per_class = "".join(f"| {c} | {tr['per_class'].get(c, 0)} | {va['per_class'].get(c, 0)} |\n" for c in run["classes"])
    aug = run["augmentation"]
    epochs = "".join(f"| {h['epoch']}{' *' if h.get('best') else ''} | {h['stage']} | {h['train_loss']:.3f} | "
                     f"{fmt(h['train_accuracy'], '.1%')} | {fmt(h['val_loss'])} | {fmt(h['val_accuracy'], '.1%')} | "
                     f"{fmt(h['val_f1'])} |\n"
                     for h in run["history"])
    soft = ", ".join(f"{k} {v}" for k, v in run["software"].items())
    return f"""## Training
Trained by `skinedge train` on {run['created']}: `{run['arch']}` at {run['size']}×{run['size']} px.

- Data: `{run['data']['folder']}`, {run['data']['images']} images (digest of its files `{run['data']['digest'][:16]}`);
  training on {tr['images']} (digest `{tr['digest'][:16]}`), validation on {va['images']}: {va['source']}
  (digest `{va['digest'][:16]}`)
- Epochs: {run['epochs_run']} of {run['epochs_planned']} planned, {run['freeze_epochs']} of them with the feature
  extractor frozen, early stopping after {run['patience']} without improvement; best epoch {run['best_epoch']}
  ({run['selection']})
- Recipe: {run['optimiser']}; peak learning rate {run['lr']:g}, batch {run['batch']}, class-weighted loss
  {'yes' if run['class_weights'] else 'no'}
- Augmentation: flips {'yes' if aug['flip'] else 'no'}, rotation ±{aug['rotate']:g}°, zoom up to {aug['zoom']:.0%}
- Initial weights: {run['init']}; seed {run['seed']}
- Software: {soft}

| class | training images | validation images |
|---|---|---|
{per_class}
| epoch (* best) | stage | train loss | train accuracy | val loss | val accuracy | val macro-F1 |
|---|---|---|---|---|---|---|
{epochs}
"""


def evaluation_section(rows: list[validate.Row], labels: list[str]) -> str:
    """Confusion matrix and per-class precision / recall / F1 of the float model and of the int8 artefact a
    board runs by default (TFLite, else ONNX), on the labelled validation images."""
    shown = [r for r in rows if r.confusion is not None]
    shown = shown[:1] + [r for r in shown if r.artefact in ("int8_tflite", "int8_onnx")][:1]
    if not shown:
        return "## Errors by class\nThe validation images were unlabelled: no confusion matrix.\n\n"
    parts = [("## Errors by class\nOn the labelled validation images (rows: true class; columns: predicted). "
              "`skinedge val` gives these for any labelled folder, with the gates applied.\n")]
    for r in shown:
        cm = np.asarray(r.confusion)
        parts.append(f"\n**{r.artefact}**\n\n{confusion_markdown(cm, labels)}\n{per_class_markdown(cm, labels)}")
    return "".join(parts) + "\n"
