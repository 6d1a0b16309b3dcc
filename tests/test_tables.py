"""meta_rl.tables: the one table formatter, plain and Markdown, against literal expected text."""

from __future__ import annotations

import pytest

from meta_rl.tables import format_table


def test_plain_table_aligns_columns_pads_short_rows_and_formats_floats():
    text = format_table(["name", "x", "y"], [["a", 1.5, 2], ["long", -10.25]], align="lrr")
    assert text.splitlines() == [
        "name        x  y",
        "a       1.500  2",
        "long  -10.250",  # the missing cell is padded, then trailing spaces are stripped
    ]


def test_rule_under_the_header_and_one_alignment_for_all_columns():
    text = format_table(["id", "n"], [["ab", "1"]], rule=True, align="l")
    assert text == "id  n\n--  -\nab  1"
    assert format_table(["a", "bb"], [[1, 2.0]], align="r") == "a     bb\n1  2.000"


def test_markdown_table():
    text = format_table(["method", "step 0"], [["maml", "-1.0 ± 0.5"]], markdown=True)
    assert text == "| method | step 0 |\n|---|---|\n| maml | -1.0 ± 0.5 |"


def test_bad_rows_and_alignments_are_refused():
    with pytest.raises(ValueError, match="row has 3 cells, the header 2"):
        format_table(["a", "b"], [[1, 2, 3]])
    with pytest.raises(ValueError, match="align"):
        format_table(["a", "b"], [[1, 2]], align="lrl")
    with pytest.raises(ValueError, match="align"):
        format_table(["a", "b"], [[1, 2]], align="lx")
