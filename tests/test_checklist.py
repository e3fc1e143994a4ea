"""The reporting checklist and the data's limits, from hand-made run folders and tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from amt_core.pipeline.checklist import (
    AUTHORS,
    ITEMS,
    PART,
    RUN,
    build_checklist,
    links,
    slug,
    write_checklist,
)
from amt_core.pipeline.limits import data_limits


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x")


def test_checklist_links_only_files_that_exist_and_leaves_the_rest_to_the_authors(tmp_path):
    _touch(tmp_path, "figures/flow.png", "tables/table1.md", "train/train_log.csv")
    table = build_checklist(tmp_path).set_index("topic")
    assert table.loc["Flow of participants", "status"] == RUN
    assert table.loc["Flow of participants", "evidence"] == "figures/flow.png"
    assert table.loc["Demographics per partition", "evidence"] == "tables/table1.md"
    # a file answers part of it; the authors add the criteria
    assert table.loc["Eligibility", "status"] == PART and "criteria" in table.loc["Eligibility", "authors"]
    # learning_curves.png is missing: only the log is linked
    assert table.loc["Model selection", "evidence"] == "train/train_log.csv"
    assert table.loc["Failure analysis", "status"] == AUTHORS  # no failure table in this folder
    assert table.loc["Data dates", "status"] == AUTHORS and table.loc["Data dates", "evidence"] == ""
    # the report is written after the checklist: its sections count as present
    assert table.loc["Limitations", "evidence"] == "report.md#limits-the-data-impose"
    assert len(table) == len(ITEMS) and set(table["status"]) == {RUN, PART, AUTHORS}


def test_every_checklist_link_resolves_in_the_run_folder(tmp_path):
    files = sorted({f.split("#")[0] for *_, fs, _ in ITEMS for f in fs})
    _touch(tmp_path, *files)  # a complete run folder
    csv, md = write_checklist(tmp_path)
    targets = links(md.read_text())
    evidence = [
        f for cell in pd.read_csv(csv, keep_default_na=False)["evidence"] for f in cell.split("; ") if f
    ]
    assert targets and len(evidence) == len(targets)
    # each link, read from tables/, reaches the run's file its CSV row names (relative: the folder can move)
    for target, f in zip(targets, evidence, strict=True):
        assert not Path(target).is_absolute() and target.partition("#")[2] == f.partition("#")[2]
        assert (md.parent / target.split("#")[0]).resolve() == (tmp_path / f.split("#")[0]).resolve(), target
    assert all((tmp_path / f.split("#")[0]).is_file() for f in evidence)


@pytest.mark.parametrize(
    "heading, anchor",
    [
        ("Limits the data impose", "limits-the-data-impose"),
        ("Conventions", "conventions"),
        ("Subgroup tests and institution effects", "subgroup-tests-and-institution-effects"),
    ],
)
def test_anchors_are_the_headings_slugs(heading, anchor):
    assert slug(heading) == anchor


def test_report_anchors_the_checklist_points_to_are_report_headings():
    from amt_core.pipeline import report

    source = Path(report.__file__).read_text()
    anchors = {f.split("#")[1] for *_, fs, _ in ITEMS for f in fs if "#" in f}
    headings = {slug(h) for h in ("Conventions", "Limits the data impose")}
    assert anchors <= headings and all(
        f'"## {h}"' in source for h in ("Conventions", "Limits the data impose")
    )


# --- the limits the data impose ---------------------------------------------------------------------
def _tables(ref_voxels=(100, 0, 50), institutions=("A", "B", "B")):
    per_case = pd.DataFrame(
        {"case_id": ["t1", "t2", "t3"], "institution_id": list(institutions), "ref_voxels": list(ref_voxels)}
    )
    cases = pd.DataFrame(
        {
            "case_id": ["d1", "t1", "t2", "t3"],
            "split": ["train", "test", "test", "test"],
            "institution_id": ["A", *institutions],
            "sex": ["M", "F", "F", "M"],
        }
    )
    return per_case, cases


def _statement(limits, name):
    return next(item["statement"] for item in limits if item["limit"] == name)


def test_limits_are_derived_from_the_data():
    per_case, cases = _tables()
    limits = data_limits(per_case, cases, min_institution_scans=2, synthetic=True)
    assert _statement(limits, "scans without tumour").startswith("1 of 3 external-test scans hold no tumour")
    assert _statement(limits, "small institutions").startswith(
        "1 of 2 external-test institutions have fewer than 2 scans"
    )
    assert "1 external-test institution(s) also contributed training" in _statement(limits, "external test")
    assert "synthetic" in _statement(limits, "data source")
    assert "sex=F (n=2)" in _statement(limits, "small subgroups")


def test_limits_for_a_cohort_where_every_scan_holds_a_tumour():
    per_case, cases = _tables(ref_voxels=(100, 20, 50), institutions=("C", "D", "E"))
    cands = pd.DataFrame({"case_id": ["t1", "t2"], "confidence": [1.0, 1.0]})
    analysis = {
        "institution_cluster_bootstrap": {"estimable": False, "n_institutions": 3, "min_institutions": 10}
    }
    limits = data_limits(per_case, cases, analysis=analysis, synthetic=False, candidates=cands)
    assert _statement(limits, "scans without tumour").startswith("All 3 external-test scans hold a tumour")
    assert "specificity" in _statement(limits, "scans without tumour")
    assert "not estimable: 3 institutions, fewer than 10" in _statement(limits, "cluster bootstrap")
    assert (
        _statement(limits, "external test")
        == "The external test shares no institution with training or tuning."
    )
    assert "imported" in _statement(limits, "data source")
    assert "single point" in _statement(limits, "no confidence score")


def test_the_data_source_says_what_the_scans_and_tumours_are():
    """A hybrid cohort is real anatomy with inserted tumours (not 'synthetic'); a synthetic cohort with a
    real-anatomy subset counts its scans and patients; an imported cohort describes its own scans."""
    per_case, cases = _tables()
    cases = cases.assign(patient_id=["p1", "p2", "p3", "p4"])
    hybrid = _statement(data_limits(per_case, cases, hybrid=True), "data source")
    assert hybrid.startswith("The cohort is hybrid") and "chest CT of 4 patients" in hybrid
    assert "not synthetic" not in hybrid and "inserted tumours in real anatomy" in hybrid
    plain = _statement(data_limits(per_case, cases, synthetic=True), "data source")
    assert "real-anatomy" not in plain
    tested = cases["case_id"].isin(per_case["case_id"])
    real = cases.assign(
        anatomy=np.where(tested & (cases.index == cases.index[tested][0]), "real", "synthetic")
    )
    mixed = _statement(data_limits(per_case, real, synthetic=True), "data source")
    assert mixed.startswith("The cohort is synthetic") and "1 external-test scan holds" in mixed
    assert "chest CT of 1 patient (the real-anatomy subset" in mixed
    assert _statement(data_limits(per_case, cases), "data source").startswith("The cohort was imported")
