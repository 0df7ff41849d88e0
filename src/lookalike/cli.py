"""The `lookalike` command: thin commands over the library."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from lookalike.errors import LookalikeError, SettingsError
from lookalike.settings import Settings

app = typer.Typer(
    help="Domain-specific image similarity search: index a catalogue of product photos, search it with a photo.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
errors = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

IndexOption = Annotated[Path, typer.Option("--index", "-i", help="The index folder.")]
REPO_SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "grocery"


def friendly_errors(command: F) -> F:
    """Print lookalike's errors as one clear line and exit 2, instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except LookalikeError as exc:
            errors.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def build_settings(settings_file: Path | None, assignments: list[str], **named: Any) -> Settings:
    """Settings from a JSON file (or defaults), then named options, then `--set key=value` pairs."""
    settings = Settings.from_json(settings_file) if settings_file else Settings()
    changes = {key: value for key, value in named.items() if value is not None}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep:
            raise SettingsError(f"--set expects key=value (e.g. embed.input_size=288), got {assignment!r}")
        changes[key.strip()] = _parse_value(raw)
    return settings.replace(**changes) if changes else settings


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _progress_bar(description: str) -> tuple[Any, Callable[[int, int], None]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=errors
    )
    task = progress.add_task(description, total=None)

    def update(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    return progress, update


def _print_add_report(report: Any) -> None:
    console.print(
        f"added {len(report.added)}, updated {len(report.updated)}, unchanged {len(report.unchanged)}, "
        f"failed {len(report.failed)} in {report.seconds:.1f} s"
        + (f" ({report.embedded / report.seconds:.1f} images/s)" if report.embedded and report.seconds else "")
    )
    if report.failed:
        table = Table(title="Skipped files", title_justify="left")
        table.add_column("file")
        table.add_column("reason")
        for path, reason in report.failed:
            table.add_row(path, reason)
        errors.print(table)


@app.command()
@friendly_errors
def index(
    catalog: Annotated[Path, typer.Argument(help="Folder of images; sub-folders are categories.")],
    index_path: IndexOption,
    model: Annotated[
        str | None, typer.Option(help="Embedder name, e.g. efficientnet-lite0, efficientnet-lite2.")
    ] = None,
    input_size: Annotated[int | None, typer.Option(help="Square input size of the backbone.")] = None,
    grayscale: Annotated[bool | None, typer.Option("--grayscale/--color", help="Shape only: grey images.")] = None,
    localize: Annotated[bool | None, typer.Option("--localize/--no-localize", help="Cut the object out.")] = None,
    settings_file: Annotated[Path | None, typer.Option("--settings", help="Settings JSON file.")] = None,
    assign: Annotated[
        list[str] | None, typer.Option("--set", help="Any setting: --set rerank.mask_iou_weight=0.3")
    ] = None,
    rebuild: Annotated[bool, typer.Option(help="Delete the index and build it anew.")] = False,
) -> None:
    """Offline stage: index a catalogue folder (creates the index, or updates it)."""
    from lookalike.pipeline import Engine

    named = {
        "embed.model": model,
        "embed.input_size": input_size,
        "embed.grayscale": grayscale,
        "localize.enabled": localize,
    }
    settings = build_settings(settings_file, assign or [], **named)
    if rebuild or not (index_path / "settings.json").exists():
        engine = Engine.create(index_path, settings, overwrite=rebuild)
    else:
        engine = Engine.open_or_create(index_path, settings)
    with engine:
        progress, update = _progress_bar("indexing")
        with progress:
            report = engine.add([catalog], progress=update)
        _print_add_report(report)


@app.command()
@friendly_errors
def search(
    query: Annotated[Path, typer.Argument(help="The query photo.")],
    index_path: IndexOption,
    k: Annotated[int, typer.Option("-k", help="How many results.")] = 5,
    category: Annotated[str | None, typer.Option(help="Search only this category.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Online stage: the catalogue images most like QUERY."""
    from lookalike.pipeline import Engine

    with Engine.open(index_path) as engine:
        result = engine.search(query, k=k, category=category)
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
        return
    console.print(results_table(result))
    console.print(timings_line(result.timings))


def results_table(result: Any) -> Table:
    table = Table(title=f"{result.query}", title_justify="left")
    for column in ("rank", "path", "score", "category"):
        table.add_column(column, justify="right" if column in ("rank", "score") else "left", overflow="fold")
    extra_scores = sorted({name for hit in result for name in hit.scores if name != "vector"})
    for name in extra_scores:
        table.add_column(name, justify="right")
    for hit in result:
        cells = [str(hit.rank), _short_path(hit.path), f"{hit.score:.4f}", hit.category or "-"]
        cells += [f"{hit.scores[name]:.3f}" if name in hit.scores else "-" for name in extra_scores]
        table.add_row(*cells)
    return table


def _short_path(path: str) -> str:
    """Relative to the working folder when inside it: shorter tables."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def timings_line(timings: dict[str, float]) -> str:
    return "timings: " + ", ".join(f"{stage} {seconds * 1000:.1f} ms" for stage, seconds in timings.items())


@app.command()
@friendly_errors
def add(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    index_path: IndexOption,
    category: Annotated[str | None, typer.Option(help="Category of these images (folders: sub-folder names).")] = None,
) -> None:
    """Add images to an index, without rebuilding it."""
    from lookalike.pipeline import Engine

    with Engine.open(index_path) as engine:
        progress, update = _progress_bar("adding")
        with progress:
            report = engine.add(paths, categories=category, progress=update)
        _print_add_report(report)


@app.command()
@friendly_errors
def remove(
    keys: Annotated[list[str], typer.Argument(help="Ids or paths of indexed images.")],
    index_path: IndexOption,
) -> None:
    """Remove images from an index by id or path."""
    from lookalike.pipeline import Engine

    with Engine.open(index_path) as engine:
        report = engine.remove(keys)
    console.print(f"removed {len(report.removed)}")
    if report.missing:
        errors.print(f"not in the index: {', '.join(report.missing)}")
        raise typer.Exit(1)


@app.command()
@friendly_errors
def info(index_path: IndexOption, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Models, settings and counts per category of an index."""
    from lookalike.pipeline import Engine

    with Engine.open(index_path) as engine:
        facts = engine.info()
    if as_json:
        sys.stdout.write(json.dumps(facts, indent=2) + "\n")
        return
    console.print(
        f"[bold]{facts['path']}[/]: {facts['images']} images, {facts['dim']}-d vectors, "
        f"{facts['size_bytes'] / 1e6:.1f} MB on disk"
    )
    console.print(f"embedder: {facts['embedder']}")
    table = Table("category", "images")
    for name, count in facts["categories"].items():
        table.add_row(name, str(count))
    console.print(table)
    console.print_json(json.dumps(facts["settings"]))


@app.command()
@friendly_errors
def demo(
    samples: Annotated[Path, typer.Option(help="Sample data: catalog/ and queries/ folders.")] = REPO_SAMPLES,
    index_path: Annotated[
        Path | None, typer.Option("--index", help="Where to build the index (default: temporary).")
    ] = None,
    k: Annotated[int, typer.Option("-k")] = 5,
) -> None:
    """Index the bundled sample catalogue and search it with the sample photos."""
    import tempfile

    from lookalike.pipeline import Engine

    if not (samples / "catalog").is_dir():
        raise LookalikeError(f"{samples}: no sample catalogue here (expected catalog/ and queries/); pass --samples")
    with tempfile.TemporaryDirectory() as scratch:
        target = index_path or Path(scratch) / "demo.index"
        with Engine.create(target, overwrite=True) as engine:
            progress, update = _progress_bar("indexing the sample catalogue")
            with progress:
                report = engine.add([samples / "catalog"], progress=update)
            _print_add_report(report)
            queries = sorted((samples / "queries").iterdir())
            top1 = topk = 0
            for query in queries:
                result = engine.search(query, k=k)
                product = _product_of(query)
                ranks = [hit.rank for hit in result if _product_of(Path(hit.path)) == product]
                top1 += bool(ranks and ranks[0] == 1)
                topk += bool(ranks)
                if query == queries[0]:
                    console.print(results_table(result))
                    console.print(timings_line(result.timings))
            console.print(
                f"[bold]{len(queries)} sample queries[/]: the same product ranked first for {top1}, "
                f"in the top {k} for {topk}."
            )


@app.command()
@friendly_errors
def segment(
    image: Annotated[Path, typer.Argument(help="The photo to segment.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Folder for the cut-out and the mask.")],
    index_path: Annotated[Path | None, typer.Option("--index", help="Use this index's localisation settings.")] = None,
    matting: Annotated[
        bool | None, typer.Option("--matting/--no-matting", help="Refine edges by alpha matting.")
    ] = None,
) -> None:
    """Write the cut-out and the mask the engine uses for IMAGE: see what the engine sees."""
    from PIL import Image

    from lookalike.io import load_image
    from lookalike.localize import Localizer

    settings = Settings.from_json(index_path / "settings.json") if index_path else Settings()
    if matting is not None:
        settings = settings.replace(**{"localize.matting": matting})
    located = Localizer(settings.localize).localize(load_image(image))
    out.mkdir(parents=True, exist_ok=True)
    cutout_path, mask_path = out / f"{image.stem}_cutout.png", out / f"{image.stem}_mask.png"
    located.cutout.save(cutout_path)
    Image.fromarray(located.mask.astype("uint8") * 255).save(mask_path)
    note = "object found" if located.found else f"fell back to the whole image: {located.reason}"
    console.print(f"{note}; box {tuple(int(v) for v in located.box)}; {located.timings['total'] * 1000:.0f} ms")
    console.print(f"wrote {cutout_path} and {mask_path}")


@app.command()
@friendly_errors
def evaluate(
    dataset: Annotated[
        str, typer.Option(help="grocery-photo2photo, grocery-photo2catalog, eth80, or PATH/manifest.csv.")
    ],
    config: Annotated[
        list[str] | None, typer.Option("--config", "-c", help="A named preset (repeat for several); default baseline.")
    ] = None,
    config_file: Annotated[Path | None, typer.Option(help='JSON: {"name": {"section.key": value, ...}, ...}.')] = None,
    data_root: Annotated[Path | None, typer.Option(help="Folder holding the data sets (default: shared data).")] = None,
    limit: Annotated[int, typer.Option(help="Only N evenly spaced queries (0 = all).")] = 0,
    out: Annotated[Path, typer.Option(help="Report folder: report.md, report.html, PNGs, results.json.")] = Path(
        "evaluation"
    ),
    compare: Annotated[Path | None, typer.Option("--compare", help="An older results.json: print the deltas.")] = None,
    latency_queries: Annotated[int, typer.Option(help="Queries timed again at k=10 for the latency.")] = 100,
    samples: Annotated[int, typer.Option(help="Queries per qualitative grid.")] = 6,
) -> None:
    """Measure retrieval (and classification, segmentation where present) and write a report."""
    from lookalike.evaluate.compare import COMPARISON_COLUMNS, comparison_rows
    from lookalike.evaluate.report import run

    progress, update = _progress_bar("evaluating")

    def report(what: str, done: int, total: int) -> None:
        progress.update(progress.task_ids[0], description=what)
        update(done, total)

    with progress:
        evaluation = run(
            dataset, config or [], config_file=config_file, data_root=data_root, limit=limit, out=out,
            compare_to=compare, latency_queries=latency_queries, samples=samples, progress=report,
        )  # fmt: skip
    columns, rows = evaluation.table()
    console.print(_rows_table(f"{evaluation.dataset['name']}, {evaluation.dataset['protocol']}", columns, rows))
    if evaluation.comparison is not None:
        cells = comparison_rows(evaluation.comparison)
        console.print(_rows_table(f"against {compare}", list(COMPARISON_COLUMNS), cells))
    console.print(f"report: {out / 'report.html'} (and report.md, results.json)")


def _rows_table(title: str, columns: list[str], rows: list[list[str]]) -> Table:
    table = Table(title=title, title_justify="left")
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def _product_of(path: Path) -> str:
    """Sample files are named <product>_<number>.jpg."""
    return path.stem.rsplit("_", 1)[0]


def main() -> None:
    app()


if __name__ == "__main__":
    main()
