"""FAISS's OpenMP threads for one search.

OpenMP keeps its thread count per calling thread, so a search sets it around its own FAISS calls and
puts it back. Why it matters: a one-photo search over a small partition does microseconds of work,
but entering an OpenMP region wakes a team of threads that spin while they wait; with several
searches side by side (a server's thread pool) or a busy machine, those teams fight over the cores.
Measured on the 60-image sample index with 7 partitions on a loaded 2-core VM: 50 ms of CPU per
query with FAISS's default (one thread per core), 14 ms with one thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

# a search comparing fewer query x vector pairs than this runs on one thread: at 1280-d it is a few
# milliseconds of work at most, less than what waking a thread team costs on a loaded machine
PARALLEL_WORK = 1 << 20


def threads_for(queries: int, vectors: int) -> int | None:
    """The OpenMP threads for a search of `queries` over `vectors`: one for a small search, else None
    (what the calling thread has: FAISS's default of one per core, or what `Engine.open(threads=)` set)."""
    return 1 if queries * vectors < PARALLEL_WORK else None


@contextmanager
def faiss_threads(count: int | None) -> Iterator[None]:
    """Run the block's FAISS calls (made from this thread) on `count` OpenMP threads; None: unchanged."""
    if count is None:
        yield
        return
    import faiss

    previous = faiss.omp_get_max_threads()
    if previous == count:
        yield
        return
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)
