"""Lesion-wise detection: candidates, reference lesions, their overlaps, and matching.

- Components come from ``cc3d`` (26-connectivity by default) with one ``cc3d.statistics`` pass for voxel
  counts and bounding boxes; a candidate's confidence is read inside its own bounding box, never by a
  per-component pass over the volume.
- All pairwise intersections of two labelings come from one ``bincount`` over the voxels where both are
  non-zero, inside the intersection of their boxes; IoU and Dice follow from the component sizes.
- Matching (:func:`assign`) at one overlap threshold: ``hungarian`` (one-to-one, most hits first, then
  most summed overlap; ``scipy.optimize.linear_sum_assignment``), ``greedy`` (by descending confidence,
  each candidate takes its best still-free hit lesion) or ``best`` (each candidate is assigned its
  best-overlap lesion; a lesion is detected once). A hitting candidate left without a lesion of its own
  is an *extra hit*: ignored or a false positive (``EvalConfig.extra_hits``).
- :func:`sweep` gives the exact counts behind a confidence-swept FROC curve: candidates are re-matched at
  every distinct confidence level (so a low-confidence candidate can never take a lesion away at a
  threshold where it does not exist, a complaint about picai_eval), as increments per level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from amt_core.evaluation.segmentation import Box, intersect_box, union_box


@dataclass(frozen=True)
class Components:
    """Connected components of a mask, after the size filter.

    ``labels`` is cc3d's label image of the mask's box starting at voxel ``offset`` of the volume
    (0 = background; dropped components keep their label); ``ids`` the kept labels; ``voxels``,
    ``boxes`` (volume coordinates) and ``confidence`` follow ``ids``.
    """

    labels: np.ndarray
    offset: tuple[int, int, int]
    n_labels: int
    ids: np.ndarray
    voxels: np.ndarray
    boxes: list[Box]
    confidence: np.ndarray

    def __len__(self) -> int:
        return int(self.ids.size)

    def local(self, box: Box) -> np.ndarray:
        """``labels`` inside a box given in volume coordinates (the box must lie inside the labels)."""
        return self.labels[tuple(slice(s.start - o, s.stop - o) for s, o in zip(box, self.offset, strict=True))]


def find_components(mask: np.ndarray, *, box: Box | None = None, threshold: float | None = None,
                    connectivity: int = 26, min_voxels: int = 1, prob: np.ndarray | None = None,
                    confidence: str = "max") -> Components:
    """Connected components of a 3D mask, with a confidence each.

    Foreground: ``mask != 0``, or ``mask >= threshold`` when a threshold is given (``mask`` is then a
    probability map). ``box`` (slices in volume coordinates) restricts the work to a box known to hold
    every foreground voxel. ``prob`` (same shape, probabilities in [0, 1]) gives each component the
    ``max`` or ``mean`` probability of its voxels, read inside the component's own bounding box; without
    it every confidence is 1 (a binary-mask model).
    """
    import cc3d

    box = box or tuple(slice(0, n) for n in mask.shape)
    offset = tuple(int(s.start) for s in box)
    crop = mask[box]
    if threshold is not None:
        crop = crop >= threshold
    elif crop.dtype != bool:
        crop = crop != 0
    labels, n = cc3d.connected_components(np.ascontiguousarray(crop), connectivity=connectivity, return_N=True)
    if n == 0:
        return Components(labels, offset, 0, np.zeros(0, np.int64), np.zeros(0, np.int64), [], np.zeros(0))
    stats = cc3d.statistics(labels)
    counts = np.asarray(stats["voxel_counts"], dtype=np.int64)
    ids = np.flatnonzero(counts[1:] >= min_voxels) + 1
    local = [tuple(stats["bounding_boxes"][i]) for i in ids]
    conf = np.ones(ids.size)
    if prob is not None:
        p = prob[box]
        for k, (i, b) in enumerate(zip(ids, local, strict=True)):
            values = p[b][labels[b] == i]
            top = float(values.max())
            if top > 1.0 or float(values.min()) < 0.0:
                raise ValueError(f"prob holds values up to {top:g}: probabilities must lie in [0, 1] "
                                 "(scale a uint8 map by 1/255)")
            conf[k] = top if confidence == "max" else float(values.mean())
    boxes = [tuple(slice(s.start + o, s.stop + o) for s, o in zip(b, offset, strict=True)) for b in local]
    return Components(labels, offset, int(n), ids, counts[ids], boxes, conf)


def overlap_matrix(a: Components, b: Components) -> np.ndarray:
    """Voxel intersections (int64, ``len(a)`` x ``len(b)``) between every pair of kept components:
    one ``bincount`` over the voxels where both labelings are non-zero, inside their common box."""
    out = np.zeros((len(a), len(b)), dtype=np.int64)
    box = intersect_box(union_box(*a.boxes), union_box(*b.boxes))
    if box is None:
        return out
    la, lb = a.local(box), b.local(box)
    both = (la != 0) & (lb != 0)
    if not both.any():
        return out
    n_b = b.n_labels + 1
    pair = la[both].astype(np.int64) * n_b + lb[both].astype(np.int64)
    full = np.bincount(pair, minlength=(a.n_labels + 1) * n_b).reshape(-1, n_b)
    return full[np.ix_(a.ids, b.ids)]


def pair_overlap(inter: np.ndarray, size_a: np.ndarray, size_b: np.ndarray, metric: str = "iou") -> np.ndarray:
    """IoU or Dice of every pair from intersections and component sizes (float64)."""
    sums = size_a[:, None].astype(np.float64) + size_b[None, :]
    if metric == "dice":
        return 2.0 * inter / sums
    return inter / (sums - inter)


def is_hit(values: np.ndarray, threshold: float, criterion: str = ">=") -> np.ndarray:
    """Hit test of overlap values against a threshold (``>=`` or ``>``)."""
    return values >= threshold if criterion == ">=" else values > threshold


def assign(overlap: np.ndarray, hits: np.ndarray, confidence: np.ndarray, method: str = "hungarian") -> np.ndarray:
    """Lesion index assigned to each candidate (-1 for none); at most one candidate per lesion.

    ``overlap`` and ``hits`` are (candidates x lesions); only hit pairs can be assigned. Candidates are
    taken in order of descending confidence (ties by index) by ``greedy`` and ``best``.
    """
    n_c, n_l = hits.shape
    out = np.full(n_c, -1, dtype=np.int64)
    if n_c == 0 or n_l == 0 or not hits.any():
        return out
    if method == "hungarian":
        from scipy.optimize import linear_sum_assignment

        rows = np.flatnonzero(hits.any(axis=1))
        cols = np.flatnonzero(hits.any(axis=0))
        h = hits[np.ix_(rows, cols)]
        # a hit is worth more than any sum of overlaps: most hits first, then most overlap
        weight = np.where(h, (min(h.shape) + 1.0) + overlap[np.ix_(rows, cols)], 0.0)
        r, c = linear_sum_assignment(weight, maximize=True)
        ok = h[r, c]
        out[rows[r[ok]]] = cols[c[ok]]
        return out
    taken = np.zeros(n_l, dtype=bool)
    for i in np.argsort(-confidence, kind="stable"):
        if not hits[i].any():
            continue
        if method == "best":
            j = int(np.argmax(np.where(hits[i], overlap[i], -np.inf)))
        else:  # greedy: best lesion still free
            free = hits[i] & ~taken
            if not free.any():
                continue
            j = int(np.argmax(np.where(free, overlap[i], -np.inf)))
        if not taken[j]:
            taken[j] = True
            out[i] = j
    return out


def count(assigned: np.ndarray, hits: np.ndarray, n_lesions: int, extra_hits: str = "ignore") -> tuple[int, int, int]:
    """(tp, fp, fn) of one matching: tp = matched lesions, fp = candidates hitting nothing (plus the
    unmatched hitting ones when ``extra_hits == "fp"``)."""
    tp = int(np.count_nonzero(assigned >= 0))
    hitting = hits.any(axis=1) if hits.size else np.zeros(assigned.size, dtype=bool)
    fp = int(np.count_nonzero(~hitting))
    if extra_hits == "fp":
        fp += int(np.count_nonzero(hitting & (assigned < 0)))
    return tp, fp, n_lesions - tp


def status(assigned: np.ndarray, hits: np.ndarray) -> np.ndarray:
    """Per-candidate status: "tp" (assigned), "extra" (hits an already matched lesion) or "fp"."""
    hitting = hits.any(axis=1) if hits.size else np.zeros(assigned.size, dtype=bool)
    return np.where(assigned >= 0, "tp", np.where(hitting, "extra", "fp"))


def sweep(overlap: np.ndarray, confidence: np.ndarray, threshold: float, *, criterion: str = ">=",
          method: str = "hungarian", extra_hits: str = "ignore") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact FROC increments of one scan at one overlap threshold.

    Returns ``(levels, d_tp, d_fp)``: the distinct candidate confidences in descending order and, for
    each, how many matched lesions and false positives the scan gains when the confidence threshold
    drops to that level (candidates re-matched at every level). Levels that change nothing are omitted.
    Summing the increments of levels >= t gives the scan's (tp, fp) at threshold t.
    """
    n_c, n_l = overlap.shape
    if n_c == 0:
        return np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64)
    hits = is_hit(overlap, threshold, criterion)
    hitting = hits.any(axis=1)
    levels, inverse = np.unique(-confidence, return_inverse=True)
    levels = -levels
    new = np.bincount(inverse.reshape(-1), minlength=levels.size)
    new_hitting = np.bincount(inverse.reshape(-1), weights=hitting, minlength=levels.size).astype(np.int64)
    d_tp = np.zeros(levels.size, np.int64)
    d_fp = new - new_hitting
    tp = 0
    for k in np.flatnonzero(new_hitting):
        active = np.flatnonzero(inverse.reshape(-1) <= k)
        active = active[hitting[active]]
        got = assign(overlap[active], hits[active], confidence[active], method)
        now = int(np.count_nonzero(got >= 0))
        d_tp[k] = now - tp
        if extra_hits == "fp":
            d_fp[k] += new_hitting[k] - d_tp[k]
        tp = now
    keep = (d_tp != 0) | (d_fp != 0)
    return levels[keep], d_tp[keep], d_fp[keep]
