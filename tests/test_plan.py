"""gradguard.experiments.plan: compare.yaml read, choices applied, overrides, run names."""

from __future__ import annotations

import re

import pytest

from gradguard.errors import ParamsError
from gradguard.experiments.plan import (
    Cell,
    apply_overrides,
    check_plan,
    choose,
    matches,
    parse_plan,
)
from tests.compare_helpers import FOREIGN, REMEDIES


def test_the_committed_plan_has_the_default_remedies_presets_and_five_seeds(plan, raw_params):
    assert list(plan.remedies) == REMEDIES
    assert set(plan.presets) == {
        "stress",
        "late",
        "temporal-order",
        "temporal-order-fast",
        "temporal-order-sigmoid",
        "temporal-order-smart",
        "temporal-order-fast-sigmoid",
        "temporal-order-fast-smart",
    }
    smart = plan.presets["temporal-order-smart"]  # the paper's network, its own init
    assert smart["train.batch_size"] == 20 and smart["model.recurrent_init"] == "sparse"
    fast = plan.presets["temporal-order-fast"]  # the study's rung: 10x the paper's rate
    assert fast["train.learning_rate"] == 10 * plan.presets["temporal-order"]["train.learning_rate"]
    for init in ("sigmoid", "smart"):  # the rung's four keys over the initialisation's preset
        on_rung = plan.presets[f"temporal-order-fast-{init}"]
        keys = ("data.length", "train.learning_rate", "train.epochs", "train.patience")
        assert on_rung == {**plan.presets[f"temporal-order-{init}"], **{k: fast[k] for k in keys}}
    assert len(plan.seeds) == 5 and len(set(plan.seeds)) == 5
    for base in (None, *plan.presets):
        check_plan(choose(plan, base=base), raw_params)  # every run's params pass the schema


def test_a_run_applies_preset_then_neutral_then_remedy_then_seed(plan):
    chosen = choose(plan, base="late", remedies=["global_norm"], seeds=[3, 4])
    (first, _) = chosen.cells()
    assert first == Cell("global_norm", 3, None, "late")
    assert first.experiment == "cmp-late-global_norm-s3"
    merged = chosen.overrides(first)
    assert merged["train.learning_rate"] == 0.3 and merged["init_scale"] == 1.0
    assert merged["clip_norm"] == 1.0 and merged["train.on_explosion"] == "none"
    assert list(merged)[-1] == "seed" and merged["seed"] == 3
    ladder = choose(plan, remedies=["none"], seeds=[1, 2], ladder=[0.1])
    assert [c.experiment for c in ladder.cells()] == [
        "cmp-none-s1",
        "cmp-none-lr0.1-s1",
        "cmp-none-s2",
        "cmp-none-lr0.1-s2",
    ]
    assert ladder.overrides(ladder.cells()[1])["train.learning_rate"] == 0.1


@pytest.mark.parametrize(
    ("choice", "message"),
    [
        ({"remedies": ["none", "clipper"]}, "--remedies: unknown remedy 'clipper'"),
        ({"remedies": ["none", "none"]}, "names a remedy twice"),
        ({"base": "storm"}, "--base: unknown preset 'storm'"),
        ({"seeds": [1, 2, 1]}, "repeats a seed"),
        ({"seeds": [1]}, "expected at least 2 seeds"),
        ({"seeds": [-1, 2]}, "negative seed"),
        ({"ladder": [0.1, -0.3]}, "--lr-ladder"),
    ],
)
def test_bad_choices_are_one_line_naming_them(plan, choice, message):
    with pytest.raises(ParamsError, match=message.replace("[", r"\[")) as caught:
        choose(plan, **choice)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("remedy", "message"),
    [
        ({"clip_nrom": 1.0}, "remedy bad: clip_nrom=1.0: no such key"),
        ({"train.epoch": 3}, "remedy bad: train.epoch=3: no such key"),
        ({"clip_norm": -1.0}, "remedy bad: params: clip_norm=-1.0 is invalid"),
        ({"clip_mode": "sometimes"}, "remedy bad: params: clip_mode='sometimes' is invalid"),
    ],
)
def test_a_remedy_the_schema_refuses_is_named_with_its_key(plan, raw_params, remedy, message):
    bad = choose(plan)
    bad.remedies["bad"] = remedy
    with pytest.raises(ParamsError, match=message):
        check_plan(bad, raw_params)


