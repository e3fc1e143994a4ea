"""``report.md`` and ``report.html`` of a run: the headline tables, the figures with captions, the
evaluation conventions, and the provenance (config, seed, git commit, package versions, input hashes).

Built from the run folder's files only, so it can be rebuilt at any time (``04_figures`` does).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from amt_core.atomic import write_text
from amt_core.layout import RunLayout


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _md_table(mapping: dict, key: str = "setting", value: str = "value") -> str:
    lines = [f"| {key} | {value} |", "|---|---|"]
    for k, v in mapping.items():
        text = json.dumps(v) if isinstance(v, (dict, list, tuple)) else str(v)
        lines.append(f"| {k} | {text.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def build_report(run_dir: str | Path, cohort_csv: str = "") -> str:
    """The Markdown text of the report of ``run_dir``."""
    from amt_core.plots.captions import figure_captions, table_titles
    from amt_core.plots.manuscript import evaluation_config

    layout = RunLayout.of(run_dir, cohort_csv)
    root = layout.root
    prov = _json(root / "provenance.json")
    params = prov.get("config", {}).get("params", {})
    summary = _json(layout.evaluation("test") / "summary.json")
    config = evaluation_config(layout, summary)  # captions in the words of the run's own conventions
    analysis = _json(layout.analysis_dir / "analysis.json")
    out = [
        f"# Study report: `{root.name}`",
        "",
        f"Generated {datetime.now(UTC).isoformat(timespec='seconds')} from the run folder "
        f"`{root}`. Preset: `{prov.get('config', {}).get('params_file', '?')}`; seed {params.get('seed', 0)}.",
        "",
        "All numbers are from the synthetic or imported cohort of this run, not from the study's "
        "private data; the published values are quoted for comparison only.",
        "",
    ]
    out[1:1] = _preview_banner(layout, params)  # first thing under the title
    out += _training_banner(layout)
    out += _headline(layout, config.labels(), summary.get("bootstrap") or {})
    out += _checklist_section(layout)
    out += _reviewer_section(layout, analysis)
    out += _calibration_section(layout)
    out += _seeds_section(layout)
    out += _real_anatomy_section(layout)
    out += _limits_section(layout)
    out += ["## Tables", ""]
    for stem, title in table_titles(config).items():
        md = layout.tables_dir / f"{stem}.md"
        if md.is_file():
            text = md.read_text()
            out += [
                text if text.startswith("**") else f"**{title}**\n\n{text}",
                "",
                f"CSV: [`tables/{stem}.csv`](tables/{stem}.csv)",
                "",
            ]

    out += ["## Figures", ""]
    for k, (stem, caption) in enumerate(figure_captions(config).items(), 1):
        png = layout.figures_dir / f"{stem}.png"
        if png.is_file():
            out += [
                f"![{stem}](figures/{stem}.png)",
                "",
                f"*Figure {k}. {caption}* (vector: [`figures/{stem}.pdf`](figures/{stem}.pdf))",
                "",
            ]

    out += ["## Conventions", ""]
    words = summary.get("conventions") or {}  # EvalConfig.describe(): the one statement of the conventions
    if isinstance(words, dict) and words:
        out += ["As recorded by the evaluation of the external test (`evaluation/test/summary.json`):", ""]
        out += [f"- **{k.replace('_', ' ')}**: {v}" for k, v in words.items()] + [""]
    if summary.get("fingerprint"):  # Metrics Reloaded-style record of every evaluation decision
        out += ["Evaluation fingerprint:", "", _md_table(summary["fingerprint"], "decision", "choice")]
    conv = summary.get("config") or {}
    if conv:
        out += ["Evaluation settings (`EvalConfig`):", "", _md_table(conv)]
    if analysis:
        settings = {k: v for k, v in analysis.items() if not isinstance(v, dict)}
        out += ["Statistics settings (from `analysis/analysis.json`):", "", _md_table(settings)]
        for name, block in analysis.items():
            if isinstance(block, dict):
                out += [f"{name.replace('_', ' ').capitalize()}:", "", _md_table(block)]

    out += ["## Provenance", ""]
    if prov:
        out += [
            f"- git commit: `{prov.get('git_commit')}`",
            f"- amt code (SHA-256 of its sources): `{prov.get('code_sha256')}`",
            f"- created: {prov.get('created')}",
            f"- platform: {prov.get('platform')}",
            f"- command: `{' '.join(prov.get('command', []))}`",
            "",
            "Parameters:",
            "",
            _md_table(params, "parameter"),
            "Package versions:",
            "",
            _md_table(prov.get("versions", {}), "package", "version"),
            "Input hashes (SHA-256):",
            "",
            _md_table(_short_paths(prov.get("input_hashes", {}), root), "file", "sha256"),
        ]
    from amt_core.pipeline.params import NOTEBOOKS
    from amt_core.pipeline.run import REPORT_STEP

    # the steps' own records (.steps/NAME.json; not hashes.json or incomplete.json), in the run's order; the
    # report is written inside REPORT_STEP, before it and the steps after it record themselves
    order = list(NOTEBOOKS)
    steps = [layout.steps_dir / f"{name}.json" for name in order]
    if any(p.is_file() for p in steps[: order.index(REPORT_STEP)]):
        lines = ["| step | finished | seconds | input files (sha256) |", "|---|---|---:|---|"]
        for name, path in zip(order, steps, strict=True):
            if order.index(name) >= order.index(REPORT_STEP):
                when = "this step (writes this report)" if name == REPORT_STEP else "runs after this report"
                lines.append(f"| {name} | {when} | – | – |")
                continue
            if not path.is_file():
                lines.append(f"| {name} | not run | – | – |")
                continue
            m = _json(path)
            ins = (
                "; ".join(
                    f"{Path(k).name}: {(v or '')[:12]}"
                    for k, v in m.get("inputs", {}).items()
                    if not k.endswith("/")
                )
                or "–"
            )
            if len(ins) > 300:
                ins = f"{len(m.get('inputs', {}))} files"
            lines.append(f"| {name} | {m.get('finished')} | {m.get('seconds')} | {ins} |")
        out += ["Pipeline steps (from `.steps/`):", "", "\n".join(lines), ""]
    return "\n".join(out) + "\n"


def _preview_banner(layout: RunLayout, params: dict) -> list[str]:
    """A warning on top of a preview run (``preview: true`` in its parameters, e.g. the ``quick`` preset)."""
    import pandas as pd

    from amt_core.model.run_control import read_status
    from amt_core.registry import STUDY_DESIGN

    if not params.get("preview"):
        return []
    d = STUDY_DESIGN
    split = pd.read_csv(layout.cases_csv)["split"] if layout.cases_csv.is_file() else pd.Series(dtype=str)
    n = {s: int((split == s).sum()) for s in ("train", "tune", "test")}
    status = read_status(layout.train_dir)
    configured, trained = status.get("configured_steps", "?"), status.get("steps")
    # the steps trained, when a stop (the time cap) left them short of the configured ones
    steps = (
        f"{configured} steps"
        if trained in (None, configured)
        else f"{trained} of {configured} configured steps"
    )
    return [
        "",
        f"> **Preview, not the study's design.** This run is a reduced first look (`preview: true`): "
        f"{len(split)} scans ({n['train']} train / {n['tune']} tune / {n['test']} test) and a short training "
        f"({steps}), against the study's {d['n_cases']} scans ({d['n_train']} / {d['n_tune']} / "
        f"{d['n_test']}). Its numbers and figures show what the pipeline produces, not what the study's "
        "design gives; `make reproduce` (`params/demo.yaml`) runs the faithful demo.",
    ]


def _training_banner(layout: RunLayout) -> list[str]:
    """A warning on top when the model's training is incomplete (``train/training.json``)."""
    from amt_core.model.run_control import FINISH_RUN, incomplete_note, read_status

    note = incomplete_note(read_status(layout.train_dir), FINISH_RUN)
    return (
        [
            f"> **Incomplete training** (`train/training.json`): {note}. Every number below is from this "
            "model.",
            "",
        ]
        if note
        else []
    )


