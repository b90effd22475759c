"""gradguard.experiments.compare: shards and adding seeds until decided."""

from __future__ import annotations

import json

import pytest

from gradguard.errors import ParamsError
from gradguard.experiments.compare import _more_seeds, shard_of
from gradguard.experiments.plan import choose
from tests.compare_helpers import UnevenQueue, small_plan


def test_shards_are_disjoint_and_cover_the_grid(plan):
    cells = choose(plan, seeds=[1, 2, 3]).cells()
    shares = [cells[k - 1 :: 4] for k in range(1, 5)]
    assert sorted(c.experiment for share in shares for c in share) == sorted(
        c.experiment for c in cells
    )
    assert shard_of("2/4", False) == (2, 4) and shard_of(None, True) is None
    for bad in ("0/2", "2", "a/b", "1/0"):
        with pytest.raises(ParamsError, match="--shard"):
            shard_of(bad, False)


def test_until_decided_adds_the_same_new_seeds_to_the_undecided_and_the_best():
    report = {
        "best": "global_norm",
        "remedies": [
            {"name": "global_norm", "label": "recommended", "vs_best": None},
            {"name": "zscore", "label": "inconclusive", "vs_best": {"seeds_to_decide": 7}},
            {"name": "none", "label": "unsafe", "vs_best": None},
        ],
    }
    seeds = {"global_norm": [1, 2, 3], "zscore": [1, 2, 3], "none": [1, 2, 3]}
    # up to the next planned look (6), whatever seeds_to_decide says: the looks are fixed
    assert _more_seeds(report, seeds, target=6) == {
        "zscore": [4, 5, 6],
        "global_norm": [4, 5, 6],
    }
    seeds = {name: [1, 2, 3, 4, 5, 6] for name in seeds}
    assert _more_seeds(report, seeds, target=6) == {}  # at the look already


def test_until_decided_adds_seeds_at_the_planned_look_and_widens_every_interval(plan, tmp_path):
    from gradguard.experiments.compare import CompareRun

    chosen = small_plan(plan, ["global_norm", "zscore"], seeds=(1, 2, 3))
    queue, lines = UnevenQueue(), []
    looks = (3, 6)  # stats.planned_looks(3, 6)
    flow = CompareRun(queue, chosen, 2, out=tmp_path, looks=looks, poll=0, log=lines.append)
    assert flow.run() == 0
    assert "looks at 3, 6 seeds, 97.5 % intervals at each" in lines[0]
    # differences -0.02, 0, -0.02 at 3 seeds: undecided, so both go to the next look, 6
    assert sorted(queue.queued) == sorted(
        f"cmp-{name}-s{seed}" for name in ("global_norm", "zscore") for seed in range(1, 7)
    )
    report = json.loads((tmp_path / "compare.json").read_text())
    assert report["confidence"] == 0.975
    zscore = next(s for s in report["remedies"] if s["name"] == "zscore")
    # 6 seeds: differences -0.02, 0 three times each: mean -0.01, std 0.010954, standard
    # error 0.0044721, t(0.9875, 5) = 3.163381: -0.01 -+ 0.014147, which holds -0.01
    assert zscore["label"] == "inconclusive"
    assert zscore["vs_best"]["low"] == pytest.approx(-0.024147, abs=2e-6)
    assert "97.5 % CI" in (tmp_path / "compare.md").read_text()
