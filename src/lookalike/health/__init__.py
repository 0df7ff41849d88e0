"""Catalogue health: near-duplicates, images filed under the wrong label, and outliers.

Everything works on an open `Engine` through its read API and its vector store's own search (one
batched k-nearest search per image), so it runs on every backend at the scale of the index:

    neighbours.py   the kNN graph from the index's search (exact scores), union-find
    calibration.py  the measured precision/recall curve behind the default duplicate threshold
    duplicates.py   groups, pairwise scores, exact copies, keeper rules (KEEPERS); incremental update
    audit.py        neighbour votes for another category or product; outliers
    report.py       JSON, CSV and HTML reports (thumbnail grids, sortable tables)
"""

from lookalike.health.audit import AuditReport, AuditSettings, Outlier, Suspect, audit
from lookalike.health.calibration import DEFAULT_THRESHOLD, expected_precision
from lookalike.health.duplicates import (
    KEEPERS,
    DuplicateGroup,
    DuplicateReport,
    DuplicateSettings,
    Member,
    create_keeper,
    find_duplicates,
    update_duplicates,
)

__all__ = [
    "DEFAULT_THRESHOLD",
    "KEEPERS",
    "AuditReport",
    "AuditSettings",
    "DuplicateGroup",
    "DuplicateReport",
    "DuplicateSettings",
    "Member",
    "Outlier",
    "Suspect",
    "audit",
    "create_keeper",
    "expected_precision",
    "find_duplicates",
    "update_duplicates",
]
