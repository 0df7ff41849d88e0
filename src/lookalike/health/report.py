"""Health reports on disk: JSON (everything), CSV (one row per image) and one HTML page with small
thumbnails (a grid per duplicate group, sortable tables, links to the original files)."""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path
from typing import Any

from PIL import Image

from lookalike.health.audit import AuditReport
from lookalike.health.duplicates import DuplicateReport

THUMBNAIL = 96  # pixels on the longest side
SORTABLE = """<script>
document.querySelectorAll("table.sortable th").forEach((th, column) => th.addEventListener("click", () => {
  const body = th.closest("table").tBodies[0], up = th.dataset.up !== "1";
  const key = (row) => { const t = row.cells[column].dataset.sort ?? row.cells[column].textContent;
                         const n = parseFloat(t); return isNaN(n) ? t : n; };
  [...body.rows].sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (up ? 1 : -1))
    .forEach((row) => body.appendChild(row));
  th.dataset.up = up ? "1" : "0";
}));
</script>"""
STYLE = """<style>
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222} h1{font-size:1.4em} h2{font-size:1.1em;margin-top:1.5em}
.group{border:1px solid #ddd;border-radius:6px;padding:.5em;margin:.5em 0;display:inline-block;vertical-align:top}
figure{display:inline-block;margin:.25em;text-align:center;font-size:11px;width:110px;vertical-align:top}
figure img{max-width:96px;max-height:96px;border:2px solid transparent} figure.keeper img{border-color:#2a8a2a}
table{border-collapse:collapse;margin:.5em 0} td,th{border-bottom:1px solid #eee;padding:3px 8px;text-align:left}
th{cursor:pointer;background:#f5f5f5} td img{max-width:64px;max-height:64px} .note{color:#555}
</style>"""


def write_duplicates(report: DuplicateReport, folder: Path) -> list[Path]:
    """duplicates.json, duplicates.csv and duplicates.html (+ thumbs/) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    payload = report.to_dict()
    json_path = folder / "duplicates.json"
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    csv_path = folder / "duplicates.csv"
    with csv_path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["group", "kind", "id", "path", "category", "item", "width", "height", "keeper",
                         "exact_copy_of", "best_score"])  # fmt: skip
        for number, group in enumerate(report.groups, 1):
            for member in group.members:
                best = max((s for a, b, s in group.pairs if member.id in (a, b)), default="")
                row = [number, group.kind, member.id, member.path, member.category or "", member.item or ""]
                copy_of = member.exact_copy_of or ""
                writer.writerow([*row, member.width, member.height, int(member.keeper), copy_of, best])
    html_path = folder / "duplicates.html"
    html_path.write_text(_duplicates_html(report, folder))
    return [json_path, csv_path, html_path]


def write_audit(report: AuditReport, folder: Path) -> list[Path]:
    """audit.json, audit-mislabelled.csv, audit-outliers.csv and audit.html (+ thumbs/) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / "audit.json"
    json_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    suspects_path = folder / "audit-mislabelled.csv"
    _write_rows(suspects_path, ["id", "path", "label", "current", "voted", "share", "own_share"],
                [vars(suspect) for suspect in report.mislabelled])  # fmt: skip
    outliers_path = folder / "audit-outliers.csv"
    _write_rows(outliers_path, ["id", "path", "category", "centroid_similarity", "density", "score"],
                [vars(outlier) for outlier in report.outliers])  # fmt: skip
    html_path = folder / "audit.html"
    html_path.write_text(_audit_html(report, folder))
    return [json_path, suspects_path, outliers_path, html_path]


