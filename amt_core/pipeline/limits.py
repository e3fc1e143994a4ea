"""What the run's data cannot tell, said in words derived from the data themselves (so the statements stay
true for an imported cohort): the report prints them under "Limits the data impose".

:func:`data_limits` is pure (tables in, statements out); :func:`run_limits` reads them from a run folder.
Each statement is a dict ``{"limit", "statement", "evidence"}`` with ``evidence`` a path relative to the
run folder (or ``""``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from amt_core import registry

#: sub-group levels with fewer scans than this are called too small to compare
SMALL_LEVEL = 5


def data_limits(
    per_case: pd.DataFrame,
    cases: pd.DataFrame,
    *,
    analysis: dict | None = None,
    synthetic: bool = False,
    hybrid: bool = False,
    min_institution_scans: int = 3,
    candidates: pd.DataFrame | None = None,
) -> list[dict]:
    """Statements on what the external test (``per_case``: one row per scan with ``ref_voxels``) and the
    case table allow. ``analysis``: ``analysis/analysis.json`` (cluster bootstrap and mixed model).
    ``synthetic``: the cohort was made by ``amt cohort``, ``hybrid`` too: by inserting tumours into real
    chest CT (``--backgrounds``)."""
    analysis = analysis or {}
    out = []
    n = len(per_case)
    empty = int((per_case["ref_voxels"] <= 0).sum()) if "ref_voxels" in per_case else 0
    if empty == 0:
        text = (
            f"All {n} external-test scans hold a tumour (0 without one): scan-level specificity, negative "
            "predictive value, an ROC curve for tumour presence and decision curves are not estimable; "
            "false positives are counted per scan instead."
        )
    else:
        text = (
            f"{empty} of {n} external-test scans hold no tumour: scan-level specificity rests on those {empty} "
            "scans alone."
        )
    out.append(
        {"limit": "scans without tumour", "statement": text, "evidence": "evaluation/test/per_case.csv"}
    )

    sizes = per_case.groupby("institution_id").size()
    small = int((sizes < min_institution_scans).sum())
    out.append(
        {
            "limit": "small institutions",
            "statement": f"{small} of {sizes.size} external-test institutions have fewer than {min_institution_scans} scans "
            f"and are pooled into one row of the institution table and forest plot "
            f"({int((sizes <= 2).sum())} have 1–2 scans).",
            "evidence": "tables/institutions.md",
        }
    )
    cluster = analysis.get("institution_cluster_bootstrap") or {}
    if cluster:
        text = (
            f"The institution-cluster bootstrap was computed ({cluster.get('n_institutions')} institutions)."
            if cluster.get("estimable")
            else f"The institution-cluster bootstrap is not estimable: {cluster.get('n_institutions')} "
            f"institutions, fewer than {cluster.get('min_institutions')}; only scan-bootstrap intervals "
            "are given."
        )
        out.append({"limit": "cluster bootstrap", "statement": text, "evidence": "analysis/analysis.json"})
    mixed = analysis.get("institution_mixed_model") or {}
    if mixed.get("caveat"):
        out.append(
            {
                "limit": "institution variance",
                "statement": f"Institution model: {mixed['caveat']}",
                "evidence": "tables/institution_model.md",
            }
        )

    dev = set(cases.loc[cases["split"] != "test", "institution_id"])
    shared = len(set(per_case["institution_id"]) & dev)
    out.append(
        {
            "limit": "external test",
            "statement": (
                "The external test shares no institution with training or tuning."
                if not shared
                else f"{shared} external-test institution(s) also contributed training or tuning scans: the test "
                "is not fully external."
            ),
            "evidence": "figures/flow.png",
        }
    )

    small_levels = _small_levels(per_case, cases)
    if small_levels:
        out.append(
            {
                "limit": "small subgroups",
                "statement": f"{len(small_levels)} subgroup level(s) hold fewer than {SMALL_LEVEL} external-test scans "
                f"({', '.join(small_levels[:6])}{' ...' if len(small_levels) > 6 else ''}): their intervals "
                "are wide and their differences untestable in practice.",
                "evidence": "tables/subgroups.md",
            }
        )

    if candidates is not None and len(candidates) and candidates["confidence"].nunique() <= 1:
        out.append(
            {
                "limit": "no confidence score",
                "statement": "Every candidate has the same confidence: the confidence-swept FROC (reading A) is a "
                "single point per IoU threshold.",
                "evidence": "evaluation/test/candidates.csv",
            }
        )
    out.append(
        {
            "limit": "one reference standard",
            "statement": "Each scan has one reference mask: inter-reader variability, and the model's performance "
            "relative to it, are not estimable from this run.",
            "evidence": "cohort/cases.csv",
        }
    )
    out.append(
        {
            "limit": "data source",
            "statement": _data_source(per_case, cases, synthetic, hybrid),
            "evidence": "cohort/.synth/cohort.json" if synthetic or hybrid else "cohort/provenance.json",
        }
    )
    return out


def _data_source(per_case: pd.DataFrame, cases: pd.DataFrame, synthetic: bool, hybrid: bool) -> str:
    """What the cohort's scans and tumours are, and so what its numbers are evidence of."""
    if not (synthetic or hybrid):
        return "The cohort was imported: the numbers describe those scans and their reference masks."
    ids = cases["patient_id"] if "patient_id" in cases.columns else cases["case_id"]  # one scan per patient
    patients = int(ids.nunique())
    if hybrid:
        return (
            f"The cohort is hybrid (`amt cohort --backgrounds`): real tumour-free chest CT of {patients} "
            f"patient{'s' if patients != 1 else ''} with synthetic tumours inserted. Its numbers say how the model "
            "finds inserted tumours in real anatomy; they are no evidence about its performance on real tumours."
        )
    text = (
        "The cohort is synthetic (generated by `amt cohort`): its numbers test the pipeline and are no evidence "
        "about the model's performance on real CT."
    )
    if "anatomy" in cases.columns:
        real = cases["case_id"].isin(per_case["case_id"]) & (cases["anatomy"] == "real")
        if real.any():
            n, k = int(real.sum()), int(ids[real].nunique())
            text += (
                f" {n} external-test scan{'s hold' if n != 1 else ' holds'} synthetic tumours inserted into the real "
                f"chest CT of {k} patient{'s' if k != 1 else ''} (the real-anatomy subset, reported on its own)."
            )
    return text


