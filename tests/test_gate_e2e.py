"""The seeded metrics gate end to end: both revisions over 2 paired seeds, in a template copy."""

from __future__ import annotations

import sys

import pytest
import yaml

from tests.e2e import commit, copy_of, sh

pytestmark = pytest.mark.slow


def test_a_seeded_gate_runs_both_revisions_on_the_same_seeds_and_reuses_them(
    template_repo, tmp_path
):
    repo = copy_of(template_repo, tmp_path / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["model"]["dropout"] = 0.5  # the change under review
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    commit(repo, "more dropout")
    gate = (sys.executable, "-m", "stages.gate", "--baseline", "HEAD~1", "--seeds", "2")
    status, out = sh(*gate, "--md", "report.md", "--jobs", "2", cwd=repo, check=False)
    assert status in (0, 1, 3), out[-3000:]
    report = (repo / "report.md").read_text()
    assert "over 2 paired seeds" in report and "s7: base → now" in report, report
    assert "s8: base → now" in report and "noise (std, base)" in report
    expected = 1 if "**FAIL**" in report else 3 if "| inconclusive" in report else 0
    assert status == expected, report
    # Both sides are DVC experiments, each on its own baseline commit (2 x 2 refs).
    refs = sh("git", "for-each-ref", "--format=%(refname)", "refs/exps/", cwd=repo).split()
    names = sorted(ref.rsplit("/", 1)[1] for ref in refs if "/gate-" in ref)
    assert names == ["gate-run-s7", "gate-run-s7", "gate-run-s8", "gate-run-s8"]
    assert len(sh("git", "worktree", "list", cwd=repo).splitlines()) == 1  # removed
    again_status, again = sh(*gate, cwd=repo, check=False)
    assert again_status == status and again.count("gate: 2/2 runs already done, reused") == 2
    assert " done · " not in again  # nothing trained the second time
    # An uncommitted edit against HEAD: the workspace's runs are gate-wip-s<seed>, HEAD's are
    # the committed runs above, reused; the edit is not compared with itself.
    params["model"]["dropout"] = 0.0
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    wip_status, wip = sh(*gate[:4], "HEAD", "--seeds", "2", "--jobs", "2", cwd=repo, check=False)
    assert wip_status in (0, 1, 3), wip[-3000:]
    assert "uncommitted changes" in wip and "wip s7" in wip and "wip s8" in wip, wip[-3000:]
    assert wip.count("gate: 2/2 runs already done, reused") == 1  # HEAD's side only
    refs = sh("git", "for-each-ref", "--format=%(refname)", "refs/exps/", cwd=repo).split()
    assert sorted(r.rsplit("/", 1)[1] for r in refs if "/gate-wip-" in r) == [
        "gate-wip-s7",
        "gate-wip-s8",
    ]
