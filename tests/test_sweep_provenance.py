"""Sweep provenance (asd/sweep/provenance.py): what a sweep ran from, enough to rerun it."""

import json
from pathlib import Path

from asd.sweep.provenance import ARTIFACT_PATH, write_provenance
from asd.sweep.settings import SweepSettings
from asd.sweep.space import load_space

SPACE = """\
# a comment the copy keeps
base: smoke
fixed:
  train.epochs: 3
params:
  train.lr: {choice: [0.001, 0.01]}
"""


def test_the_files_hold_the_space_the_base_config_the_data_and_the_settings(tmp_path):
    space_file = tmp_path / "space.yml"
    space_file.write_text(SPACE)
    space = load_space(space_file)
    settings = SweepSettings(
        space=space_file, name="s1", holdout_machines=("valve",), command="asd sweep --name s1"
    )
    data = {"root": "/data", "fingerprint": "abc", "tune": ["fan"], "holdout": ["valve"]}
    folder = write_provenance(tmp_path / ARTIFACT_PATH, settings, space_file, space, data)
    assert folder == tmp_path / "provenance"
    assert sorted(p.name for p in folder.iterdir()) == [
        "base_config.json",
        "command.txt",
        "data.json",
        "settings.json",
        "space.yaml",
    ]
    assert (folder / "space.yaml").read_text() == SPACE  # as written, comments included
    base = json.loads((folder / "base_config.json").read_text())
    assert base == json.loads(json.dumps(space.base.to_flat()))
    assert base["train.epochs"] == 3  # the fixed overrides are resolved into it
    assert json.loads((folder / "data.json").read_text()) == data
    saved = json.loads((folder / "settings.json").read_text())
    assert saved["name"] == "s1" and saved["holdout_machines"] == ["valve"]
    assert saved["space"] == str(space_file) and saved["workdir"] == "asd-work"
    assert (folder / "command.txt").read_text() == "asd sweep --name s1\n"


def test_rewriting_replaces_the_old_files_and_says_when_no_command_started_it(tmp_path):
    space_file = tmp_path / "space.yml"
    space_file.write_text(SPACE)
    space = load_space(space_file)
    folder = tmp_path / "p"
    write_provenance(folder, SweepSettings(space=space_file, command="old"), space_file, space, {})
    space_file.write_text(SPACE.replace("0.01", "0.1"))
    write_provenance(folder, SweepSettings(space=space_file), space_file, space, {"x": Path("/d")})
    assert "0.1]" in (folder / "space.yaml").read_text()
    assert (folder / "command.txt").read_text() == "(not started from the command line)\n"
    assert json.loads((folder / "data.json").read_text()) == {"x": "/d"}  # paths as text
