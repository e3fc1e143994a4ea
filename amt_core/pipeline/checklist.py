"""The reporting checklist of a run (CLAIM 2024 and TRIPOD+AI): each item a run can answer, linked to the
table, figure or file of the run folder that answers it; the items only the authors can answer listed as
theirs to write. Written to ``tables/checklist.csv`` (links relative to the run folder) and
``tables/checklist.md`` (links relative to ``tables/``) by :func:`write_checklist`, which the report calls;
``amt figures`` writes one beside the tables it rebuilds, linking its own copies of the figures and tables.

TRIPOD+AI items are numbered as in Collins et al., BMJ 2024;385:e078378; CLAIM 2024 items (Tejani et al.,
Radiol Artif Intell 2024) are named by topic: check both against the journal's own form.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd

#: (topic, CLAIM 2024 topic, TRIPOD+AI item, files of the run that answer it (run-relative, optional
#: '#anchor' in report.md), what the authors must add or write)
ITEMS: tuple[tuple[str, str, str, tuple[str, ...], str], ...] = (
    (
        "Title, abstract, background, objectives",
        "title; abstract; background; objectives",
        "1, 2, 3a–c, 4",
        (),
        "the study's question, intended use and clinical role",
    ),
    (
        "Data sources",
        "data sources",
        "5a",
        (
            "cohort/cases.csv",
            "cohort/dataset.json",
            "cohort/provenance.json",
            "cohort/.synth/cohort.json",
            "cohort/insertions.csv",
            "tables/real_anatomy.md",
        ),
        "where the scans come from and why they represent the target population",
    ),
    (
        "Data dates",
        "data sources (dates)",
        "5b",
        (),
        "start and end of accrual: the case table holds no scan dates",
    ),
    (
        "Setting and centres",
        "data sources",
        "6a",
        ("tables/table1.md", "figures/flow.png"),
        "care setting and location of the centres",
    ),
    (
        "Eligibility",
        "eligibility criteria",
        "6b",
        ("figures/flow.png",),
        "inclusion and exclusion criteria: the case table lists included scans only",
    ),
    (
        "Data preprocessing",
        "data preprocessing steps",
        "7",
        ("train/config.json",),
        "any preparation before the case table (reformatting, cropping, de-identification)",
    ),
    (
        "Reference standard and who drew it",
        "ground truth; annotators; annotation tools; inter-reader variability",
        "8a–c",
        (),
        "definition of the tumour mask, the readers' qualifications and number, "
        "the tool used, blinding, and any measure of agreement",
    ),
    (
        "Predictors and acquisition",
        "image acquisition protocol; data elements",
        "9a–c",
        ("tables/table1.md", "cohort/cases.csv"),
        "the acquisition protocols beyond vendor, contrast and slice thickness",
    ),
    ("Sample size", "sample size", "10", ("figures/flow.png",), "how the study size was arrived at"),
    (
        "Missing data",
        "missing data",
        "11",
        ("tables/subgroups.md",),
        "why values are missing (they appear as the 'unknown' level)",
    ),
    (
        "Partitions and their independence",
        "data partitions; level of disjointness",
        "12a, 20c",
        ("figures/flow.png", "tables/table1.md", "notebooks/01_cohort.html"),
        "",
    ),
    ("Demographics per partition", "demographics per partition", "20b", ("tables/table1.md",), ""),
    ("Flow of participants", "flow of participants", "20a", ("figures/flow.png",), ""),
    (
        "Model and training details",
        "model description; software; initialisation; training details",
        "12c, 22",
        ("train/config.json", "train/training.json", "train/train_log.csv", "provenance.json"),
        "",
    ),
    (
        "Model selection",
        "selection of the final model; ensembling",
        "12c",
        ("train/train_log.csv", "figures/learning_curves.png"),
        "",
    ),
    ("Model output", "model output", "15", ("predictions/test/predictions.json",), ""),
    (
        "Metrics and their conventions",
        "metrics of model performance",
        "12e",
        ("report.md#conventions", "evaluation/test/summary.json"),
        "",
    ),
    (
        "Performance with uncertainty",
        "statistical measures of significance and uncertainty; performance on all partitions",
        "23a",
        (
            "tables/segmentation.md",
            "tables/detection.md",
            "figures/froc_confidence.png",
            "figures/metric_distributions.png",
            "figures/calibration.png",
            "analysis/analysis.json",
        ),
        "",
    ),
    (
        "Heterogeneity across institutions",
        "external validation; robustness",
        "12d, 23b",
        (
            "tables/institutions.md",
            "tables/institution_model.md",
            "figures/forest_institutions.png",
            "tables/real_anatomy.md",
        ),
        "",
    ),
    (
        "Subgroup and fairness analyses",
        "subgroup analyses",
        "14, 23a",
        ("tables/subgroups.md", "tables/detection_subgroups.md", "figures/forest_subgroups.png"),
        "which groups matter for fairness in the target population",
    ),
    (
        "Failure analysis",
        "failure analysis",
        "—",
        ("tables/failures.md", "tables/failure_subgroups.md", "figures/failures.png"),
        "",
    ),
    (
        "Limitations",
        "study limitations",
        "26",
        ("report.md#limits-the-data-impose",),
        "clinical limitations beyond what the data impose",
    ),
    (
        "Code and environment",
        "software; code availability",
        "18f",
        ("provenance.json", "params.yaml", "notebooks/03_evaluate.html"),
        "the public repository's address",
    ),
    (
        "Data availability",
        "data availability",
        "18e",
        ("cohort/.synth/cohort.json",),
        "whether and where the scans and masks can be obtained",
    ),
    (
        "Ethics, funding, conflicts, protocol, registration",
        "ethics; funding; registration; protocol",
        "17, 18a–d, 19",
        (),
        "approval and consent waiver, funding, conflicts, protocol and registration",
    ),
    (
        "Interpretation and implications",
        "implications for practice",
        "25, 27a–c",
        (),
        "what the results mean for practice",
    ),
)

#: the status of an item: the run's files answer it, they answer part of it, or only the authors can
RUN, PART, AUTHORS = "answered by the run", "run + authors", "authors to write"


def slug(heading: str) -> str:
    """The anchor GitHub (and mistune) give a Markdown heading: lower case, punctuation dropped, spaces -."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def build_checklist(run_dir: str | Path, *, will_exist: tuple[str, ...] = ("report.md",)) -> pd.DataFrame:
    """One row per item: topic, claim_2024, tripod_ai, status, evidence (the files of ``run_dir`` that exist,
    ';'-separated, run-relative) and authors (what is left to write). ``will_exist``: files written after
    the checklist (the report), counted as present."""
    root = Path(run_dir)
    rows = []
    for topic, claim, tripod, files, authors in ITEMS:
        found = [f for f in files if f.split("#")[0] in will_exist or (root / f.split("#")[0]).is_file()]
        status = (PART if authors else RUN) if found else AUTHORS
        rows.append(
            {
                "topic": topic,
                "claim_2024": claim,
                "tripod_ai": tripod,
                "status": status,
                "evidence": "; ".join(found),
                "authors": authors or ("" if found else "not answered by this run"),
            }
        )
    return pd.DataFrame(rows)