def _write_rows(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _duplicates_html(report: DuplicateReport, folder: Path) -> str:
    precision = report.expected_precision
    expected = (
        f"expected precision at this threshold: {precision:.2f} (measured on the benchmark's pairs, "
        f"for {report.calibrated_for})"
        if precision is not None
        else "below the measured curve: no expected precision"
    )
    parts = [
        f"<h1>Near-duplicates: {len(report.groups)} groups</h1>",
        f"<p class=note>{report.images} images; threshold {report.settings.threshold} ({expected}); "
        f"k = {report.settings.k}; keeper rule: {html.escape(report.settings.keep)} (green border); "
        f"{report.seconds} s.</p>",
        *(f"<p class=note>{html.escape(note)}</p>" for note in report.notes),
    ]
    for number, group in enumerate(report.groups, 1):
        figures = "".join(_figure(member, folder) for member in group.members)
        scores = ", ".join(f"{a}-{b}: {s:.3f}" for a, b, s in group.pairs[:12])
        title = f"group {number} ({group.kind}, {len(group.members)} images)"
        parts.append(f"<div class=group><b>{title}</b><br>{figures}<div class=note>{scores}</div></div>")
    rows = [
        [str(number), group.kind, str(member.id), _thumb_cell(member.id, member.path, folder), _link(member.path),
         html.escape(member.category or ""), f"{member.width}x{member.height}", "yes" if member.keeper else "",
         str(max((s for a, b, s in group.pairs if member.id in (a, b)), default=""))]
        for number, group in enumerate(report.groups, 1)
        for member in group.members
    ]  # fmt: skip
    parts.append("<h2>All images in groups</h2>")
    parts.append(_table(["group", "kind", "id", "image", "path", "category", "size", "keeper", "best score"], rows))
    return _page("lookalike: near-duplicates", parts)


def _audit_html(report: AuditReport, folder: Path) -> str:
    suspects = [
        [str(s.id), _thumb_cell(s.id, s.path, folder), _link(s.path), s.label, html.escape(str(s.current)),
         html.escape(str(s.voted)), f"{s.share:.3f}", f"{s.own_share:.3f}",
         "".join(_thumb(n, folder) for n in s.neighbours[:5])]
        for s in report.mislabelled
    ]  # fmt: skip
    outliers = [
        [str(o.id), _thumb_cell(o.id, o.path, folder), _link(o.path), html.escape(str(o.category)),
         f"{o.centroid_similarity:.3f}", f"{o.density:.3f}", f"{o.score:.3f}"]
        for o in report.outliers
    ]  # fmt: skip
    parts = [
        "<h1>Catalogue audit</h1>",
        f"<p class=note>{report.images} images; labels audited: {', '.join(report.labels)}; "
        f"k = {report.settings.k}; a suspect's neighbours give at least {report.settings.min_share:.0%} of their "
        f"similarity-weighted vote to another label; {report.seconds} s.</p>",
        f"<h2>Likely mislabelled ({len(suspects)})</h2>",
        _table(
            ["id", "image", "path", "label", "filed as", "neighbours say", "share", "own share", "neighbours"], suspects
        ),
        f"<h2>Outliers ({len(outliers)}, the least typical {report.settings.outlier_fraction:.0%})</h2>",
        _table(["id", "image", "path", "category", "similarity to category", "local density", "score"], outliers),
    ]
    return _page("lookalike: catalogue audit", parts)


def _page(title: str, parts: list[str]) -> str:
    body = "\n".join(parts)
    head = f"<head><meta charset=utf-8><title>{title}</title>{STYLE}</head>"
    return f"<!doctype html><html>{head}<body>{body}{SORTABLE}</body></html>\n"


def _table(columns: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table class=sortable><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(member: Any, folder: Path) -> str:
    keeper = " class=keeper" if member.keeper else ""
    copy = f" = copy of {member.exact_copy_of}" if member.exact_copy_of is not None else ""
    caption = f"{member.id} {html.escape(member.category or '')}<br>{member.width}x{member.height}{copy}"
    image = _thumbnail(member.id, member.path, folder)
    link = f'<a href="{_uri(member.path)}"><img src="{image}" alt=""></a>'
    return f"<figure{keeper}>{link}<figcaption>{caption}</figcaption></figure>"


def _thumb_cell(item_id: int, path: str, folder: Path) -> str:
    return f'<a href="{_uri(path)}"><img src="{_thumbnail(item_id, path, folder)}" alt=""></a>'


def _thumb(item_id: int, folder: Path) -> str:
    """A neighbour's thumbnail, when one was made for it (neighbours are shown, not written)."""
    name = f"thumbs/{item_id}.jpg"
    return f'<img src="{name}" alt="{item_id}" title="{item_id}">' if (folder / name).exists() else f"{item_id} "


def _thumbnail(item_id: int, path: str, folder: Path) -> str:
    """thumbs/<id>.jpg, made once (an unreadable file gets no thumbnail: the link stays)."""
    name = f"thumbs/{item_id}.jpg"
    target = folder / name
    if not target.exists():
        target.parent.mkdir(exist_ok=True)
        try:
            with Image.open(path) as image:
                image.thumbnail((THUMBNAIL, THUMBNAIL))
                image.convert("RGB").save(target, "JPEG", quality=80)
        except (OSError, ValueError, Image.DecompressionBombError):
            return ""
    return name


def _link(path: str) -> str:
    return f'<a href="{_uri(path)}">{html.escape(Path(path).name)}</a>'


def _uri(path: str) -> str:
    try:
        return html.escape(Path(path).resolve().as_uri())
    except ValueError:
        return html.escape(path)
