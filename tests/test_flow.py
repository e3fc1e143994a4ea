"""The participant flow diagram from a hand-made case table whose counts are written beside it."""

from __future__ import annotations

import pandas as pd
import pytest

from amt_core.plots.flow import flow_counts, plot_flow

#            split  institution patient sex
ROWS = [
    ("train", "A", "p1", "M"),
    ("train", "A", "p2", "F"),
    ("train", "B", "p3", "M"),
    ("train", "B", "p3", "M"),  # one patient, two scans
    ("tune", "A", "p4", "F"),
    ("tune", "A", "p5", "F"),
    ("test", "C", "p6", "M"),
    ("test", "D", "p7", "F"),
    ("test", "D", "p8", "F"),
]


@pytest.fixture
def cases() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"case_id": f"c{i}", "split": s, "institution_id": inst, "patient_id": p, "sex": sex}
            for i, (s, inst, p, sex) in enumerate(ROWS)
        ]
    )


def test_flow_counts_per_partition(cases):
    c = flow_counts(cases, evaluated={"tune": 2, "test": 2}, exclusions={"no mask": 3, "motion": 1})
    assert c["total"] == {"scans": 9, "patients": 8, "institutions": 4}
    assert c["eligible"] == 13 and c["excluded"] == {"no mask": 3, "motion": 1}
    train, tune, test = (c["splits"][s] for s in ("train", "tune", "test"))
    assert (train["scans"], train["patients"], train["institutions"]) == (4, 3, 2)
    assert train["institutions_only_here"] == 1  # B; A is shared with tuning
    assert tune["institutions_only_here"] == 0 and test["institutions_only_here"] == 2
    assert (test["male"], test["female"]) == (1, 2)
    assert train["evaluated"] is None and tune["evaluated"] == 2 and test["evaluated"] == 2


def test_more_evaluated_than_the_split_holds_is_an_error(cases):
    with pytest.raises(ValueError, match="4 test scans evaluated, but the case table has 3"):
        flow_counts(cases, evaluated={"test": 4})


def test_flow_figure_shows_the_counts(cases):
    fig = plot_flow(flow_counts(cases, evaluated={"test": 2}))
    text = "\n".join(t.get_text() for t in fig.axes[0].texts)
    assert "n = 9" in text and "none recorded" in text
    assert "Case table: 9 scans, 8 patients,\n4 institutions" in text
    assert "External test\n3 scans, 3 patients\n2 institutions (2 only here)\n1 M / 2 F" in text
    assert "Evaluated: 2 scans\nnot evaluated: 1" in text
    assert text.count("Evaluated:") == 1  # tuning and training were not evaluated here