def _headline(layout: RunLayout, labels: dict[str, str], boot: dict) -> list[str]:
    """This run's external-test means and operating point beside the published numbers, labelled with the
    run's own conventions (``labels``: ``EvalConfig.labels()``; ``boot``: summary.json's "bootstrap"); the
    published detection numbers are at IoU ≥ 0.5, said so when the run's criterion differs."""
    import pandas as pd

    path = layout.analysis_dir / "comparison.csv"
    if not path.is_file():
        return []
    c = pd.read_csv(path).set_index("metric")
    if boot.get("estimable", True):
        head = f"| | this run ({labels['ci']} CI, {labels['unit']} bootstrap) | published |"
    else:  # no resamples: the sensitivity keeps its Wilson interval, the rest none
        head = f"| | this run (no bootstrap; sensitivity with its Wilson {labels['ci']} CI) | published |"
    lines = ["## Headline (external test)", "", head, "|---|---|---:|"]
    from amt_core.registry import METRIC_LABELS

    published_hit = "IoU ≥ 0.5"
    for metric, label in METRIC_LABELS.items():
        if metric in c.index:
            r = c.loc[metric]
            ci = f" ({r['ci_lo']:.2f}–{r['ci_hi']:.2f})" if pd.notna(r["ci_lo"]) else ""
            published = f"{r['published']:.2f}"
            if metric.endswith("_iou50"):  # the operating point: at the run's criterion
                label = label.replace(published_hit, labels["hit"])
                if labels["hit"] != published_hit:
                    published += f" (at {published_hit})"
            lines.append(f"| {label} | {r['ours']:.2f}{ci} | {published} |")
    lines += [
        "",
        "Means are over scans of per-scan values; the published values are Takemura et al. "
        "(Sci Rep 2026), on their private cohort.",
        "",
    ]
    return lines + _interval_notes(layout)