def _small_levels(per_case: pd.DataFrame, cases: pd.DataFrame) -> list[str]:
    from amt_core.evaluation.stats import UNKNOWN, merge_cases, subgroup_levels

    columns = [registry.SUBGROUPS[s][0] for s in registry.SUBGROUPS]
    data = merge_cases(per_case[["case_id"]], cases, columns)
    small = []
    for name in registry.SUBGROUPS:
        if registry.SUBGROUPS[name][0] not in data.columns:
            continue
        counts = subgroup_levels(data, name).value_counts()
        small += [
            f"{name}={lev} (n={int(k)})"
            for lev, k in counts.items()
            if 0 < k < SMALL_LEVEL and lev != UNKNOWN
        ]
    return small


def _cohort_kind(settings: Path) -> str | None:
    """ "hybrid" or "synthetic" for a cohort of ``amt cohort`` (its ``.synth/cohort.json``), None for another."""
    if not settings.is_file():
        return None
    try:
        return "hybrid" if json.loads(settings.read_text()).get("kind") == "hybrid" else "synthetic"
    except (OSError, ValueError, AttributeError):
        return "synthetic"


def run_limits(run_dir: str | Path, cohort_csv: str = "") -> list[dict]:
    """:func:`data_limits` of a run folder (empty when the external test was not evaluated)."""
    from amt_core.layout import RunLayout
    from amt_core.plots.manuscript import load_cases

    layout = RunLayout.of(run_dir, cohort_csv)
    ev = layout.evaluation("test")
    if not (ev / "per_case.csv").is_file():
        return []
    path = layout.analysis_dir / "analysis.json"
    analysis = json.loads(path.read_text()) if path.is_file() else {}
    cands = ev / "candidates.csv"
    kind = _cohort_kind(layout.cohort_dir / ".synth" / "cohort.json")
    limits = data_limits(
        pd.read_csv(ev / "per_case.csv"),
        load_cases(layout),
        analysis=analysis,
        synthetic=kind is not None and kind != "hybrid",
        hybrid=kind == "hybrid",
        min_institution_scans=int(analysis.get("min_institution_scans", 3)),
        candidates=pd.read_csv(cands) if cands.is_file() else None,
    )
    for item in limits:  # evidence outside the run folder (an imported cohort elsewhere) is not linked
        if item["evidence"] and not (layout.root / item["evidence"]).exists():
            item["evidence"] = ""
    return limits


def limits_markdown(limits: list[dict]) -> list[str]:
    """Report lines: one bullet per statement with a link to its evidence."""
    lines = []
    for item in limits:
        link = f" ([`{item['evidence']}`]({item['evidence']}))" if item["evidence"] else ""
        lines.append(f"- **{item['limit'].capitalize()}.** {item['statement']}{link}")
    return lines + [""] if lines else []