def summary(table: pd.DataFrame) -> str:
    """'12 items answered by the run, 9 in part (the authors add to them), 5 left to the authors'."""
    n = table["status"].value_counts()
    return (
        f"{int(n.get(RUN, 0))} of {len(table)} items answered by this run's files, {int(n.get(PART, 0))} in "
        f"part (the authors add to them), {int(n.get(AUTHORS, 0))} left to the authors"
    )


def checklist_markdown(
    table: pd.DataFrame, prefix: str = "../", link: Callable[[str], str] | None = None
) -> str:
    """The checklist as Markdown, each evidence file a link: ``link(path)`` of its run-relative path, by
    default ``prefix`` + the path."""
    link = link or (lambda f: prefix + f)
    lines = [
        "| Item | CLAIM 2024 | TRIPOD+AI | Status | Answered by | Authors to add |",
        "|---|---|---|---|---|---|",
    ]
    for r in table.itertuples(index=False):
        links = ", ".join(f"[`{f}`]({link(f)})" for f in r.evidence.split("; ") if f) or "–"
        lines.append(
            f"| {r.topic} | {r.claim_2024} | {r.tripod_ai} | {r.status} | {links} | {r.authors or '–'} |"
        )
    head = (
        f"**Reporting checklist (CLAIM 2024, TRIPOD+AI)**: {summary(table)}. TRIPOD+AI numbers as in "
        "Collins et al. (BMJ 2024); CLAIM items by topic.\n\n"
    )
    return head + "\n".join(lines) + "\n"


def write_checklist(
    run_dir: str | Path,
    tables_dir: str | Path | None = None,
    *,
    read_from: str | Path | None = None,
    copies: dict[str, Path] | None = None,
    will_exist: tuple[str, ...] = ("report.md",),
) -> list[Path]:
    """Write ``checklist.csv`` (evidence run-relative) and ``checklist.md`` (evidence as links) into
    ``tables_dir`` (default ``RUN/tables``); returns both paths.

    The Markdown's links are relative to ``read_from``, the folder it will be read in (default
    ``tables_dir``; a folder built beside and renamed into place passes its final name). ``copies`` maps a
    run-relative path to a copy of it that is linked instead (a folder of figures links its own figures and
    tables, and the run for the rest). ``will_exist``: as :func:`build_checklist`.
    """
    from amt_core.atomic import write_csv, write_text

    root = Path(run_dir)
    out = Path(tables_dir) if tables_dir else root / "tables"
    base = os.path.abspath(read_from or out)
    table = build_checklist(root, will_exist=will_exist)

    def link(evidence: str) -> str:
        path, hashed, anchor = evidence.partition("#")
        target = (copies or {}).get(path, root / path)
        return Path(os.path.relpath(os.path.abspath(target), base)).as_posix() + hashed + anchor

    return [
        write_csv(out / "checklist.csv", table),
        write_text(out / "checklist.md", checklist_markdown(table, link=link)),
    ]


def links(markdown: str) -> list[str]:
    """The link targets of a Markdown text (images included)."""
    return re.findall(r"\]\(([^)\s]+)\)", markdown)