def _interval_notes(layout: RunLayout) -> list[str]:
    """Intervals that were not computed, and why (a collapsed interval must never pass for a real one)."""
    notes = []
    cluster = _json(layout.analysis_dir / "analysis.json").get("institution_cluster_bootstrap") or {}
    if cluster and not cluster.get("estimable", True):
        notes.append(
            f"**Institution-cluster bootstrap: {cluster.get('note')}.** Its intervals are left out "
            "of the tables; the scan-bootstrap intervals above stand alone."
        )
    boot = _json(layout.evaluation("test") / "summary.json").get("bootstrap") or {}
    if boot and not boot.get("estimable", True):
        notes.append(f"**Evaluation intervals ({boot.get('unit')} bootstrap): {boot.get('note')}.**")
    elif boot.get("caution"):
        notes.append(f"**Evaluation intervals ({boot.get('unit')} bootstrap): {boot.get('caution')}.**")
    return [*notes, ""] if notes else []


def _checklist_section(layout: RunLayout) -> list[str]:
    """A pointer to the reporting checklist (written by :func:`write_report` before the report)."""
    import pandas as pd

    from amt_core.pipeline.checklist import AUTHORS, summary

    path = layout.tables_dir / "checklist.csv"
    if not path.is_file():
        return []
    table = pd.read_csv(path, keep_default_na=False)
    todo = "; ".join(table.loc[table["status"] == AUTHORS, "topic"])
    return [
        "## Reporting checklist",
        "",
        f"CLAIM 2024 and TRIPOD+AI: {summary(table)}; each linked to the file that answers it in "
        "[`tables/checklist.md`](tables/checklist.md) ([CSV](tables/checklist.csv)). Left to the authors: "
        + (todo or "none")
        + ".",
        "",
    ]


#: how the report names the subgroup tests (amt_core.evaluation.stats)
TEST_NAMES = {
    "kruskal-wallis": "Kruskal–Wallis",
    "mann-whitney": "Mann–Whitney U",
    "fisher": "Fisher's exact",
    "chi-square": "chi-square",
    "fisher-freeman-halton": "Fisher–Freeman–Halton (Monte Carlo)",
}


def _reviewer_section(layout: RunLayout, analysis: dict) -> list[str]:
    """Multiplicity of the subgroup tests and the institution variance in words."""
    import pandas as pd

    from amt_core.evaluation.multiplicity import format_p

    out = []
    for name, what in (("subgroups", "per-scan Dice"), ("detection_subgroups", "lesion-wise sensitivity")):
        path = layout.analysis_dir / f"{name}.csv"
        if not path.is_file():
            continue
        t = pd.read_csv(path).drop_duplicates("subgroup")
        if t.empty or "p_adjusted" not in t:
            continue
        tests = ", ".join(
            TEST_NAMES.get(x, x) for x in sorted(set(t["test"].dropna().astype(str)) - {"none"})
        )
        out.append(
            f"- **{what[0].upper() + what[1:]}** across subgroup levels ({tests or 'no test'}; `analysis/{name}.csv`): "
            f"{int(t['n_tests'].iloc[0])} tests in one family, Holm-adjusted; "
            + "; ".join(
                f"{r.subgroup} {_p_phrase(format_p(r.p_value))} (Holm {format_p(r.p_adjusted)})"
                for r in t.itertuples()
            )
            + "."
        )
    mixed = analysis.get("institution_mixed_model") or {}
    if mixed.get("generalisation"):
        out.append(
            f"- **Institution effects** (random-intercept model of Dice, [`tables/institution_model.md`]"
            f"(tables/institution_model.md); ICC interval: {mixed.get('icc_ci_method') or 'not computed'}): "
            f"{mixed['generalisation']}"
        )
    if not out:
        return []
    return [
        "## Subgroup tests and institution effects",
        "",
        "Subgroup p-values are descriptive: each table's tests form one family and are adjusted by Holm's "
        "method (family-wise error), shown beside the raw value; p-values below 0.001 are printed as "
        "`< 0.001`.",
        "",
        *out,
        "",
    ]


