"""gradguard.experiments.cli: bad input is one line, exit status 2, nothing queued."""

from __future__ import annotations

import pytest

from stages import compare
from tests.compare_helpers import ROOT


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A folder with the committed compare.yaml and params.yaml, and no DVC repository."""
    for name in ("compare.yaml", "params.yaml"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--remedies", "none,clipper"], "unknown remedy 'clipper'"),
        (["--base", "storm"], "unknown preset 'storm'"),
        (["--seed-list", "4,5,4"], "repeats a seed"),
        (["--seed-list", "4"], "at least 2 seeds"),
        (["--seeds", "1"], "at least 2 seeds"),
        (["--seeds", "3", "--seed-list", "1,2"], "give one of them"),
        (["--shard", "3/2"], "--shard '3/2' is invalid"),
        (["--shard", "1/2", "--until-decided"], "writes no report"),
        (["--config", "missing.yaml"], "missing.yaml: file not found"),
        (["--sweep", "data.length=20"], "at least 2 distinct values"),
        (["--sweep", "data.length"], "expected KEY=V1,V2"),
        (["--sweep", "data.length=20,40", "--shard", "1/2"], "leave out --shard"),
        (["--sweep", "data.lenght=20,40"], "data.lenght=20: no such key"),
        (["--sweep", "data.length=20,5", "--base", "temporal-order"], "data.length=5 is invalid"),
    ],
)
def test_bad_command_lines_exit_2_with_one_line(workspace, capsys, argv, message):
    assert compare.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("compare: error: ") and message in err and err.count("\n") == 1
    assert not (workspace / "reports").exists()


@pytest.mark.parametrize(
    ("remedy", "message"),
    [
        ("{clip_nrom: 1.0}", "remedy bad: clip_nrom=1.0: no such key"),
        ("{clip_norm: -1.0}", "remedy bad: params: clip_norm=-1.0 is invalid"),
        ("[1, 2]", "remedies.bad: [1, 2] is invalid"),
    ],
)
def test_a_bad_remedy_in_compare_yaml_exits_2_naming_it(workspace, capsys, remedy, message):
    text = (workspace / "compare.yaml").read_text()
    (workspace / "compare.yaml").write_text(
        text.replace("remedies:\n", f"remedies:\n  bad: {remedy}\n")
    )
    assert compare.main([]) == 2
    assert message in capsys.readouterr().err
