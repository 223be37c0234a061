"""MODEL_CARD.md documents the model: its intended use from the owner's card file (schema-checked, one line per
mistake, refused before any work), the zoo's skin-lesion wording only as the zoo's default, and 'not stated' for
anyone else's model without a card. (The training section of a `train` -> `convert` run: tests/test_readme.py.)"""

from __future__ import annotations

import pytest

from convert.card import NOT_STATED, ZOO_DEFAULT, CardError, default_card, load_card, use_section
from edge.cli import main
from tests.test_convert_data import FACTORY

BIRDS = """intended_use: Sorting photographs of garden birds and fruit for a school project.
intended_users: pupils and their teacher
out_of_scope: [anything medical, photographs of people]
limitations: trained on a few dozen photographs
"""


@pytest.mark.parametrize("text, why", [
    ("intended_use: ok\nintended_uses: typo\n", "intended_uses: unknown key (known: intended_use,"),
    ("intended_users: nobody\n", "intended_use: required key is missing"),
    ("intended_use: ok\nlimitations: [1, 2]\n", "limitations"),
    ("intended_use: &a ok\ncontact: *a\n", "alias"),
    ("- just\n- a list\n", "expected a mapping"),
])
def test_a_bad_card_file_is_one_line_naming_the_file_and_key(tmp_path, text, why):
    path = tmp_path / "card.yaml"
    path.write_text(text)
    with pytest.raises(CardError) as e:
        load_card(path)
    assert str(e.value).startswith(f"--card {path}: ") and why in str(e.value) and "\n" not in str(e.value)


def test_the_skin_wording_is_the_zoos_default_only():
    assert default_card("micro_mpoxnet") is ZOO_DEFAULT and default_card("mobilenet_v2") is NOT_STATED
    text = use_section(default_card("tinynet:net"), "no card file given")
    assert "Not stated" in text and "health worker" not in text and "lesion" not in text
    assert "A trained health worker decides" in use_section(ZOO_DEFAULT, "the zoo's default")


def test_the_owners_card_is_on_the_model_card_and_a_bad_one_refused_first(tmp_path, synth_tree, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tinynet_card.py").write_text(FACTORY)
    (tmp_path / "bad.yaml").write_text("intended_use: x\nlimitation: typo\n")
    args = ["convert", "--arch", "tinynet_card:net", "--random-init", "--labels",
            "inflammatory,normal,pigmented,pox_like,other",
            "--calib", str(synth_tree["calib"]), "--val", str(synth_tree["val"]), "--input-size", "32",
            "--calib-per-class", "2", "--val-per-class", "2", "--formats", "fp32_onnx", "--out", str(tmp_path / "b")]
    assert main([*args, "--card", "bad.yaml"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--card bad.yaml: limitation: unknown key" in err[0]
    assert not list(tmp_path.glob("b.*")) and not (tmp_path / "b").exists()  # refused before the log, the bundle or any image was touched
    (tmp_path / "birds.yaml").write_text(BIRDS)
    assert main([*args, "--card", "birds.yaml"]) == 0
    card = (tmp_path / "b" / "MODEL_CARD.md").read_text()
    assert "(from birds.yaml, the model owner's card file)" in card
    assert "Sorting photographs of garden birds" in card and "- photographs of people" in card
    assert "health worker" not in card and "Screening aid" not in card
    assert "## Training\nNo training record in the checkpoint" in card  # random init: no `skinedge train` record