def _p_phrase(text: str) -> str:
    """``p = 0.012`` or ``p < 0.001`` from :func:`format_p`'s text."""
    return f"p {text}" if text.startswith("<") else f"p = {text}"


#: each row of ``analysis/calibration.csv``: its name in the report's words and what it calibrates
CALIBRATION_KINDS = {
    "lesion": (
        "Lesions",
        "lesion confidence (each candidate's maximum probability against a hit at the operating IoU)",
    ),
    "voxel": (
        "Voxels, whole scan",
        "voxel probability over the whole scan (a weighted sample of every voxel)",
    ),
    "voxel_near": (
        "Voxels near the tumour",
        "voxel probability near the tumour (within 10 mm of it, or probability >= 0.05)",
    ),
}


def _calibration_section(layout: RunLayout) -> list[str]:
    """The section "Calibration": expected calibration error with its bootstrap interval per kind, before and
    after one temperature fitted on the tuning split, and what the temperature says (over- or
    under-confident), from ``analysis/calibration.csv``; the interval's level from the test evaluation's
    ``summary.json`` (the level ``calibration_study`` was given)."""
    import math

    import pandas as pd

    path = layout.analysis_dir / "calibration.csv"
    if not path.is_file():
        return []
    table = pd.read_csv(path)
    if table.empty:
        return []
    config = _json(layout.evaluation("test") / "summary.json").get("config") or {}
    level = float(config.get("ci_level", 0.95))
    from amt_core.evaluation.calibration import T_BOUNDS

    # each kind's share of the weight in its lowest bin, before scaling (a whole-scan voxel ECE is mostly the
    # background's ~0 probabilities)
    lowest_bin_share: dict[str, float] = {}
    bins_path = layout.analysis_dir / "calibration_bins.csv"
    if bins_path.is_file():
        bins = pd.read_csv(bins_path)
        if {"kind", "scaled", "bin", "weight"} <= set(bins.columns):
            for kind, part in bins[~bins["scaled"].astype(bool)].groupby("kind"):
                total = float(part["weight"].sum())
                if total > 0:
                    lowest_bin_share[str(kind)] = (
                        float(part.loc[part["bin"] == part["bin"].min(), "weight"].sum()) / total
                    )

    def finite(*values) -> bool:
        return all(isinstance(v, int | float) and math.isfinite(v) for v in values)

    def ece(value, lo, hi) -> str:
        if not finite(value):
            return "–"
        return f"{value:#.2g} ({lo:#.2g}–{hi:#.2g})" if finite(lo, hi) else f"{value:#.2g} (no interval)"

    rows = [
        f"| what | ECE ({level:.0%} CI) | temperature (fitted on the tuning split) | ECE after it ({level:.0%} CI) |",
        "|---|---|---|---|",
    ]
    words = []
    for r in table.to_dict("records"):
        name, what = CALIBRATION_KINDS.get(r["kind"], (r["kind"], r["kind"]))
        t = float(r["temperature"])
        rows.append(
            f"| {what} | {ece(r['ece_before'], r['ece_ci_lo_before'], r['ece_ci_hi_before'])} | "
            + (f"{t:.2f}" if finite(t) else "not estimable (one outcome on the tuning split)")
            + f" | {ece(r['ece_after'], r['ece_ci_lo_after'], r['ece_ci_hi_after'])} |"
        )
        if not finite(t):
            continue
        lean = "over-confident" if t > 1.05 else "under-confident" if t < 0.95 else "about right"
        why = {
            "over-confident": ": T > 1 softens probabilities that were too extreme",
            "under-confident": ": T < 1 sharpens probabilities that were too timid",
        }.get(lean, "")
        if min(abs(math.log(t / b)) for b in T_BOUNDS) < 0.01:  # the search's end: no optimum inside it
            lean, why = (
                f"at the end of the searched range {T_BOUNDS[0]:g}–{T_BOUNDS[1]:g}, not a fitted value",
                "",
            )
        bounds = (r["ece_ci_lo_before"], r["ece_ci_hi_before"], r["ece_ci_lo_after"], r["ece_ci_hi_after"])
        if not finite(*bounds):
            helps = "changes (no interval to judge by)"
        elif bounds[3] < bounds[0]:
            helps = "lowers"
        elif bounds[2] > bounds[1]:
            helps = "raises"
        else:
            helps = "does not clearly change"
        first = lowest_bin_share.get(r["kind"])
        dominated = (
            f" The ECE is dominated by the lowest-confidence bin ({first:.0%} of the weight): read the reliability "
            "diagram for the bins that matter."
            if first is not None and first > 0.9
            else ""
        )
        words.append(
            f"- **{name}**: temperature {t:.2f} ({lean} on the tuning split{why}); on the external test it "
            f"{helps} the ECE ({r['ece_before']:#.2g} to {r['ece_after']:#.2g}).{dominated}"
        )
    return [
        "## Calibration",
        "",
        f"Expected calibration error (ECE: 10 equal-width bins; {level:.0%} intervals from resampling the "
        f"{int(table['n_scans'].iloc[0])} {table['test_split'].iloc[0]} scans; `analysis/calibration.csv`, bins in "
        "`analysis/calibration_bins.csv`, reliability diagrams in `figures/calibration.png`) before and after one "
        "temperature fitted by negative log-likelihood on the tuning split. Over-confident probabilities bend a "
        "FROC analysis that thresholds them; a temperature fixes a uniform over- or under-confidence, not a "
        "mis-ranking.",
        "",
        *rows,
        "",
        *words,
        "",
    ]


