"""Binary masks: thresholding, the main object's connected components, bounding boxes."""

from __future__ import annotations

import numpy as np

Box = tuple[int, int, int, int]  # left, top, right, bottom; right and bottom exclusive (PIL's crop box)


def binarize(saliency: np.ndarray, threshold: float) -> np.ndarray:
    """Pixels whose saliency is above `threshold`, as a bool mask."""
    return np.asarray(saliency) > threshold


def select_main_object(mask: np.ndarray, attach_fraction: float, attach_distance: float) -> np.ndarray:
    """The largest connected component, plus the components that belong to the same object.

    A component is kept when it is at least `attach_fraction` of the largest one's area and lies
    within `attach_distance` x sqrt(largest area) pixels of it: a part split off by an occluding
    hand stays, a neighbour further along the shelf or a speck of background goes.
    """
    import cv2

    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 2:  # background plus at most one component
        return labels > 0
    areas = stats[1:, cv2.CC_STAT_AREA]
    main = int(np.argmax(areas)) + 1
    keep = np.zeros(count, dtype=bool)
    keep[main] = True
    large = np.flatnonzero(areas >= attach_fraction * areas[main - 1]) + 1
    candidates = [int(label) for label in large if label != main]
    if candidates:
        reach = _dilate(labels == main, attach_distance * np.sqrt(areas[main - 1]))
        touched = np.unique(labels[reach])
        keep[[label for label in candidates if label in touched]] = True
    return keep[labels]


def mask_box(mask: np.ndarray) -> Box | None:
    """The tight box around the True pixels, or None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    """Pixels within `radius` (at least 1) of the mask; a distance transform, fast for any radius."""
    import cv2

    distance = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_5)
    return distance <= max(radius, 1.5)
