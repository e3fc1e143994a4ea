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
- :func:`dynamic_components` extracts candidates from a probability map as picai_eval does
  (``report_guided_annotation.extract_lesion_candidates``, "dynamic-v2"): peak, component at
  peak / factor holding it, removed, repeated; :func:`extract_candidates` picks that or the components of
  the thresholded map, as ``EvalConfig.candidates`` says (the evaluation and ``amt predict``'s
  ``{case}_candidates.csv`` both call it).
- :func:`sweep` gives the exact counts behind a confidence-swept FROC curve: candidates are re-matched at
  every distinct confidence level (so a low-confidence candidate can never take a lesion away at a
  threshold where it does not exist, a complaint about picai_eval), as increments per level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from amt_core.evaluation.segmentation import Box, bounding_box, intersect_box, union_box


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
        return self.labels[
            tuple(slice(s.start - o, s.stop - o) for s, o in zip(box, self.offset, strict=True))
        ]


def label_components(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    """``cc3d.connected_components`` of a 3D mask: (labels, number of components). On a line of voxels (two
    axes of length 1) every connectivity is 6, and 6 is used: cc3d 3.x fails on some 26-connected lines."""
    import cc3d

    line = sum(size == 1 for size in mask.shape) >= 2
    return cc3d.connected_components(mask, connectivity=6 if line else connectivity, return_N=True)


def find_components(
    mask: np.ndarray,
    *,
    box: Box | None = None,
    threshold: float | None = None,
    connectivity: int = 26,
    min_voxels: int = 1,
    prob: np.ndarray | None = None,
    confidence: str = "max",
) -> Components:
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
    labels, n = label_components(np.ascontiguousarray(crop), connectivity)
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
            _check_prob(top, float(values.min()))
            conf[k] = top if confidence == "max" else float(values.mean())
    boxes = [tuple(slice(s.start + o, s.stop + o) for s, o in zip(b, offset, strict=True)) for b in local]
    return Components(labels, offset, int(n), ids, counts[ids], boxes, conf)


def _check_prob(top: float, low: float) -> None:
    if top > 1.0 or low < 0.0:
        raise ValueError(
            f"prob holds values in [{low:g}, {top:g}]: probabilities must lie in [0, 1] "
            "(scale a uint8 map by 1/255)"
        )


def dynamic_components(
    prob: np.ndarray,
    *,
    box: Box | None = None,
    factor: float = 2.5,
    max_candidates: int = 10,
    min_confidence: float = 0.01,
    connectivity: int = 26,
    min_voxels: int = 1,
    confidence: str = "max",
) -> Components:
    """Candidates of a probability map by picai_eval's dynamic extraction (its "dynamic-v2").

    Repeat: take the highest remaining probability ``peak`` (stop when it is below ``min_confidence`` or
    ``max_candidates`` are found); among the ``connectivity``-connected components of the remaining map
    ``>= peak / factor`` with at least ``min_voxels`` voxels take the one with the highest maximum (ties:
    the one reached first in C order); remove it from the map; keep it unless it touches an earlier
    candidate (is its ``connectivity`` neighbour; picai_eval: 26). When no component is large enough, every remaining voxel ``> peak / factor`` is
    removed. The candidates never overlap; ``confidence`` is their ``max`` or ``mean`` probability.
    ``picai_eval``'s ``min_voxels_detection=m`` (it drops components of ``<= m`` voxels) is ``min_voxels=m + 1``.
    """
    import cc3d
    from scipy import ndimage

    box = box or tuple(slice(0, n) for n in prob.shape)
    offset = tuple(int(s.start) for s in box)
    work = np.array(prob[box], dtype=np.result_type(prob.dtype, np.float32), order="C")
    if work.size:
        _check_prob(float(work.max()), float(work.min()))
    out = np.zeros(work.shape, np.int32)
    near = ndimage.generate_binary_structure(3, {6: 1, 18: 2, 26: 3}[connectivity])
    conf: list[float] = []
    flat = work.reshape(-1)  # a view: zeroing voxels of ``flat`` zeroes them in ``work``
    last = None  # the labelling of the last step: (t, box, its corner, labels, voxels and box per label)
    while len(conf) < max_candidates and work.size:
        at = int(np.argmax(flat))  # the first peak voxel in C order
        peak = flat[at]
        if peak < min_confidence:
            break
        t = peak / factor
        if last is None or last[0] != t:
            # every voxel >= t lies in their bounding box, so the components (and their C order) found there
            # are those of the whole map; the rest of the step reads only that box (``sub``, at ``corner``)
            sub = bounding_box(work, t)
            labels, n = label_components(work[sub] >= t, connectivity)
            stats = cc3d.statistics(labels)  # voxels and box of each component
            counts = np.asarray(stats["voxel_counts"], np.int64)
            last = (t, sub, np.array([s.start for s in sub]), labels, counts, stats["bounding_boxes"])
        # at the same t as the last step, the map lost only the voxels of the component removed then: the
        # other components are unchanged, so its labelling (that component set to 0) is reused
        _, sub, corner, labels, counts, comp_boxes = last
        n = counts.size - 1
        part = work[sub]  # a view
        lab = labels.reshape(-1)
        at_sub = int(np.ravel_multi_index(tuple(np.unravel_index(at, work.shape) - corner), labels.shape))
        at_peak = (part == peak).reshape(-1)
        if counts[lab[at_sub]] >= min_voxels and np.all(lab[at_peak] == lab[at_sub]):
            chosen, top = lab[at_sub], float(peak)  # the usual case: the peak's own component
        else:  # it is too small, or another component reaches the same peak
            best = np.unique(lab[at_peak])
            best = best[counts[best] >= min_voxels]
            if best.size == 0:  # every component holding the peak is too small: the highest other one
                ids = np.flatnonzero((counts[1:] >= min_voxels) & (counts[1:] > 0)) + 1
                if ids.size == 0:
                    part[part > t] = 0
                    last = None
                    continue
                fg = lab > 0
                tops = np.full(n + 1, -np.inf)
                np.maximum.at(tops, lab[fg], part.reshape(-1)[fg])
                best = ids[tops[ids] == tops[ids].max()]
            else:
                tops = np.full(n + 1, float(peak))
            # picai_eval labels the tied components and takes the one reached first in C order (a box keeps
            # the C order: each one's first voxel is the first in its box, and lies on its box's first x)
            x0 = {b: comp_boxes[b][0].start for b in best.tolist()}
            first, lowest = {}, min(x0.values())
            for b in [b for b in x0 if x0[b] == lowest]:
                crop = labels[comp_boxes[b]] == b
                k = np.unravel_index(int(np.argmax(crop)), crop.shape)
                first[b] = tuple(int(i) + s.start for i, s in zip(k, comp_boxes[b], strict=True))
            chosen, top = min(first, key=first.__getitem__), float(tops[best[0]])
        box = comp_boxes[chosen]
        inside = tuple(i + s.start for i, s in zip(np.nonzero(labels[box] == chosen), box, strict=True))
        labels[inside] = 0  # removed from the map below
        counts[0] += counts[chosen]
        counts[chosen] = 0
        where = tuple(i + c for i, c in zip(inside, corner, strict=True))
        near_box = tuple(
            slice(max(int(i.min()) - 1, 0), min(int(i.max()) + 2, size))
            for i, size in zip(where, work.shape, strict=True)
        )
        touches = False
        if conf:  # the component within near_box, dilated, meets an earlier candidate?
            comp = np.zeros(tuple(s.stop - s.start for s in near_box), bool)
            comp[tuple(i - s.start for i, s in zip(where, near_box, strict=True))] = True
            touches = bool((ndimage.binary_dilation(comp, near) & (out[near_box] > 0)).any())
        if not touches:
            conf.append(top if confidence == "max" else float(work[where].mean()))
            out[where] = len(conf)
        work[where] = 0
    n = len(conf)
    if n == 0:
        return Components(out, offset, 0, np.zeros(0, np.int64), np.zeros(0, np.int64), [], np.zeros(0))
    stats = cc3d.statistics(out)
    ids = np.arange(1, n + 1)
    boxes = [
        tuple(slice(s.start + o, s.stop + o) for s, o in zip(stats["bounding_boxes"][i], offset, strict=True))
        for i in ids
    ]
    return Components(
        out, offset, n, ids, np.asarray(stats["voxel_counts"], np.int64)[ids], boxes, np.asarray(conf)
    )


def extract_candidates(prob: np.ndarray, config) -> Components:
    """The candidates of a probability map under an :class:`~amt_core.evaluation.config.EvalConfig`
    (``candidates``: "dynamic", in extraction order, i.e. by descending peak; or "threshold")."""
    from amt_core.evaluation.segmentation import bounding_box

    if config.candidates == "threshold":
        box = bounding_box(prob, config.threshold)
        if box is None:
            return _empty()
        return find_components(
            prob,
            box=box,
            threshold=config.threshold,
            connectivity=config.connectivity,
            min_voxels=config.min_candidate_voxels,
            prob=prob,
            confidence=config.confidence,
        )
    # no voxel below min_confidence / factor can join a candidate
    box = bounding_box(prob, config.min_confidence / config.dynamic_factor)
    if box is None:
        return _empty()
    return dynamic_components(
        prob,
        box=box,
        factor=config.dynamic_factor,
        max_candidates=config.max_candidates,
        min_confidence=config.min_confidence,
        connectivity=config.connectivity,
        min_voxels=config.min_candidate_voxels,
        confidence=config.confidence,
    )


def _empty() -> Components:
    return Components(
        np.zeros((0, 0, 0), np.uint8),
        (0, 0, 0),
        0,
        np.zeros(0, np.int64),
        np.zeros(0, np.int64),
        [],
        np.zeros(0),
    )


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


def pair_overlap(
    inter: np.ndarray, size_a: np.ndarray, size_b: np.ndarray, metric: str = "iou"
) -> np.ndarray:
    """IoU or Dice of every pair from intersections and component sizes (float64)."""
    sums = size_a[:, None].astype(np.float64) + size_b[None, :]
    if metric == "dice":
        return 2.0 * inter / sums
    return inter / (sums - inter)


def is_hit(values: np.ndarray, threshold: float, criterion: str = ">=") -> np.ndarray:
    """Hit test of overlap values against a threshold (``>=`` or ``>``)."""
    return values >= threshold if criterion == ">=" else values > threshold


def assign(
    overlap: np.ndarray, hits: np.ndarray, confidence: np.ndarray, method: str = "hungarian"
) -> np.ndarray:
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


def count(
    assigned: np.ndarray, hits: np.ndarray, n_lesions: int, extra_hits: str = "ignore"
) -> tuple[int, int, int]:
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


def sweep(
    overlap: np.ndarray,
    confidence: np.ndarray,
    threshold: float,
    *,
    criterion: str = ">=",
    method: str = "hungarian",
    extra_hits: str = "ignore",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