def _seeds_section(layout: RunLayout) -> list[str]:
    """The section "Training randomness: N seeds": the between-seed spread beside the bootstrap CI
    (:func:`amt_core.pipeline.seeds.report_lines`)."""
    from amt_core.pipeline.seeds import report_lines

    return report_lines(layout)


def _real_anatomy_section(layout: RunLayout) -> list[str]:
    """The section "Real anatomy" of a run whose external test has that subset
    (:func:`amt_core.pipeline.real_anatomy.report_lines`; none otherwise)."""
    from amt_core.pipeline.real_anatomy import report_lines

    return report_lines(layout)


def _limits_section(layout: RunLayout) -> list[str]:
    from amt_core.pipeline.limits import limits_markdown, run_limits

    lines = limits_markdown(run_limits(layout.root, layout.cohort_csv))
    return ["## Limits the data impose", "", "Derived from this run's data:", "", *lines] if lines else []


def _short_paths(hashes: dict, root: Path) -> dict:
    out = {}
    for k, v in hashes.items():
        p = Path(k)
        try:
            k = str(p.resolve().relative_to(root.parent.parent)) if p.is_absolute() else k
        except ValueError:
            pass
        out[k] = v
    return out


def markdown_to_html(markdown: str, title: str = "Study report") -> str:
    """Standalone HTML of the report (mistune, nbconvert's Markdown renderer, with tables)."""
    import mistune

    body = mistune.create_markdown(plugins=["table"])(markdown)
    style = (
        "body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;"
        "line-height:1.45;color:#222}table{border-collapse:collapse;margin:.5em 0 1em;font-size:.9em}"
        "th,td{border:1px solid #ccc;padding:.25em .5em}th{background:#f3f3f3}img{max-width:100%}"
        "code{background:#f5f5f5;padding:0 .2em}"
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{style}</style></head><body>\n{body}</body></html>\n"
    )


def write_report(run_dir: str | Path, cohort_csv: str = "") -> Path:
    """Write ``RUN/report.md`` and ``RUN/report.html``; returns the Markdown path."""
    from amt_core.pipeline.checklist import write_checklist

    layout = RunLayout.of(run_dir, cohort_csv)
    write_checklist(layout.root)  # first: the report points to it
    text = build_report(layout.root, cohort_csv)
    write_text(layout.root / "report.html", markdown_to_html(text, f"Study report: {layout.root.name}"))
    return write_text(layout.report_md, text)
