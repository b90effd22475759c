"""gradguard.errors: the input errors and the one wording of a bad params value."""

from __future__ import annotations

import pytest

from gradguard.errors import INPUT_ERRORS, ClusterError, DataError, ParamsError, invalid


def test_invalid_names_the_key_the_value_and_what_was_expected_on_one_line():
    error = invalid("train.epochs", 0, "an integer >= 1")
    assert isinstance(error, ParamsError)
    assert str(error) == "params: train.epochs=0 is invalid; expected an integer >= 1"


@pytest.mark.parametrize(
    "value, shown", [("", "''"), ("mnist ", "'mnist '"), (None, "None"), ([1, 2], "[1, 2]")]
)
def test_the_value_is_shown_as_python_writes_it_so_blanks_and_types_are_visible(value, shown):
    assert (
        str(invalid("data.source", value, "x"))
        == f"params: data.source={shown} is invalid; expected x"
    )


def test_every_input_error_is_a_value_error_and_no_other_error_counts_as_bad_input():
    assert (ParamsError, DataError, ClusterError) == INPUT_ERRORS
    assert all(issubclass(kind, ValueError) for kind in INPUT_ERRORS)
    assert not issubclass(KeyError, INPUT_ERRORS)  # a bug stays a traceback
