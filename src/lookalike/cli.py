"""The `lookalike` command: thin commands over the library."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from lookalike.errors import LookalikeError, SettingsError
from lookalike.samples import sample_dir
from lookalike.settings import Settings


def _untyped_flags(command: Any, ctx: Any) -> None:
    """Typer labels every option with its type in the help, flags and --help included (`--json
    <bool>`); a flag takes no value, so its label is left empty."""
    for param in command.get_params(ctx):
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""


class _Command(typer.core.TyperCommand):
    def format_help(self, ctx: Any, formatter: Any) -> None:
        _untyped_flags(self, ctx)
        super().format_help(ctx, formatter)


class _Group(typer.core.TyperGroup):
    def format_help(self, ctx: Any, formatter: Any) -> None:
        _untyped_flags(self, ctx)
        super().format_help(ctx, formatter)


app = typer.Typer(
    help="Domain-specific image similarity search: index a catalogue of product photos, search it with a photo.",
    no_args_is_help=True,
    add_completion=False,
    cls=_Group,
)
command = functools.partial(app.command, cls=_Command)
console = Console()
errors = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

IndexOption = Annotated[Path, typer.Option("--index", "-i", help="The index folder.")]
BUNDLED_SAMPLES = sample_dir()  # the sample catalogue inside the package (lookalike/samples/grocery)


def friendly_errors(command: F) -> F:
    """Print lookalike's errors as one clear line and exit 2, instead of a traceback; anything
    unexpected exits 1 with one line too (LOOKALIKE_DEBUG=1 shows the traceback)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except LookalikeError as exc:
            errors.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            if os.environ.get("LOOKALIKE_DEBUG"):
                raise
            errors.print(
                f"[bold red]error:[/] unexpected {type(exc).__name__}: {exc} (a bug: please report it; "
                "LOOKALIKE_DEBUG=1 shows the traceback)",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


WaitOption = Annotated[
    bool, typer.Option("--wait/--no-wait", help="When another process is writing to the index: wait, or fail at once.")
]
TimeoutOption = Annotated[
    float | None,
    typer.Option("--timeout", help="Seconds to wait for another writer before giving up (default: no limit)."),
]


def lock_options(wait: bool, timeout: float | None) -> dict[str, Any]:
    """`Engine.open` options for a writing command: how long to wait for another writer, and what to say."""

    from lookalike.index.lock import describe_holder

    def waiting(holder: dict[str, Any]) -> None:
        who = describe_holder(holder)
        errors.print(f"index busy: {who} is writing to it; waiting (Ctrl-C to stop, --no-wait to fail at once)")

    return {"lock_timeout": 0.0 if not wait else timeout, "on_wait": waiting}


def build_settings(settings_file: Path | None, assignments: list[str], **named: Any) -> Settings:
    """Settings from a JSON file (or defaults), then named options, then `--set key=value` pairs."""
    settings = Settings.from_json(settings_file) if settings_file else Settings()
    changes = {key: value for key, value in named.items() if value is not None}
    changes.update(parse_assignments(assignments))
    return settings.replace(**changes) if changes else settings


def parse_assignments(assignments: list[str], section: str | None = None) -> dict[str, Any]:
    """`--set key=value` pairs as {dotted key: value} (values read as JSON when they parse);
    with `section`, every key must be in it and comes back without its prefix."""
    example = f"{section}.<name>=value" if section else "section.name=value (e.g. embed.input_size=288)"
    changes: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        key = key.strip()
        prefix, _, name = key.partition(".")
        if not sep or not name or (section is not None and prefix != section):
            raise SettingsError(f"--set expects {example}, got {assignment!r}")
        changes[name if section else key] = _parse_value(raw)
    return changes


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _progress_bar(description: str) -> tuple[Any, Callable[..., None]]:
    """A live bar on a terminal; log lines (stage, done/total, rate, ETA) when stderr is a file or a pipe."""
    from lookalike._progress import progress_reporter

    return progress_reporter(description, errors)


def _print_add_report(report: Any) -> None:
    """One summary line; then each file passed over, one `path: reason` line each (never wrapped, so
    each can be grepped), and the files named twice."""
    console.print(
        f"added {len(report.added)}, updated {len(report.updated)}, unchanged {len(report.unchanged)}, "
        f"failed {len(report.failed)} in {report.seconds:.1f} s"
        + (f" ({report.embedded / report.seconds:.1f} images/s)" if report.embedded and report.seconds else ""),
        highlight=False,
    )
    if report.failed:
        errors.print(f"not indexed ({len(report.failed)}):", highlight=False)
        for path, reason in report.failed:
            errors.print(f"  {path}: {reason}", markup=False, highlight=False, soft_wrap=True)
    duplicates = report.duplicates
    if duplicates:
        shown = ", ".join(duplicates[:5]) + (f" and {len(duplicates) - 5} more" if len(duplicates) > 5 else "")
        console.print(
            f"note: {len(duplicates)} path(s) named a file already in this run, indexed once: {shown}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


def _catalogue_sources(catalog: str) -> list[Any]:
    """A folder (or image) as it is, or a manifest's entries (path, category, item); either may be a URI."""
    from lookalike.io.uris import is_uri, suffix

    uri = is_uri(catalog)
    if (suffix(catalog) if uri else Path(catalog).suffix) in (".csv", ".parquet") and (uri or Path(catalog).is_file()):
        from lookalike.io.catalog import read_manifest

        return list(read_manifest(catalog))
    return [catalog if uri else Path(catalog)]


@command()
@friendly_errors
def index(
    catalog: Annotated[
        str,
        typer.Argument(
            help="Folder of images (sub-folders are categories), or a CSV / Parquet manifest; either may be a URI "
            "read through fsspec (s3://, gs://, https://, file://...), as may the manifest's paths."
        ),
    ],
    index_path: IndexOption,
    model: Annotated[
        str | None, typer.Option(help="Embedder name, e.g. efficientnet-lite0, efficientnet-lite2.")
    ] = None,
    input_size: Annotated[int | None, typer.Option(help="Square input size of the backbone.")] = None,
    grayscale: Annotated[bool | None, typer.Option("--grayscale/--color", help="Shape only: grey images.")] = None,
    localize: Annotated[bool | None, typer.Option("--localize/--no-localize", help="Cut the object out.")] = None,
    settings_file: Annotated[Path | None, typer.Option("--settings", help="Settings JSON file.")] = None,
    assign: Annotated[
        list[str] | None, typer.Option("--set", help="Any setting: --set rerank.mask_iou.weight=0.3")
    ] = None,
    rebuild: Annotated[bool, typer.Option(help="Delete the index and build it anew.")] = False,
    backend: Annotated[
        str | None,
        typer.Option(help="Where vectors live: faiss (default, in the index folder) or milvus (needs --uri)."),
    ] = None,
    uri: Annotated[
        str | None,
        typer.Option(help="Milvus: a server (http://host:19530) or a Milvus Lite file (./catalog.db)."),
    ] = None,
    collection: Annotated[
        str | None, typer.Option(help="Milvus: the collection's name (default: the index folder's name).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Embed in N worker processes (a local Ray cluster; needs `pip install lookalike[scale]`)."),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option("--ray", help="Embed on an existing Ray cluster: its address, or `auto` to join the local one."),
    ] = None,
    model_from: Annotated[
        Path | None,
        typer.Option(help="A new index's model from a model folder (`lookalike model export`) or another index."),
    ] = None,
    wait: WaitOption = True,
    timeout: TimeoutOption = None,
) -> None:
    """Offline stage: index a catalogue folder (creates the index, or updates it).

    Exit status: 0 when every image was indexed or unchanged;
    3 when it finished, but some files failed (listed, with the reason);
    2 when an error stopped it.
    """
    from lookalike.pipeline import Engine

    named = {
        "embed.model": model,
        "embed.input_size": input_size,
        "embed.grayscale": grayscale,
        "localize.enabled": localize,
        "index.backend": backend,
        "index.uri": uri,
        "index.collection": collection,
    }
    settings = build_settings(settings_file, assign or [], **named)
    if rebuild or not (index_path / "settings.json").exists():
        engine = Engine.create(
            index_path, settings, overwrite=rebuild, model_from=model_from, **lock_options(wait, timeout)
        )
    elif model_from is not None:
        raise LookalikeError(
            f"{index_path}: exists; --model-from builds a new index (add --rebuild), "
            "or re-embed this one with `lookalike model use MODEL --index PATH`"
        )
    else:
        engine = Engine.open_or_create(index_path, settings, **lock_options(wait, timeout))
    with engine:
        progress, update = _progress_bar("indexing")
        with progress:
            report = engine.add(_catalogue_sources(catalog), progress=update, workers=workers, ray_address=ray_address)
        _print_add_report(report)
    if report.failed:
        raise typer.Exit(3)  # finished, with failures (listed)


@command()
@friendly_errors
def search(
    queries: Annotated[list[Path], typer.Argument(help="Query photos, or folders of them.")],
    index_path: IndexOption,
    k: Annotated[int, typer.Option("-k", help="How many results.")] = 5,
    category: Annotated[str | None, typer.Option(help="Search only this category.")] = None,
    gating: Annotated[
        bool | None,
        typer.Option(
            "--gating/--no-gating", help="Search only the predicted category (default: the index's classify.gating)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Online stage: the catalogue images most like each query photo, all answered by one process
    (the models load once: the first query's timings show it as `load`).

    --json prints one object for one photo, a list of them for several photos or a folder.
    Exit status with several photos: 0 when every one was answered; 3 when some could not be read (listed).
    """
    from lookalike.pipeline import Engine

    with Engine.open(index_path) as engine:
        if len(queries) == 1 and not _photo_folder(queries[0]):
            result = engine.search(queries[0], k=k, category=category, gating=gating)
            _runtime_note(engine)
            _print_result(result, as_json)
            return
        answered, failed = _search_many(engine, queries, k, category, gating, as_json)
    if as_json:
        sys.stdout.write(json.dumps([result.to_dict() for result in answered], indent=2) + "\n")
    if failed:
        raise typer.Exit(3)  # finished, with failures (listed)


def _photo_folder(path: Path) -> bool:
    """A folder of query photos: a real folder (links to folders are not followed) with images inside;
    anything else is searched as one photo, which names the problem when it is none."""
    from lookalike.io.catalog import scan_folder

    return path.is_dir() and not path.is_symlink() and bool(scan_folder(path, category_depth=0))


def _search_many(
    engine: Any, queries: list[Path], k: int, category: str | None, gating: bool | None, as_json: bool
) -> tuple[list[Any], list[tuple[str, str]]]:
    """Every photo of `queries` (folders scanned) searched in turn; unreadable ones listed on stderr."""
    from lookalike.errors import ImageError
    from lookalike.io.catalog import expand_paths

    failed: list[tuple[str, str]] = []
    entries = expand_paths(list(queries), category_depth=0, skipped=failed)
    if not entries and not failed:
        raise LookalikeError(f"no image files in {', '.join(str(q) for q in queries)}; expected photos or folders")
    answered = []
    for entry in entries:
        try:
            result = engine.search(entry.path, k=k, category=category, gating=gating)
        except ImageError as exc:
            failed.append((str(entry.path), exc.reason))
            continue
        if len(answered) == 0:
            _runtime_note(engine)
        answered.append(result)
        if not as_json:
            _print_result(result, as_json)
    for path, reason in failed:
        errors.print(f"[bold red]failed:[/] {path}: {reason}", highlight=False, soft_wrap=True)
    return answered, failed


def _print_result(result: Any, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
        return
    console.print(results_table(result))
    if "classification" in result.details:
        console.print(classification_line(result.details["classification"], result.searched_categories))
    console.print(timings_line(result.timings))


def _runtime_note(engine: Any) -> None:
    """Say so on stderr when the embedder runs on torch although the index asks for onnxruntime."""
    if engine.featurizer.runtime_note:
        errors.print(f"note: {engine.featurizer.runtime_note}", highlight=False, soft_wrap=True)


def classification_line(classification: dict[str, Any], searched: list[str] | None) -> str:
    """One line: the predicted category, its probability, and which categories were searched."""
    where = "every category" if searched is None else ", ".join(searched)
    if classification.get("category") is None:
        return f"classifier: {classification['reason']}; searched {where}"
    return (
        f"predicted category: {classification['category']} (p={classification['probability']:.3f}); "
        f"searched {where} ({classification['reason']})"
    )


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


@command()
@friendly_errors
def add(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    index_path: IndexOption,
    category: Annotated[
        str | None,
        typer.Option(help="Category of these images (default: a folder's sub-folder names, else 'uncategorised')."),
    ] = None,
    wait: WaitOption = True,
    timeout: TimeoutOption = None,
) -> None:
    """Add images to an index, without rebuilding it.

    Exit status: 0 when every image was added or unchanged;
    3 when it finished, but some files failed (listed, with the reason);
    2 when an error stopped it.
    """
    from lookalike.pipeline import Engine

    with Engine.open(index_path, **lock_options(wait, timeout)) as engine:
        progress, update = _progress_bar("adding")
        with progress:
            report = engine.add(paths, categories=category, progress=update)
        _print_add_report(report)
    if report.failed:
        raise typer.Exit(3)  # finished, with failures (listed)


@command()
@friendly_errors
def remove(
    keys: Annotated[list[str], typer.Argument(help="Ids or paths of indexed images.")],
    index_path: IndexOption,
    wait: WaitOption = True,
    timeout: TimeoutOption = None,
) -> None:
    """Remove images from an index by id or path."""
    from lookalike.pipeline import Engine

    with Engine.open(index_path, **lock_options(wait, timeout)) as engine:
        report = engine.remove(keys)
    console.print(f"removed {len(report.removed)}")
    if report.missing:
        errors.print(f"not in the index: {', '.join(report.missing)}")
        raise typer.Exit(1)


@command()
@friendly_errors
def info(
    index_path: IndexOption,
    show_settings: Annotated[
        bool, typer.Option("--settings", help="Also print every setting the index was made with (JSON).")
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Everything, machine-readable: counts, models, partitions, settings (JSON)."),
    ] = False,
) -> None:
    """A short summary of an index: model, tuning, localisation, index kind, counts per category,
    size on disk, last change. --settings adds every setting; --json gives it all as JSON."""
    from lookalike.pipeline import Engine

    with Engine.open(index_path) as engine:
        facts = engine.info()
    if as_json:
        sys.stdout.write(json.dumps(facts, indent=2) + "\n")
        return
    for name, value in info_lines(facts):
        console.print(f"[bold]{name + ':':<14}[/]{value}", highlight=False, soft_wrap=True)
    console.print(categories_table(facts["categories"]))
    if show_settings:
        console.print(embedder_line(facts["embedder"]), highlight=False, soft_wrap=True)
        console.print_json(json.dumps(facts["settings"]))
    else:
        console.print(f"every setting: lookalike info --index {index_path} --settings (or --json)", highlight=False)


def categories_table(counts: dict[str, int], most: int = 15) -> Table:
    """Images per category, the largest first; past `most` rows, one row counts the rest."""
    table = Table("category", "images")
    ranked = sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))
    for name, count in ranked[:most]:
        table.add_row(name, str(count))
    if len(ranked) > most:
        rest = ranked[most:]
        table.add_row(f"... {len(rest)} more (--json lists them)", str(sum(count for _, count in rest)))
    return table


def info_lines(facts: dict[str, Any]) -> list[tuple[str, str]]:
    """`info`'s summary, one (name, value) per line."""
    settings = facts["settings"]
    embed, localize = settings["embed"], settings["localize"]
    count = len(facts["categories"])
    lines = [
        ("index", f"{facts['path']}: {facts['images']} images in {count} categor{'y' if count == 1 else 'ies'}"),
        ("size on disk", f"{facts['size_bytes'] / 1e6:.1f} MB"),
        ("last change", facts.get("changed_at") or "unknown"),
        (
            "model",
            f"{embed['model']}, {embed['input_size']} px, {'grey' if embed['grayscale'] else 'colour'}, "
            f"{facts['dim']}-d vectors",
        ),
        ("tuning", tuning_line(facts.get("embedder"), facts.get("head"))),
        (
            "localisation",
            f"on ({localize['model']} {localize.get('precision', 'fp32')} at {localize['input_size']} px, "
            f"{localize['features']} features)"
            if localize["enabled"]
            else "off (whole photos; --localize when building the index to cut the product out)",
        ),
        ("re-ranking", ", ".join(settings["rerank"]["chain"]) or "none"),
    ]
    if facts.get("vector_index"):
        lines.append(("vector index", vector_index_line(settings["index"]["kind"], facts["vector_index"])))
    else:
        lines.append(("vector index", settings["index"]["kind"]))
    if "classifier" in facts:
        lines.append(("classifier", classifier_line(facts["classifier"])))
    if facts.get("archive"):
        lines.append(("archive", archive_line(facts["archive"])))
    if facts.get("views"):
        lines.append(("views", views_line(facts["views"])))
    return lines


def archive_line(archive: dict[str, Any]) -> str:
    """The photo archive's size, and whether the "archive" re-ranker can use it."""
    line = f"{archive['photos']} unlabelled photos"
    if not archive["current"]:
        return line + " made by another model: not used (`lookalike check --repair` embeds them again)"
    if not archive["reranker"]:
        return line + ", not used: 'archive' is not in rerank.chain (`lookalike archive` with no photos adds it)"
    return line + ", used by the 'archive' re-ranker"


def views_line(views: dict[str, Any]) -> str:
    """The catalogue views: how many, for how many images, and whether the "views" re-ranker uses them."""
    line = f"{views['count']} phone-photo views of each of {views['images']} catalogue images"
    if views["missing"]:
        line += f" ({views['missing']} images have none: `lookalike check --repair` makes them)"
    if not views["current"]:
        return line + ", made by another model: not used (`lookalike check --repair` makes them again)"
    if not views["reranker"]:
        return line + ", not used: 'views' is not in rerank.chain (`lookalike views --info --use` adds it)"
    return line + ", used by the 'views' re-ranker"


def tuning_line(fingerprint: Any, head: dict[str, Any] | None) -> str:
    """What was learned on top of the pretrained backbone, and its held-out figures."""
    if not isinstance(fingerprint, dict) or not (fingerprint.get("tuning") or fingerprint.get("transform")):
        return "none: pretrained vectors (`lookalike train-embedding` learns your products)"
    kind = (head or {}).get("kind") or ("finetune" if fingerprint.get("tuning") else fingerprint["transform"]["kind"])
    line = f"{kind}"
    if head and head.get("trained_at"):
        line += f", trained {head['trained_at']}"
    if head and head.get("before") and head.get("after"):
        figure = "validation-view mAP" if kind == "self" else "held-out mAP"
        line += f"; {figure} {head['before']['map']:.4f} -> {head['after']['map']:.4f}"
    return line


@command()
@friendly_errors
def check(
    index_path: IndexOption,
    repair: Annotated[
        bool, typer.Option("--repair", help="Rebuild what can be rebuilt from the database (the vector snapshot).")
    ] = False,
    hashes: Annotated[bool, typer.Option("--hashes", help="Also re-hash every image file (slow).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
    wait: WaitOption = True,
    timeout: TimeoutOption = None,
) -> None:
    """Check an index: database integrity, vector snapshot, models, image files.

    Exit 0 when whole, 1 when problems remain. Without --repair it only reads."""
    from lookalike.pipeline import Engine

    with Engine.open(index_path, **lock_options(wait, timeout)) as engine:
        report = engine.check(repair=repair, hashes=hashes)
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
    else:
        for note in report.notes:
            console.print(f"ok: {note}", highlight=False)
        for fixed in report.repaired:
            console.print(f"[green]repaired:[/] {fixed}", highlight=False)
        for problem in report.problems:
            errors.print(f"[bold red]problem:[/] {problem}", highlight=False, soft_wrap=True)
        console.print("the index is whole" if report.ok else f"{len(report.problems)} problem(s)")
    if not report.ok:
        raise typer.Exit(1)


def embedder_line(fingerprint: Any) -> str:
    """What made the vectors, from the index's recorded fingerprint."""
    from lookalike.featurizer import describe_fingerprint

    return f"fingerprint:  {describe_fingerprint(fingerprint)}"


def vector_index_line(kind: str, partitions: dict[str, dict[str, Any]]) -> str:
    """The vector index for `info`: its kind, and which partitions are approximate or still exact (and why)."""
    approximate = sorted({p.get("faiss") or p["index"] for p in partitions.values() if p["state"] == "approximate"})
    exact = [p for p in partitions.values() if p["state"] != "approximate"]
    line = f"{kind}; {len(partitions) - len(exact)} approximate partition(s)"
    line += f" ({', '.join(approximate)})" if approximate else ""
    line += f", {len(exact)} exact" + (f" ({exact[0]['note']})" if exact and "note" in exact[0] else "")
    tombstones = sum(p.get("tombstones", 0) for p in partitions.values())
    return line + (f"; {tombstones} removed entries awaiting a rebuild" if tombstones else "")


def classifier_line(status: dict[str, Any]) -> str:
    """The classifier's state for `info`: absent, fresh or stale, with the reason."""
    line = f"{status['state']} ({status['reason']})"
    if status.get("kind"):
        accuracy = status.get("validation_accuracy")
        line += f"; {status['kind']}, {status['categories']} categories, trained {status['trained_at']}"
        line += f", validation accuracy {accuracy:.3f}" if accuracy is not None else ""
    return line


@command("train-classifier")
@friendly_errors
def train_classifier(
    index_path: IndexOption,
    kind: Annotated[
        str | None,
        typer.Option(
            help="mlp (the paper's head on frozen features), logreg (linear baseline) or knn (the most similar "
            "catalogue images vote; strongest after train-embedding)."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for report.json and the PNG figures (default: <index>/classifier/).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the validation split and the training.")] = None,
    augment: Annotated[
        int | None, typer.Option(help="Augmented copies (rotation, flip, zoom) of each training image; 0 = off.")
    ] = None,
    assign: Annotated[
        list[str] | None, typer.Option("--set", help="Any classify setting: --set classify.max_epochs=100")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
    wait: WaitOption = True,
    timeout: TimeoutOption = None,
) -> None:
    """Train the category classifier on the stored vectors: searches then visit only the predicted category.

    Prints the validation report; writes the confusion matrix and training curves."""
    from lookalike.classify import CLASSIFIER_DIR
    from lookalike.classify.plots import save_training_figures
    from lookalike.pipeline import Engine

    changes = parse_assignments(assign or [], "classify")
    with Engine.open(index_path, **lock_options(wait, timeout)) as engine:
        bar, update = _progress_bar("training the classifier")

        def stage(name: str, done: int, total: int) -> None:
            update(done, total, name)

        with bar:
            result = engine.train_classifier(
                kind, on_stage=stage, **{"seed": seed, "augment_copies": augment, **changes}
            )
        figures = save_training_figures(result, out or engine.path / CLASSIFIER_DIR)
    if as_json:
        payload = {"summary": result.summary(), "files": {name: str(path) for name, path in figures.items()}}
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    _print_classification_report(result)
    for name, path in figures.items():
        console.print(f"{name}: {_short_path(str(path))}")


def _print_classification_report(result: Any) -> None:
    summary, report = result.summary(), result.report
    console.print(
        f"trained a {summary['kind']} classifier of {summary['categories']} categories on {summary['n_train']} images"
        + (f" (+{summary['n_augmented']} augmented)" if summary["n_augmented"] else "")
        + f" in {summary['seconds']:.1f} s"
        + (f", best epoch {summary['best_epoch']}" if summary["best_epoch"] else "")
    )
    if report is None:
        errors.print("no images held out for validation: no report (--set classify.validation_fraction=0.2)")
        return
    table = Table(
        "category", "precision", "recall", "F1", "support", title=f"validation ({summary['n_validation']} images)"
    )
    for row in zip(report.labels, report.precision, report.recall, report.f1, report.support, strict=True):
        table.add_row(str(row[0]), *(f"{value:.3f}" for value in row[1:4]), str(row[4]))
    console.print(table)
    console.print(
        f"accuracy {report.accuracy:.3f}; average per-class accuracy {report.mean_class_accuracy:.3f} "
        f"(variance {report.class_accuracy_variance:.4f}); macro F1 {report.macro_f1:.3f}"
    )


@command("train-embedding")
@friendly_errors
def train_embedding(
    index_path: IndexOption,
    kind: Annotated[
        str | None,
        typer.Option(
            help="pca (no labels), supervised (learned whitening), linear or mlp (trained heads), "
            "finetune (the backbone's last stages trained on the catalogue: slower, most accurate), "
            "self (no labels at all: the same stages adapted to the catalogue's own images, each its own "
            "class, made to look like phone photos; head.adapt.* settings)."
        ),
    ] = None,
    dim: Annotated[int | None, typer.Option(help="Output dimension; 0 = the backbone's.")] = None,
    label: Annotated[
        str | None, typer.Option(help="Product id of an image: its 'category' (sub-folder) or its 'item'.")
    ] = None,
    items: Annotated[
        Path | None, typer.Option(help="CSV with columns path,item: the product of each image (overrides --label).")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Most training epochs (trained heads, finetune, self).")] = None,
    backgrounds: Annotated[
        Path | None,
        typer.Option(help="--kind self: a folder of your own background photos (shop shelves) to paste products onto."),
    ] = None,
    photos: Annotated[
        Path | None,
        typer.Option(
            help="--kind self: a folder of unlabelled photos of the catalogue's products (a photo archive, past "
            "queries; not indexed): pseudo-labels fine-tune the backbone on them after the adaptation."
        ),
    ] = None,
    archive_photos: Annotated[
        bool,
        typer.Option(
            "--archive/--no-archive",
            help="--photos: also keep them in the index's photo archive for the 'archive' re-ranker (`lookalike "
            "archive`), embedded by the new model.",
        ),
    ] = True,
    settings_file: Annotated[Path | None, typer.Option("--settings", help="Settings JSON (its head section).")] = None,
    assign: Annotated[list[str] | None, typer.Option("--set", help="Any head setting: head.sos_weight=0.5")] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Drop the learned transform: back to raw vectors.")] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Install the new embedding even when it does not beat the current one on held-out products."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
    wait: WaitOption = True,
    timeout: TimeoutOption = None,
) -> None:
    """Learn the catalogue's own notion of "the same product" and re-embed the index (opt-in).

    Needs product ids (except --kind pca and --kind self): by default an image's category, i.e. its
    sub-folder; --label item or --items CSV (columns path,item) for finer ones. Some products are held
    out: the validation curve, early stopping and the before/after figures come from products the
    transform never saw (--kind self, with no labels: fresh augmented views of the catalogue images).
    The new embedding is installed only when it beats the current one on those (--force: always);
    queries then get it. Undo with --remove.
    """
    from lookalike.io.catalog import read_manifest
    from lookalike.io.uris import stored_path
    from lookalike.pipeline import Engine

    folder = None if backgrounds is None else str(backgrounds.resolve())
    named = {"head.kind": kind, "head.dim": dim, "head.label": label, "head.adapt.background_dir": folder}
    head = build_settings(settings_file, assign or [], **named).head
    if epochs is not None:  # the most epochs of the kind chosen
        key = {"finetune": "head.finetune_epochs", "self": "head.adapt.epochs"}.get(head.kind, "head.max_epochs")
        head = build_settings(settings_file, assign or [], **named, **{key: epochs}).head
    products = {stored_path(e.path): e.item for e in read_manifest(items) if e.item} if items else None
    photo_files = _photo_files(photos) if photos is not None else None
    with Engine.open(index_path, **lock_options(wait, timeout)) as engine:
        if remove:
            removed = engine.remove_embedding()
            console.print("removed the learned transform" if removed else "the index has no learned transform")
            return
        bar, update = _progress_bar("training")

        def stage(name: str, done: int, total: int) -> None:
            update(done, total, name)

        with bar:
            report = engine.train_embedding(
                head,
                items=products,
                progress=_epoch_printer(),
                on_stage=stage,
                force=force,
                photos=photo_files,
                archive=archive_photos,
            )
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
        return
    _print_embedding_report(report)


def _photo_files(folder: Path) -> list[str]:
    """The image files under `folder` (`train-embedding --photos`), or an error saying what is wrong."""
    from lookalike.io.catalog import scan_folder

    if not folder.is_dir():
        raise LookalikeError(f"--photos {folder}: not a folder; expected a folder of photos of your products")
    files = [str(entry.path) for entry in scan_folder(folder)]
    if not files:
        raise LookalikeError(f"--photos {folder}: no images found in it")
    return files


def _epoch_printer() -> Callable[[int, int, dict[str, Any]], None]:
    def show(epoch: int, epochs: int, values: dict[str, Any]) -> None:
        val_map = "-" if values["val_map"] is None else f"{values['val_map']:.4f}"
        errors.print(f"epoch {epoch}/{epochs}: loss {values['loss']:.4f}, validation mAP {val_map}")

    return show


def _print_embedding_report(report: Any) -> None:
    for warning in report.warnings:
        errors.print(f"[bold yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    if report.before is not None:
        title = (
            f"held-out products ({report.n_validation_images} images of {report.n_validation_products} products "
            "the new embedding never saw; each image queries the others)"
        )
        if report.kind == "self":
            title = (
                f"validation views ({report.n_validation_images} fresh augmented views of "
                f"{report.n_validation_products} catalogue images, never trained on; each queries the clean images)"
            )
        in_use = report.current is not None and report.current != report.before
        columns = ["metric", "pretrained", *(["in use"] if in_use else []), f"new ({report.kind})"]
        rows = [
            [
                metric,
                f"{value:.4f}",
                *([f"{report.current[metric]:.4f}"] if in_use else []),
                f"{report.after[metric]:.4f}",
            ]
            for metric, value in report.before.items()
        ]
        console.print(_rows_table(title, columns, rows))
    elif report.kind == "self":
        errors.print("no validation views (head.adapt.validation_views = 0): no before/after figures")
    else:
        errors.print("no products held out (too few): no before/after figures; pass --set head.validation_fraction")
    if report.rounds:
        columns = ["round", "photos kept", "catalogue images", "photos changed product", "seconds"]
        rows = [
            [str(r["round"]), str(r["photos_kept"]), str(r["catalogue_images_with_photos"]),
             "-" if r["photos_changed"] is None else str(r["photos_changed"]), f"{r['seconds']:.0f}"]
            for r in report.rounds
        ]  # fmt: skip
        console.print(_rows_table("pseudo-labels on your photos (the fewer change, the more settled)", columns, rows))
    refit = ", then again on every product" if report.refit else ""
    what = (
        f"{report.n_train_images} images, each its own class (no labels)"
        if report.kind == "self"
        else f"{report.n_train_images} images of {report.n_train_products} products{refit}"
    )
    console.print(
        f"trained a {report.kind} embedding ({report.dim}-d, fingerprint {report.fingerprint}) on {what}",
        highlight=False,
    )
    if report.best_epoch is not None:
        console.print(best_epoch_line(report.best_epoch), highlight=False)
    colour = "green" if report.kept else "yellow"
    console.print(f"[bold {colour}]{report.verdict}[/]", highlight=False, soft_wrap=True)
    if report.kept:
        console.print(f"re-embedded {report.n_images} images in {report.seconds:.1f} s", highlight=False)


def best_epoch_line(epoch: int) -> str:
    """The epoch the validation curve chose, in words: epoch 0 is the starting point, untrained."""
    if epoch == 0:
        return (
            "best epoch 0 = the untrained starting point scored best on the held-out products: "
            "training did not help them (more or finer product ids, or other settings, may)"
        )
    return f"best epoch {epoch} (of the validation curve on the held-out products)"


ReportOption = Annotated[
    Path, typer.Option("--out", "-o", help="Folder for the report: JSON, CSV and an HTML page with thumbnails.")
]


@command()
@friendly_errors
def duplicates(
    index_path: IndexOption,
    threshold: Annotated[
        float | None,
        typer.Option(
            help="Cosine similarity at or above which two images are duplicates. Default: the calibrated one."
        ),
    ] = None,
    keep: Annotated[
        str, typer.Option(help="Which image of a group to keep: largest, oldest or first-path.")
    ] = "largest",
    k: Annotated[int, typer.Option(help="Neighbours looked at per image.")] = 8,
    out: ReportOption = Path("health-report"),
    update: Annotated[
        bool,
        typer.Option(
            "--update",
            help="Update the report in --out (with its settings): search only the images added since it was made.",
        ),
    ] = False,
) -> None:
    """Groups of near-duplicate images (and exact copies), each with a suggested image to keep."""
    from lookalike.health import (
        DEFAULT_THRESHOLD,
        DuplicateReport,
        DuplicateSettings,
        find_duplicates,
        update_duplicates,
    )
    from lookalike.health.report import write_duplicates
    from lookalike.pipeline import Engine

    previous = out / "duplicates.json"
    with Engine.open(index_path) as engine:
        if update and previous.exists():
            report = update_duplicates(engine, DuplicateReport.from_dict(json.loads(previous.read_text())))
        else:
            if update:
                console.print(f"no report in {out} yet: a full pass", highlight=False)
            chosen = DEFAULT_THRESHOLD if threshold is None else threshold
            report = find_duplicates(engine, DuplicateSettings(threshold=chosen, k=k, keep=keep))
        files = write_duplicates(report, out)
    console.print(duplicates_line(report), highlight=False)
    for note in report.notes:
        console.print(f"note: {note}", highlight=False)
    console.print(f"report: {', '.join(str(f) for f in files)}", highlight=False, soft_wrap=True)


def duplicates_line(report: Any) -> str:
    exact = sum(group.kind == "exact" for group in report.groups)
    extra = sum(len(group.members) - 1 for group in report.groups)
    precision = report.expected_precision
    expected = f"expected precision {precision:.2f}" if precision is not None else "no measured precision this low"
    return (
        f"{len(report.groups)} groups ({exact} of exact copies), {extra} images beyond the keepers, "
        f"in {report.images} images; threshold {report.settings.threshold} ({expected}), {report.seconds} s"
    )


@command()
@friendly_errors
def audit(
    index_path: IndexOption,
    k: Annotated[int, typer.Option(help="Neighbours that vote on each image's label.")] = 10,
    min_share: Annotated[
        float, typer.Option(help="A suspect's neighbours give at least this share of their vote to another label.")
    ] = 0.5,
    outliers: Annotated[float, typer.Option(help="Fraction of images listed as outliers.")] = 0.02,
    out: ReportOption = Path("health-report"),
) -> None:
    """Images likely filed under the wrong category or product (their neighbours vote for another),
    and outliers (least like their own category, sparsest neighbourhoods)."""
    from lookalike.health import AuditSettings
    from lookalike.health import audit as run_audit
    from lookalike.health.report import write_audit
    from lookalike.pipeline import Engine

    with Engine.open(index_path) as engine:
        report = run_audit(engine, AuditSettings(k=k, min_share=min_share, outlier_fraction=outliers))
        files = write_audit(report, out)
    console.print(
        f"{len(report.mislabelled)} likely mislabelled, {len(report.outliers)} outliers listed, in "
        f"{report.images} images (labels: {', '.join(report.labels)}), {report.seconds} s",
        highlight=False,
    )
    for suspect in report.mislabelled[:10]:
        console.print(
            f"  {suspect.id} {_short_path(suspect.path)}: {suspect.label} {suspect.current!r} -> "
            f"{suspect.voted!r} ({suspect.share:.0%} of the vote)",
            highlight=False,
        )
    console.print(f"report: {', '.join(str(f) for f in files)}", highlight=False, soft_wrap=True)


@command()
@friendly_errors
def serve(
    index_path: IndexOption,
    host: Annotated[str, typer.Option(help="Address to listen on; 127.0.0.1 = this machine only.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    max_upload_mb: Annotated[float, typer.Option(help="Largest photo accepted, in MB.")] = 10.0,
    max_megapixels: Annotated[
        float, typer.Option(help="Most decoded pixels of all the photos of one request, in megapixels.")
    ] = 200.0,
    allow_writes: Annotated[
        bool, typer.Option("--allow-writes", help="Let clients add and remove catalogue images (off: read-only).")
    ] = False,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="LOOKALIKE_API_KEY",
            show_envvar=True,
            help="Key that writes must send (Authorization: Bearer KEY); needed with --allow-writes off loopback.",
        ),
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option("--cors-origin", help="A site whose pages may call the API (https://x.example.com); repeatable."),
    ] = None,
    trusted_host: Annotated[
        list[str] | None,
        typer.Option(
            "--trusted-host",
            help="A Host name to answer (example.com, *.example.com); repeatable. Default: the loopback names "
            "on a loopback --host, any name otherwise.",
        ),
    ] = None,
) -> None:
    """Serve the REST API (docs at /docs) and the web page: search by dropping in a photo."""
    from lookalike.server import ServerSettings
    from lookalike.server.serve import run

    settings = ServerSettings(
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        max_pixels_per_request=int(max_megapixels * 1_000_000),
        allow_writes=allow_writes,
        api_key=api_key,
        cors_origins=tuple(cors_origin or ()),
        trusted_hosts=tuple(trusted_host) if trusted_host else None,
    )
    run(index_path, host=host, port=port, settings=settings)


@command()
@friendly_errors
def rebuild(
    index_path: IndexOption,
    kind: Annotated[
        str | None, typer.Option(help="Switch the vector index kind: flat, hnsw, ivfpq, hnswpq, ivfhnswpq or auto.")
    ] = None,
    assign: Annotated[list[str] | None, typer.Option("--set", help="Any index setting: --set index.nprobe=32")] = None,
    wait: WaitOption = True,
    timeout: TimeoutOption = None,
) -> None:
    """Rebuild the vector index from the stored vectors: after changing its kind or tunables, after
    growth (quantisers re-trained for the new size), or to purge deleted entries."""
    from lookalike.pipeline import Engine

    changes = parse_assignments(assign or [], "index")
    with Engine.open(index_path, **lock_options(wait, timeout)) as engine:
        report = engine.rebuild(kind, **changes)
    console.print(f"rebuilt {report['vectors']} vectors as {report['kind']} in {report['seconds']:.1f} s")
    table = Table("partition", "vectors", "state", "index", "tombstones")
    for key, facts in report["partitions"].items():
        state = facts["state"] + (f" ({facts['note']})" if "note" in facts else "")
        structure = facts.get("faiss") or facts.get("index", "-")  # a FAISS factory string, or Milvus's index type
        table.add_row(key or "(all)", str(facts["vectors"]), state, structure, str(facts.get("tombstones", "-")))
    console.print(table)


@command()
@friendly_errors
def demo(
    samples: Annotated[Path, typer.Option(help="Sample data: catalog/ and queries/ folders.")] = BUNDLED_SAMPLES,
    index_path: Annotated[
        Path | None, typer.Option("--index", help="Where to build the index (default: temporary).")
    ] = None,
    k: Annotated[int, typer.Option("-k", help="Results per sample query (a hit in the top k counts as found).")] = 5,
    serve_it: Annotated[
        bool, typer.Option("--serve", help="Then serve the web page on the sample catalogue (Ctrl-C stops it).")
    ] = False,
    host: Annotated[str, typer.Option(help="With --serve: the address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="With --serve: the port to listen on.")] = 8000,
) -> None:
    """Index the bundled sample catalogue and search it with the sample photos (--serve: then open
    the web page on it)."""
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
        if serve_it:
            from lookalike.server.serve import run

            run(target, host=host, port=port)
            return
    console.print(demo_next_steps(samples), highlight=False, soft_wrap=True)


def demo_next_steps(samples: Path) -> str:
    """What to do after the demo: the web page, then the user's own photos."""
    return (
        "next: `lookalike demo --serve` opens the web page on this catalogue; with your own photos "
        "(sub-folders = categories):\n"
        "  lookalike index PHOTOS/ --index my.index\n"
        "  lookalike search PHOTO.jpg --index my.index\n"
        "  lookalike serve --index my.index"
    )


@command()
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


@command()
@friendly_errors
def evaluate(
    dataset: Annotated[
        str, typer.Option(help="grocery-photo2photo, grocery-photo2catalog, eth80, or PATH/manifest.csv.")
    ],
    config: Annotated[
        list[str] | None, typer.Option("--config", "-c", help="A preset: baseline, grey, lite2... (repeat).")
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
    work_dir: Annotated[Path | None, typer.Option(help="Keep the built indexes here (default: temporary).")] = None,
    relevance: Annotated[
        str | None,
        typer.Option(
            help="What makes a gallery image relevant to a query: 'item' (the same product; a manifest's "
            "default) or 'category' (the same category: for data sets whose products are unknown)."
        ),
    ] = None,
) -> None:
    """Measure retrieval (and classification, segmentation where present) and write a report.

    With stderr not a terminal (a log file, CI), progress is written as lines: stage, done/total,
    rate, time left (every 30 s; LOOKALIKE_PROGRESS_INTERVAL=SECONDS to change it)."""
    from lookalike.evaluate.compare import COMPARISON_COLUMNS, comparison_rows
    from lookalike.evaluate.report import run

    progress, update = _progress_bar("evaluating")

    def report(what: str, done: int, total: int) -> None:
        update(done, total, what)

    with progress:
        evaluation = run(
            dataset, config or [], config_file=config_file, data_root=data_root, limit=limit, out=out,
            compare_to=compare, latency_queries=latency_queries, samples=samples, work_dir=work_dir,
            progress=report, relevance=_relevance(relevance),
        )  # fmt: skip
    columns, rows = evaluation.table()
    by_metric = [[column, *(row[i] for row in rows)] for i, column in enumerate(columns) if i]
    title = f"{evaluation.dataset['name']}, {evaluation.dataset['protocol']}"
    console.print(_rows_table(title, ["metric", *(row[0] for row in rows)], by_metric))
    if evaluation.comparison is not None:
        cells = comparison_rows(evaluation.comparison)
        console.print(_rows_table(f"against {compare}", list(COMPARISON_COLUMNS), cells))
    console.print(f"report: {out / 'report.html'} (and report.md, results.json)")


def _relevance(value: str | None) -> Any:
    if value not in (None, "item", "category"):
        raise SettingsError(f"--relevance must be 'item' or 'category', got {value!r}")
    return value


def _rows_table(title: str, columns: list[str], rows: list[list[str]]) -> Any:
    """The table under its title, the title on a line of its own (a table title wraps to the width
    of the table's first column otherwise)."""
    from rich.console import Group
    from rich.text import Text

    table = Table()
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return Group(Text(title, style="italic"), table)


def _product_of(path: Path) -> str:
    """Sample files are named <product>_<number>.jpg."""
    return path.stem.rsplit("_", 1)[0]


@command()
@friendly_errors
def archive(
    index_path: IndexOption,
    photos: Annotated[
        list[Path] | None, typer.Argument(help="Unlabelled photos of the catalogue's products, or folders of them.")
    ] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Drop the photos kept so far first.")] = False,
    clear: Annotated[bool, typer.Option("--clear", help="Drop the archive and stop using it.")] = False,
    use: Annotated[
        bool, typer.Option("--use/--no-use", help="Add the 'archive' re-ranker to the index's rerank.chain.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="The archive's state afterwards, as JSON.")] = False,
    wait: WaitOption = True,
    timeout: TimeoutOption = None,
) -> None:
    """Keep unlabelled photos of your products beside the index (a photo archive, past queries).

    They are never results: the 'archive' re-ranker links a query to the catalogue images of the archive
    photos it resembles, which helps most when the catalogue has one studio image per product and queries
    are phone photos. `train-embedding --kind self --photos DIR` keeps its photos here too. With no
    photos: the archive's size, and (unless --no-use) the re-ranker switched on.
    """
    from lookalike.pipeline import Engine

    with Engine.open(index_path, **lock_options(wait, timeout)) as engine:
        added = None
        if clear:
            removed = engine.clear_archive()
            if not as_json:
                console.print("cleared the photo archive" if removed else "the index has no photo archive")
        elif photos:
            files = [file for path in photos for file in (_photo_files(path) if path.is_dir() else [str(path)])]
            progress, update = _progress_bar("embedding archive photos")
            with progress:
                report = engine.archive_photos(
                    files, replace=replace, use=use, on_stage=lambda stage, done, total: update(done, total)
                )
            added = report["added"]
            if not as_json:
                console.print(f"added {added} photos; the archive holds {report['photos']}", highlight=False)
        elif use and engine.archive_info() is not None:
            engine.use_archive()
        facts = engine.archive_info()
    if as_json:
        sys.stdout.write(json.dumps({"archive": facts, "added": added}) + "\n")
    elif not clear:
        console.print(archive_line(facts) if facts else "the index has no photo archive", highlight=False)


@command()
@friendly_errors
def views(
    index_path: IndexOption,
    count: Annotated[
        int | None, typer.Option("--count", min=1, help="Views per catalogue image (default rerank.views.count).")
    ] = None,
    info: Annotated[
        bool, typer.Option("--info", help="Only show the views' state (with --use/--no-use: switch).")
    ] = False,
    clear: Annotated[bool, typer.Option("--clear", help="Drop the views and stop using them.")] = False,
    use: Annotated[
        bool | None, typer.Option("--use/--no-use", help="Put the 'views' re-ranker in the index's rerank.chain.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The views' state afterwards, as JSON.")] = False,
    wait: WaitOption = True,
    timeout: TimeoutOption = None,
) -> None:
    """Make phone-photo views of every catalogue image (other backgrounds, crops, slants, light, blur, hands),
    embedded by the index's model and kept beside the index.

    The 'views' re-ranker then scores each candidate by the query's best matches among its image and its
    views: it helps most when the catalogue has one studio image per product and queries are phone photos.
    Costs `count` embeddings per catalogue image, once; added images get theirs as they are added, and a
    new embedding makes them all again. Made with the index's head.adapt augmentation settings.
    """
    from lookalike.pipeline import Engine

    with Engine.open(index_path, **lock_options(wait, timeout)) as engine:
        if clear:
            removed = engine.clear_views()
            if not as_json:
                console.print("cleared the catalogue views" if removed else "the index has no catalogue views")
        elif info:
            if use is not None and engine.views_info() is not None:
                engine.use_views(use)
        else:
            progress, update = _progress_bar("making catalogue views")
            with progress:
                engine.make_views(
                    count=count, use=use is not False, on_stage=lambda stage, done, total: update(done, total)
                )
        facts = engine.views_info()
    if as_json:
        sys.stdout.write(json.dumps({"views": facts}) + "\n")
    elif not clear:
        console.print(views_line(facts) if facts else "the index has no catalogue views", highlight=False)


model_app = typer.Typer(
    help="Carry a tuned model between indexes: export it, or re-embed an index with one.",
    no_args_is_help=True,
    cls=_Group,
)
app.add_typer(model_app, name="model")


@model_app.command("export", cls=_Command)
@friendly_errors
def model_export(
    folder: Annotated[Path, typer.Argument(help="A new folder for the model.")],
    index_path: IndexOption,
) -> None:
    """Write the index's model (backbone, fine-tuned tail, learned transform, settings, fingerprint)."""
    from lookalike.pipeline import Engine

    with Engine.open(index_path) as engine:
        record = engine.export_model(folder)
    console.print(f"exported {record['description']} ({record['dim']}-d) to {folder}", highlight=False)


@model_app.command("use", cls=_Command)
@friendly_errors
def model_use(
    model: Annotated[Path, typer.Argument(help="A model folder (`lookalike model export`) or another index.")],
    index_path: IndexOption,
    wait: WaitOption = True,
    timeout: TimeoutOption = None,
) -> None:
    """Re-embed every image of the index with a carried model; queries then use it too."""
    from lookalike.pipeline import Engine

    with Engine.open(index_path, **lock_options(wait, timeout)) as engine:
        progress, update = _progress_bar("re-embedding")
        with progress:
            report = engine.use_model(model, on_stage=lambda stage, done, total: update(done, total))
    console.print(
        f"re-embedded {report['images']} images with {report['model']} ({report['dim']}-d) "
        f"in {report['seconds']:.1f} s",
        highlight=False,
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
