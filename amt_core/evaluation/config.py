"""Every convention of the evaluation, in one frozen, recorded object.

The field's tools (MONAI, nnU-Net, picai_eval, panoptica, LUNA16, Metrics Reloaded) disagree on almost
every detail: how an empty scan scores, what counts as a hit, how candidates are assigned to lesions,
whether a second candidate on a lesion is a false positive. :class:`EvalConfig` names each choice, validates it, and is written into every results
folder (``summary.json``), so a number never travels without the rules that made it.

Defaults, and why:

- ``empty_both="one"``: a scan with an empty reference *and* an empty prediction scores Dice = IoU =
  precision = recall = 1 (Metrics Reloaded); ``"nan"`` leaves them out of the means (MONAI, nnU-Net).
- ``empty_one="zero"``: when exactly one of the two masks is empty, Dice and IoU are 0 by their formula;
  the ratio that is 0/0 (precision with no prediction, recall with no reference) is 0 too; ``"nan"``
  leaves it out. HD95 and the mean surface distance are NaN whenever a mask is empty (no surface).
  Every scan of the study has a tumour, so these rules only touch missed scans and test data.
- ``candidates="dynamic"``: candidates are extracted from the probability map as picai_eval does
  (``report_guided_annotation.extract_lesion_candidates``, threshold "dynamic-v2"): take the peak of the
  map, keep the connected component of ``probability >= peak / dynamic_factor`` that holds it, remove it
  from the map, repeat until ``max_candidates`` are found or the peak drops below ``min_confidence``; a
  component touching an earlier candidate is removed but not kept. So candidates reach far below the
  mask's threshold and the confidence-swept FROC (reading A) is a curve down to low confidences, while
  the mask (``probability >= threshold``, 0.5) still gives the segmentation metrics.
  ``candidates="threshold"``: 26-connected components of ``probability >= threshold`` instead.
  Either way confidence = the maximum probability inside the candidate (picai_eval, LUNA16, MONAI), and
  candidates of fewer than ``min_candidate_voxels`` voxels are dropped.
- Reading B (the operating point, the study's "sensitivity 0.87 at 0.61 FP/scan at IoU >= 0.5") uses the
  *same* candidates, those with confidence ``>= operating_point`` (default: ``threshold``, 0.5): the
  operating point is then a point of reading A's curve. With dynamic candidates a candidate's extent is
  its component at ``peak / dynamic_factor`` (e.g. >= 0.4 for a peak of 1), slightly larger than its
  part of the 0.5 mask; ``candidates="threshold"`` scores the mask's own components instead.
- Matching by IoU, hit when ``IoU >= t`` (panoptica, picai_eval), one-to-one Hungarian assignment that
  maximises the number of hits and then the summed overlap, a second hit on a matched lesion ignored
  (LUNA16, MELA, picai_eval).
- FROC reading A at IoU 0.1/0.3/0.5 with the LUNA16 FP/scan points; reading B over IoU 0.05 ... 0.95 at
  the operating threshold (by default the mask threshold, 0.5; with dynamic candidates the ones below it
  are left out of reading B and kept in reading A).
- 10,000 seeded bootstrap resamples of scans, 95 % percentile intervals.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from amt_core import registry

CANDIDATES: tuple[str, ...] = ("dynamic", "threshold")
CONFIDENCES: tuple[str, ...] = ("max", "mean")
MATCH_METRICS: tuple[str, ...] = ("iou", "dice")
HIT_CRITERIA: tuple[str, ...] = (">=", ">")
ASSIGNMENTS: tuple[str, ...] = ("hungarian", "greedy", "best")
EXTRA_HITS: tuple[str, ...] = ("ignore", "fp")
EMPTY_BOTH: dict[str, float] = {"one": 1.0, "zero": 0.0, "nan": math.nan}
EMPTY_ONE: dict[str, float] = {"zero": 0.0, "nan": math.nan}
CI_METHODS: tuple[str, ...] = registry.CI_METHODS


@dataclass(frozen=True)
class EvalConfig:
    """The conventions of one evaluation run (all keyword arguments; see the module docstring)."""

    #: probability at or above which a voxel belongs to a candidate (and to the mask, when only a
    #: probability map is given)
    threshold: float = 0.5
    #: reading B's confidence cut; None = ``threshold``
    operating_threshold: float | None = None
    #: candidate extraction: "dynamic" (picai_eval's peak / dynamic_factor rule) or "threshold"
    #: (components of probability >= threshold)
    candidates: str = "dynamic"
    #: dynamic extraction: a candidate is the component of probability >= its peak / dynamic_factor
    dynamic_factor: float = 2.5
    #: dynamic extraction: at most this many candidates per scan
    max_candidates: int = 10
    #: dynamic extraction: stop when the highest remaining probability is below this
    min_confidence: float = 0.01
    #: 6, 18 or 26 (3D neighbourhoods) for candidates and reference lesions
    connectivity: int = 26
    #: a candidate's confidence: "max" or "mean" probability inside the component
    confidence: str = "max"
    #: candidates with fewer voxels are dropped (detection only; the mask's metrics keep them)
    min_candidate_voxels: int = 1
    #: reference components with fewer voxels are not lesions (detection only)
    min_lesion_voxels: int = 1
    #: overlap a hit is judged by: "iou" or "dice"
    match_metric: str = "iou"
    #: ">=" (panoptica, picai_eval) or ">" (MELA, RibFrac)
    hit_criterion: str = ">="
    #: "hungarian" (one-to-one, most hits then most overlap), "greedy" (by confidence, each to its
    #: best free lesion), "best" (each candidate to its best-overlap lesion)
    assignment: str = "hungarian"
    #: a hit on a lesion that is already matched: "ignore" (neither TP nor FP) or "fp"
    extra_hits: str = "ignore"
    #: reading A: one confidence-swept FROC curve per IoU threshold
    froc_iou_thresholds: tuple[float, ...] = registry.FROC_IOU_THRESHOLDS
    #: reading B: IoU thresholds swept at the operating threshold
    iou_sweep: tuple[float, ...] = registry.IOU_SWEEP
    #: FP/scan points read off each curve; their mean is the CPM
    fp_points: tuple[float, ...] = registry.FP_POINTS
    #: the one overlap a candidate needs to count as a hit: the headline numbers (per-scan tp/fp/fn,
    #: lesion ``hit``, reading B's operating point); the readings' sweeps are the plural fields above
    operating_iou: float = 0.5
    #: both masks empty: "one", "zero" or "nan" for Dice, IoU, precision and recall
    empty_both: str = "one"
    #: exactly one mask empty: the undefined precision or recall is "zero" or "nan"
    empty_one: str = "zero"
    #: percentile of the symmetric surface distance (95 -> HD95)
    hd_percentile: float = 95.0
    #: bootstrap resamples (0 = no confidence intervals)
    n_bootstrap: int = 10_000
    ci_level: float = 0.95
    ci_method: str = "percentile"
    #: resample institutions (with all their scans) instead of scans
    cluster_bootstrap: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("froc_iou_thresholds", "iou_sweep", "fp_points"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        problems = []
        choices = {
            "candidates": CANDIDATES, "confidence": CONFIDENCES, "match_metric": MATCH_METRICS, "hit_criterion": HIT_CRITERIA,
            "assignment": ASSIGNMENTS, "extra_hits": EXTRA_HITS, "empty_both": tuple(EMPTY_BOTH),
            "empty_one": tuple(EMPTY_ONE), "ci_method": CI_METHODS,
        }  # fmt: skip
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                problems.append(f"{name}={getattr(self, name)!r} (choose one of {list(allowed)})")
        if self.connectivity not in (6, 18, 26):
            problems.append(f"connectivity={self.connectivity} (choose 6, 18 or 26)")
        if not 0.0 <= self.threshold <= 1.0:
            problems.append(f"threshold={self.threshold} (a probability in [0, 1])")
        if not self.dynamic_factor > 1.0:
            problems.append(f"dynamic_factor={self.dynamic_factor} (above 1: a candidate holds its peak)")
        if self.max_candidates < 1:
            problems.append(f"max_candidates={self.max_candidates} (1 or more)")
        if not 0.0 < self.min_confidence <= 1.0:
            problems.append(f"min_confidence={self.min_confidence} (a probability in (0, 1])")
        if (
            self.candidates == "threshold"
            and self.operating_threshold is not None
            and self.operating_threshold < self.threshold
        ):
            problems.append(
                f"operating_threshold={self.operating_threshold} is below threshold={self.threshold}: "
                "no candidate exists below the candidate threshold"
            )
        for name in ("froc_iou_thresholds", "iou_sweep"):
            if not all(0.0 < v <= 1.0 for v in getattr(self, name)):
                problems.append(f"{name}={getattr(self, name)} (overlap thresholds in (0, 1])")
        if not 0.0 < self.operating_iou <= 1.0:
            problems.append(f"operating_iou={self.operating_iou} (in (0, 1])")
        if not self.fp_points or not all(v > 0 for v in self.fp_points):
            problems.append(f"fp_points={self.fp_points} (positive FP/scan values)")
        if self.min_candidate_voxels < 1 or self.min_lesion_voxels < 1:
            problems.append("min_candidate_voxels and min_lesion_voxels must be >= 1")
        if not 0.0 < self.hd_percentile <= 100.0:
            problems.append(f"hd_percentile={self.hd_percentile} (in (0, 100])")
        if self.n_bootstrap < 0:
            problems.append(f"n_bootstrap={self.n_bootstrap} (0 or more)")
        if not 0.0 < self.ci_level < 1.0:
            problems.append(f"ci_level={self.ci_level} (in (0, 1))")
        if problems:
            raise ValueError("invalid evaluation config: " + "; ".join(problems))

    # --- derived values --------------------------------------------------------------------------------
    @property
    def operating_point(self) -> float:
        """The confidence cut of reading B and of the headline counts."""
        return self.threshold if self.operating_threshold is None else self.operating_threshold

    @property
    def reading_b_thresholds(self) -> tuple[float, ...]:
        """Reading B's IoU thresholds: ``iou_sweep`` with ``operating_iou`` always among them, so the
        headline operating point exists whatever sweep is configured."""
        return tuple(sorted(set(self.iou_sweep) | {self.operating_iou}))

    def labels(self) -> dict[str, str]:
        """The words that name this configuration's numbers in tables, captions and the report:
        ``ci`` ("95%"), ``unit`` ("scan" or "institution": what the bootstrap resamples) and ``hit``
        ("IoU ≥ 0.5": the operating overlap criterion)."""
        level = f"{100 * self.ci_level:.10g}%"
        crit = "IoU" if self.match_metric == "iou" else "Dice"
        sign = "≥" if self.hit_criterion == ">=" else ">"
        unit = "institution" if self.cluster_bootstrap else "scan"
        return {"ci": level, "unit": unit, "hit": f"{crit} {sign} {self.operating_iou:g}"}

    @property
    def match_thresholds(self) -> tuple[float, ...]:
        """Every overlap threshold the matching runs at (sorted union of both readings and the headline)."""
        return tuple(sorted(set(self.froc_iou_thresholds) | set(self.iou_sweep) | {self.operating_iou}))

    # --- JSON round trip --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        out = asdict(self)
        for name in ("froc_iou_thresholds", "iou_sweep", "fp_points"):
            out[name] = list(out[name])
        return out

    @classmethod
    def from_dict(cls, data: dict) -> EvalConfig:
        """An ``EvalConfig`` from its :meth:`to_dict` form; an unknown key, or a name that earlier versions
        used (``registry.RENAMED``: ``n_boot``, ``headline_iou``, ...), is a ``ValueError`` naming it."""
        renamed = [k for k in data if k in registry.RENAMED]
        if renamed:
            raise ValueError(
                "renamed evaluation config key(s): "
                + "; ".join(f"{k!r} is now {registry.RENAMED[k]!r}" for k in renamed)
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown evaluation config keys {unknown}; known keys: {sorted(known)}")
        return cls(**data)

    def describe(self) -> dict[str, str]:
        """Plain-words statement of each convention (written into summary.json)."""
        op = self.operating_point
        return {
            "empty_scans": (
                f"both masks empty -> Dice/IoU/precision/recall = {self.empty_both}; exactly one empty -> "
                f"Dice = IoU = 0 and the undefined precision or recall = {self.empty_one}; HD95 and mean "
                "surface distance NaN when a mask is empty; NaN values are left out of means"
            ),
            "aggregation": "means over scans of per-scan values (mean IoU is not derived from mean Dice)",
            "candidates": self._candidates_text()
            + (
                f"; at least {self.min_candidate_voxels} voxel(s), confidence = {self.confidence} probability "
                "inside the candidate; with only a mask, its components with confidence 1"
            ),
            "lesions": f"{self.connectivity}-connected components of the reference, at least {self.min_lesion_voxels} voxel(s)",
            "hit": f"{self.match_metric} {self.hit_criterion} threshold",
            "assignment": self.assignment,
            "extra_hits": f"a further hit on an already matched lesion counts as: {self.extra_hits}",
            "froc_confidence": (
                "reading A: per IoU threshold, candidates above each confidence threshold are matched "
                "again (exact re-matching at every threshold); sensitivity = matched lesions / lesions, "
                "FP/scan = false positives / scans; sensitivity at FP points interpolated linearly along "
                "the curve (numpy.interp, as MONAI's compute_froc_score); CPM = their mean"
            ),
            "froc_iou": (
                f"reading B: per IoU threshold, the same candidates with confidence >= {op} (a point of "
                "reading A's curve); the headline per-scan tp/fp/fn and lesion hits use it too"
            ),
            "bootstrap": (
                f"{self.n_bootstrap} resamples of {'institutions' if self.cluster_bootstrap else 'scans'}, "
                f"seed {self.seed}, {self.ci_method} {self.ci_level:.0%} intervals; FROC bands: the same "
                "resamples, each curve rebuilt and read at the FP/scan points; reading B's sensitivities also "
                "carry Wilson intervals"
            ),
        }

    def _candidates_text(self) -> str:
        if self.candidates == "threshold":
            return f"{self.connectivity}-connected components of probability >= {self.threshold}"
        return (
            f"dynamic extraction (picai_eval's extract_lesion_candidates, 'dynamic-v2'): repeatedly the "
            f"{self.connectivity}-connected component of probability >= peak / {self.dynamic_factor:g} "
            f"holding the highest remaining probability, removed from the map; at most "
            f"{self.max_candidates} per scan, stopping below a peak of {self.min_confidence:g}; a component "
            f"touching an earlier candidate is dropped; the mask (probability >= {self.threshold:g}) is "
            "used for the segmentation metrics only"
        )

    def fingerprint(self) -> dict:
        """The evaluation's fingerprint in the Metrics Reloaded manner: each decision that changes a number,
        by name (written into summary.json and the report)."""
        crit = "IoU" if self.match_metric == "iou" else "Dice"
        return {
            "localisation_criterion": f"mask {crit} {self.hit_criterion} threshold, between a candidate and a "
            "reference lesion (connected component)",
            "assignment_strategy": {
                "hungarian": "one-to-one Hungarian: most hits, then most summed overlap",
                "greedy": "greedy by descending confidence, each to its best free lesion",
                "best": "each candidate to its best-overlap lesion",
            }[self.assignment],
            "extra_hits": "ignored" if self.extra_hits == "ignore" else "false positive",
            "thresholds": {
                "mask_probability": self.threshold,
                "operating_confidence": self.operating_point,
                "operating_overlap": self.operating_iou,
                "reading_a_overlaps": list(self.froc_iou_thresholds),
                "reading_b_overlaps": list(self.reading_b_thresholds),
                "fp_per_scan_points": list(self.fp_points),
            },
            "aggregation": "per-scan values averaged over scans; lesion sensitivity pooled over lesions, "
            "false positives per scan pooled over scans; CPM = mean sensitivity at the "
            "FP/scan points",
            "empty_scan_policy": {
                "both_empty": self.empty_both,
                "one_empty": self.empty_one,
                "surface_distances": "NaN when a mask is empty",
            },
            "space": "native grid of the reference label (predictions must lie on it; nothing is resampled); "
            "voxel spacing in mm from its affine for volumes and surface distances",
            "connectivity": f"{self.connectivity}-connected (3D)",
            "candidate_extraction": self._candidates_text(),
            "candidate_confidence": f"{self.confidence} probability inside the candidate",
            "min_voxels": {"candidate": self.min_candidate_voxels, "lesion": self.min_lesion_voxels},
            "uncertainty": (
                f"{self.n_bootstrap} bootstrap resamples of "
                f"{'institutions' if self.cluster_bootstrap else 'scans'}, seed {self.seed}, "
                f"{self.ci_method} {self.ci_level:.0%} intervals"
            ),
        }