def test_overrides_set_existing_keys_only_and_matching_compares_numbers_as_numbers():
    raw = {"seed": 1, "train": {"learning_rate": 0.1}, "model": {"filters": [4]}}
    merged = apply_overrides(raw, {"train.learning_rate": 1, "model.filters": [8, 8]})
    assert merged == {"seed": 1, "train": {"learning_rate": 1}, "model": {"filters": [8, 8]}}
    assert raw["model"]["filters"] == [4]  # the original is untouched
    assert matches(merged, {"train.learning_rate": 1.0, "model.filters": [8, 8]})
    assert not matches(merged, {"model.filters": [8]})
    assert not matches({"skip": 1}, {"skip": True})  # a bool is not a number here
    assert not matches(merged, {"train.momentum": 0.9})


def test_a_foreign_plan_writes_its_seed_key_and_reads_its_own_files():
    plan = parse_plan(FOREIGN, source="compare.yaml")
    cell = plan.cells(seeds=[7], remedies=["clipped"])[0]
    assert plan.overrides(cell) == {"opt.clip": 1.0, "train.random_state": 7}
    assert plan.files == ("results/scores.json",)
    assert plan.verdict is None and plan.gradients is None


def test_foreign_params_are_checked_for_keys_not_against_our_schema():
    plan = parse_plan(FOREIGN)
    raw = {"train": {"random_state": 0, "epochs": 3}, "opt": {"clip": None, "lr": 5}}
    check_plan(plan, raw, source="params.yaml")  # our schema would refuse every key here
    bad = parse_plan({**FOREIGN, "remedies": {"typo": {"opt.clipp": 1.0}}})
    with pytest.raises(
        ParamsError, match=r"remedy typo: opt.clipp=1.0: no such key in params.yaml"
    ):
        check_plan(bad, raw, source="params.yaml")
    with pytest.raises(ParamsError, match=r"remedy plain: train.random_state=0: no such key"):
        check_plan(plan, {"opt": {"clip": None}}, source="params.yaml")


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"metric": "scores.json"}, "metric='scores.json' is invalid; expected \"<file>:"),
        ({"seed_param": ""}, "seed_param='' is invalid"),
        ({"higher_is_better": "no"}, "higher_is_better='no' is invalid; expected true or false"),
    ],
)
def test_bad_reading_keys_are_one_line_each(raw, fragment):
    with pytest.raises(ParamsError, match=re.escape(fragment)):
        parse_plan({**FOREIGN, **raw}, source="compare.yaml")


@pytest.mark.parametrize(
    "cell",
    [
        Cell("none", 7),
        Cell("global_norm", 201, base="stress"),
        Cell("zscore_capped", 3, learning_rate=0.03, base="late"),
        Cell("run", 42, prefix="gate"),
    ],
)
def test_an_experiment_name_reads_back_as_its_cell(cell):
    assert Cell.parse(cell.experiment, cell.prefix, cell.base) == cell


@pytest.mark.parametrize(
    ("name", "base", "remedy"),
    [
        ("cmp-none-sx", None, None),  # no seed
        ("cmp-none-s1", "stress", None),  # a run without the base is not the base's
        ("gate-run-s1", None, None),  # another prefix
        ("cmp-none-lrfast-s1", None, None),  # a rate that is no number
        # Without a base, a preset's run is no cell: remedy names hold no "-".
        ("cmp-stress-none-s1", None, None),
    ],
)
def test_names_of_other_shapes_are_not_cells(name, base, remedy):
    cell = Cell.parse(name, "cmp", base)
    assert (cell and cell.remedy) == remedy


def test_a_preset_name_with_a_hyphen_reads_back_whole():
    cell = Cell("zscore_capped", 3, None, "temporal-order")
    assert cell.experiment == "cmp-temporal-order-zscore_capped-s3"
    assert Cell.parse(cell.experiment, base="temporal-order") == cell
    assert Cell.parse(cell.experiment, base="temporal") is None  # another preset's run
