"""Every convention of the evaluation, in one frozen, recorded object.

The field's tools disagree on almost every detail (see ``shared/STUDY.md``): how an empty scan scores,
what counts as a hit, how candidates are assigned to lesions, whether a second candidate on a lesion is
a false positive. :class:`EvalConfig` names each choice, validates it, and is written into every results
folder (``summary.json``), so a number never travels without the rules that made it.

Defaults, and why:

- ``empty_both="one"``: a scan with an empty reference *and* an empty prediction scores Dice = IoU =
  precision = recall = 1 (Metrics Reloaded); ``"nan"`` leaves them out of the means (MONAI, nnU-Net).
- ``empty_one="zero"``: when exactly one of the two masks is empty, Dice and IoU are 0 by their formula;
  the ratio that is 0/0 (precision with no prediction, recall with no reference) is 0 too; ``"nan"``
  leaves it out. HD95 and the mean surface distance are NaN whenever a mask is empty (no surface).
  Every scan of the study has a tumour, so these rules only touch missed scans and test data.
- Candidates: 26-connected components of ``probability >= threshold`` (0.5), confidence = the maximum
  probability inside the component (picai_eval, LUNA16, MONAI), components of fewer than
  ``min_candidate_voxels`` voxels dropped.
- Matching by IoU, hit when ``IoU >= t`` (panoptica, picai_eval), one-to-one Hungarian assignment that
  maximises the number of hits and then the summed overlap, a second hit on a matched lesion ignored
  (LUNA16, MELA, picai_eval).
- FROC reading A at IoU 0.1/0.3/0.5 with the LUNA16 FP/scan points; reading B over IoU 0.05 ... 0.95 at
  the operating threshold (by default the candidate threshold: every candidate counts).
- 10,000 seeded bootstrap resamples of scans, 95 % percentile intervals.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from amt_core import registry

CONFIDENCES: tuple[str, ...] = ("max", "mean")
MATCH_METRICS: tuple[str, ...] = ("iou", "dice")
HIT_CRITERIA: tuple[str, ...] = (">=", ">")
ASSIGNMENTS: tuple[str, ...] = ("hungarian", "greedy", "best")
EXTRA_HITS: tuple[str, ...] = ("ignore", "fp")
EMPTY_BOTH: dict[str, float] = {"one": 1.0, "zero": 0.0, "nan": math.nan}
EMPTY_ONE: dict[str, float] = {"zero": 0.0, "nan": math.nan}
CI_METHODS: tuple[str, ...] = ("percentile", "bca")


@dataclass(frozen=True)
class EvalConfig:
    """The conventions of one evaluation run (all keyword arguments; see the module docstring)."""

    #: probability at or above which a voxel belongs to a candidate (and to the mask, when only a
    #: probability map is given)
    threshold: float = 0.5
    #: reading B's confidence cut; None = ``threshold`` (every candidate counts)
    operating_threshold: float | None = None
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
    #: IoU threshold of the headline numbers (per-scan tp/fp/fn, lesion ``hit``)
    headline_iou: float = 0.5
    #: both masks empty: "one", "zero" or "nan" for Dice, IoU, precision and recall
    empty_both: str = "one"
    #: exactly one mask empty: the undefined precision or recall is "zero" or "nan"
    empty_one: str = "zero"
    #: percentile of the symmetric surface distance (95 -> HD95)
    hd_percentile: float = 95.0
    #: bootstrap resamples (0 = no confidence intervals)
    n_boot: int = 10_000
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
            "confidence": CONFIDENCES, "match_metric": MATCH_METRICS, "hit_criterion": HIT_CRITERIA,
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
        if self.operating_threshold is not None and self.operating_threshold < self.threshold:
            problems.append(
                f"operating_threshold={self.operating_threshold} is below threshold={self.threshold}: "
                "no candidate exists below the candidate threshold"
            )
        for name in ("froc_iou_thresholds", "iou_sweep"):
            if not all(0.0 < v <= 1.0 for v in getattr(self, name)):
                problems.append(f"{name}={getattr(self, name)} (overlap thresholds in (0, 1])")
        if not 0.0 < self.headline_iou <= 1.0:
            problems.append(f"headline_iou={self.headline_iou} (in (0, 1])")
        if not self.fp_points or not all(v > 0 for v in self.fp_points):
            problems.append(f"fp_points={self.fp_points} (positive FP/scan values)")
        if self.min_candidate_voxels < 1 or self.min_lesion_voxels < 1:
            problems.append("min_candidate_voxels and min_lesion_voxels must be >= 1")
        if not 0.0 < self.hd_percentile <= 100.0:
            problems.append(f"hd_percentile={self.hd_percentile} (in (0, 100])")
        if self.n_boot < 0:
            problems.append(f"n_boot={self.n_boot} (0 or more)")
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
    def match_thresholds(self) -> tuple[float, ...]:
        """Every overlap threshold the matching runs at (sorted union of both readings and the headline)."""
        return tuple(sorted(set(self.froc_iou_thresholds) | set(self.iou_sweep) | {self.headline_iou}))

    # --- JSON round trip --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        out = asdict(self)
        for name in ("froc_iou_thresholds", "iou_sweep", "fp_points"):
            out[name] = list(out[name])
        return out

    @classmethod
    def from_dict(cls, data: dict) -> EvalConfig:
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
            "candidates": (
                f"{self.connectivity}-connected components of probability >= {self.threshold}, "
                f"at least {self.min_candidate_voxels} voxel(s), confidence = {self.confidence} probability "
                "inside the component (1 when only a mask is given)"
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
            "froc_iou": f"reading B: per IoU threshold, candidates with confidence >= {op}",
            "bootstrap": (
                f"{self.n_boot} resamples of {'institutions' if self.cluster_bootstrap else 'scans'}, "
                f"seed {self.seed}, {self.ci_method} {self.ci_level:.0%} intervals"
            ),
        }
