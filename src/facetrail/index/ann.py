"""Approximate tiers of the vector index, and the measurement that decides whether one is used.

Tiers, by bytes of RAM per face (128-d descriptors; docs/index.md has the arithmetic):

- ``flat``: exact search over float32 vectors (``IndexIDMap2(IndexFlatL2)``), 4 x dim + 8.
- ``pq``:   IVF lists over an HNSW coarse quantizer, product-quantizer codes of ``PQ_M``
  4-bit sub-quantizers scanned with FAISS's SIMD "fast scan": ``PQ_M`` / 2 + 8 = 40. The
  default approximate tier: measured the fastest at a given recall (bench/README.md).
- ``sq8``:  the same lists with 8-bit scalar codes, dim + 8 = 136. More precise codes, but
  each probed list costs about 5x more to scan than with fast-scan PQ; chosen only by
  ``index_codes = "sq8"``, and when it fits the memory budget.

An approximate tier only produces a shortlist. Every shortlist is re-ranked exactly against the
float32 vectors (memory-mapped from a file derived from the store, see ``vectorfile.py``), with
the same FAISS kernel as the flat tier, so the distances, and hence the scores, of what it
returns are exact; only a true neighbour missing from the shortlist can make a result differ.
How often that happens is measured when the index is built (``tune``): an index is used only
if the lower confidence bound of its recall@10 against exact search (the measured mean less
``RECALL_Z`` standard errors) reaches the floor.

Everything is seeded and the coarse quantizer is built on one thread, so the same store gives
the same index, byte for byte.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from facetrail.index.vectorfile import VectorFile
from facetrail.settings import Settings

TIERS = ("flat", "sq8", "pq")
DESCRIPTIONS = {
    "flat": "IndexIDMap2(IndexFlatL2): exact",
    "sq8": "IVF{nlist}_HNSW32,SQ8 + exact re-rank",
    "pq": "IVF{nlist}_HNSW32,PQ{m}x4fs + exact re-rank",
}
SEED = 1234
HNSW_M = 32
"""Links per node of the HNSW graph over the list centroids."""
PQ_M = 64
"""4-bit sub-quantizers of the ``pq`` tier (2 dimensions each): 32 bytes per face."""
TRAIN_PER_LIST = 40
"""Training vectors per IVF list (FAISS asks for at least 39)."""
MIN_TRAIN = 20_000
"""At least this many training vectors when the gallery has them (PQ codebooks need ~10k)."""
KMEANS_ITERATIONS = 10
RECALL_K = 10
RECALL_NOISE = 0.04
"""Per-dimension std-dev of the noise added to stored vectors to make recall queries: a noise
vector of norm ~0.45 for 128-d, the median distance from a real face to its nearest photo of
the same person (0.47 on faces-small). 0.03 (norm 0.34) gave queries easier than new photos:
a recall of 0.993 at build time, 0.987 on the benchmark's fresh photos (bench/README.md)."""
RECALL_Z = 2.0
"""Standard errors between the measured recall@10 and the bound that must reach the floor.
500 queries measure recall with a standard error of ~0.0015 near 0.99: tuning to the mean
alone chose settings that measured 0.9902 at build time and 0.9865 on fresh photos at 1M
faces (bench/README.md). The error is taken over per-query recalls, so that neighbours lost
together (one badly placed query) count as what they are: one query."""
SHORTLIST_FACTORS = (2, 4, 8, 16, 32)
"""Shortlist sizes tried, as multiples of k."""
ADD_BATCH = 65_536
WIDEN_BELOW = 0.1
"""Share of the gallery under which a filtered search probes more lists (``filtered_tuning``)."""
BITMAP_CHUNK = 1 << 23
"""Face ids marked at a time when a filter's bitmap is built (a bool mask this long)."""


@dataclass(frozen=True)
class IndexPolicy:
    """When to leave exact search, and how good an approximate index must be (see Settings)."""

    exact_max_faces: int = 100_000
    memory_bytes: int = 8192 << 20
    recall_floor: float = 0.99
    recall_queries: int = 500
    max_nprobe: int = 1024
    regrow_factor: float = 2.0
    codes: str = "pq"

    @classmethod
    def from_settings(cls, settings: Settings) -> IndexPolicy:
        return cls(
            exact_max_faces=settings.index_exact_max_faces,
            memory_bytes=int(settings.index_memory_mb * 2**20),
            recall_floor=settings.index_recall_floor,
            recall_queries=settings.index_recall_queries,
            max_nprobe=settings.index_max_nprobe,
            regrow_factor=settings.index_regrow_factor,
            codes=settings.index_codes,
        )


def bytes_per_face(tier: str, dim: int) -> int:
    """Planned RAM per face of a tier: codes + the 8-byte face id (the coarse quantizer and
    the float32 re-rank file are extra; docs/index.md)."""
    code = {"flat": 4 * dim, "sq8": dim, "pq": PQ_M // 2}[tier]
    return code + 8


def choose_tier(faces: int, dim: int, policy: IndexPolicy) -> str:
    """Exact search up to ``exact_max_faces`` if it fits the memory budget; above, the
    approximate tier of ``policy.codes`` (``pq`` by default), ``sq8`` only if it fits the
    budget, else ``pq``, the smallest."""
    budget = policy.memory_bytes
    if faces <= policy.exact_max_faces and faces * bytes_per_face("flat", dim) <= budget:
        return "flat"
    if policy.codes == "sq8" and faces * bytes_per_face("sq8", dim) <= budget:
        return "sq8"
    return "pq"


def list_count(faces: int) -> int:
    """IVF lists: the power of two nearest sqrt(faces), at most faces / 39 (k-means needs 39
    points per centroid), at least 1.

    Measured at 1M faces (bench/README.md): 1,024 lists probed 384 at a time find the true
    top 10 of fresh photos with recall 0.997 in the time 2,048 lists probed 512 at a time
    reach 0.993. The 10 nearest faces are mostly strangers spread over many lists, so a
    search must scan a share of the gallery whatever the lists; fewer, larger lists lower
    that share more than they cost."""
    wanted = 2 ** round(math.log2(max(math.sqrt(max(faces, 1)), 1)))
    cap = 2 ** int(math.log2(faces // 39)) if faces >= 39 else 1
    return max(1, min(wanted, cap))


@dataclass(frozen=True)
class Tuning:
    """How an approximate index is searched: lists probed, HNSW breadth, shortlist size."""

    nprobe: int
    ef_search: int
    shortlist_factor: int

    def shortlist(self, k: int) -> int:
        return k * self.shortlist_factor


@dataclass(frozen=True)
class Measured:
    """recall@k of the whole search (shortlist + re-rank) against exact search: the mean
    over the queries, and its lower confidence bound (mean - ``RECALL_Z`` standard errors),
    which is what must reach the floor."""

    tuning: Tuning
    recall: float
    lower: float
    queries: int
    k: int


def measure(tuning: Tuning, found: np.ndarray, truth: np.ndarray) -> Measured:
    """recall@k of ``found`` against ``truth`` (face ids, one row per query), with its lower
    confidence bound from the spread of the per-query recalls."""
    m, k = truth.shape
    per_query = np.array([len(np.intersect1d(f, t)) for f, t in zip(found, truth, strict=True)],
                         np.float64) / k
    mean = float(per_query.mean())
    error = float(per_query.std(ddof=1)) / math.sqrt(m) if m > 1 else 0.0
    return Measured(tuning, round(mean, 4), round(mean - RECALL_Z * error, 4), m, k)


@contextmanager
def one_thread(faiss: Any) -> Iterator[None]:
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


def build(tier: str, vectors: VectorFile, faiss: Any, nlist: int | None = None) -> Any:
    """An IVF index over every row of ``vectors`` (face ids as labels), trained on a seeded
    sample, with ``nlist`` lists (``list_count`` by default). The HNSW quantizer is filled on
    one thread: its graph then depends on nothing but the centroids."""
    if tier not in ("sq8", "pq"):
        raise ValueError(f"not an approximate tier: {tier!r}")
    n, dim = vectors.rows, vectors.dim
    nlist = nlist or list_count(n)
    take = min(n, max(TRAIN_PER_LIST * nlist, MIN_TRAIN))
    rng = np.random.default_rng(SEED)
    rows = np.sort(rng.choice(n, take, replace=False)) if take < n else np.arange(n)
    train = np.ascontiguousarray(vectors.at(rows))
    kmeans = faiss.Kmeans(dim, nlist, niter=KMEANS_ITERATIONS, seed=SEED,
                          max_points_per_centroid=take)
    kmeans.train(train)
    quantizer = faiss.IndexHNSWFlat(dim, HNSW_M)
    with one_thread(faiss):
        quantizer.add(kmeans.centroids)
    if tier == "sq8":
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_L2
        )
    else:
        index = faiss.IndexIVFPQFastScan(quantizer, dim, nlist, PQ_M, 4)
        index.pq.cp.seed = SEED
        # Only galleries under 16 x 39 faces train on fewer points than FAISS asks for;
        # its notice about it would be noise.
        index.pq.cp.min_points_per_centroid = 1
    quantizer.this.disown()
    index.own_fields = True
    index.train(train)
    for start in range(0, n, ADD_BATCH):
        stop = min(n, start + ADD_BATCH)
        index.add_with_ids(np.ascontiguousarray(vectors.at(slice(start, stop))),
                           np.ascontiguousarray(vectors.ids[start:stop]))
    return index


def list_sizes(index: Any) -> list[int]:
    """The length of each IVF list."""
    lists = index.invlists
    return [lists.list_size(i) for i in range(index.nlist)]


def remove_ids(index: Any, ids: np.ndarray, faiss: Any, sizes: list[int] | None = None) -> int:
    """Remove faces from an IVF index by face id; returns how many it held. ``sizes``: the
    lists' lengths (``list_sizes``), if known.

    FAISS's fast-scan lists pack 32 codes per block, a code's 4-bit halves interleaved over
    the block, and a removal moves the last codes into the holes but leaves the old bits of
    the slots it frees. A later add ORs new codes into those slots, so a face added after a
    removal could get a corrupt code and be missed by every search (FAISS 1.15.1; 8 of 100
    faces added after removing 10 from a 600-face index). The freed slots are cleared here."""
    fast_scan = isinstance(index, faiss.IndexIVFFastScan)
    before = (sizes if sizes is not None else list_sizes(index)) if fast_scan else []
    removed = int(index.remove_ids(faiss.IDSelectorBatch(ids)))
    if not fast_scan or not removed:
        return removed
    lists = index.invlists
    blocks = faiss.downcast_InvertedLists(lists)
    packer = blocks.get_packer() if hasattr(blocks, "get_packer") else blocks.packer
    zero = np.zeros(packer.code_size, np.uint8)
    per_block = blocks.n_per_block
    for i, size in enumerate(before):
        now = lists.list_size(i)
        # Slots past the last block still allocated were released and come back zeroed.
        end = min(size, -(-now // per_block) * per_block)
        for slot in range(now, end):
            packer.pack_1_c(faiss.swig_ptr(zero), slot, lists.get_codes(i))
    return removed


def describe(index: Any, faiss: Any) -> str:
    """A short human name of an index's structure."""
    if not hasattr(index, "nlist"):
        return DESCRIPTIONS["flat"]
    if isinstance(index, faiss.IndexIVFPQFastScan):
        return DESCRIPTIONS["pq"].format(nlist=index.nlist, m=index.pq.M)
    return DESCRIPTIONS["sq8"].format(nlist=index.nlist)


def memory_bytes(index: Any, faiss: Any) -> int:
    """RAM held by the index structures: codes and ids of every face, plus the coarse
    quantizer's centroids and graph. The flat tier's id map adds a hash table not counted."""
    if not hasattr(index, "nlist"):
        return int(index.ntotal) * (4 * index.d + 8)
    lists = int(index.ntotal) * (int(index.code_size) + 8)
    quantizer = faiss.downcast_index(index.quantizer)
    graph = quantizer.hnsw.neighbors.size() * 4 + quantizer.hnsw.offsets.size() * 8
    return lists + int(quantizer.ntotal) * 4 * index.d + int(graph)


def search_params(tuning: Tuning, faiss: Any, selector: Any = None) -> Any:
    """IVF search parameters; ``selector`` (``allowed_selector``) limits the faces scanned
    in the probed lists, not the lists probed."""
    quantizer = faiss.SearchParametersHNSW(efSearch=tuning.ef_search)
    params = faiss.SearchParametersIVF(nprobe=tuning.nprobe, quantizer_params=quantizer)
    params.referenced_quantizer = quantizer  # keep the C++ object alive with its owner
    if selector is not None:
        params.sel = selector
        params.referenced_selector = selector
    return params


def allowed_ids(allowed: np.ndarray | None) -> np.ndarray | None:
    """``allowed`` as a sorted int64 array without repeats (None stays None)."""
    if allowed is None:
        return None
    ids = np.asarray(allowed, dtype=np.int64).ravel()
    if len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1])):
        ids = np.unique(ids)
    return ids


def allowed_selector(allowed: np.ndarray, faiss: Any) -> Any:
    """A FAISS ``IDSelectorBitmap`` over face ids (bit ``id`` set for each allowed id; sorted,
    non-negative ids). It costs max(id) / 8 bytes and a bit test per face scanned: to build,
    7-10x less than an ``IDSelectorBatch`` (a hash set), and cheaper per face scanned too
    (docs/index.md)."""
    top = int(allowed[-1]) + 1 if len(allowed) else 1
    bits = np.zeros((top + 7) // 8, np.uint8)
    for low in range(0, top, BITMAP_CHUNK):
        high = min(top, low + BITMAP_CHUNK)
        part = allowed[np.searchsorted(allowed, low) : np.searchsorted(allowed, high)]
        mask = np.zeros(high - low, bool)
        mask[part - low] = True
        bits[low // 8 : low // 8 + (high - low + 7) // 8] = np.packbits(mask, bitorder="little")
    selector = faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits))
    selector.referenced_bits = bits  # the selector reads the array; keep it alive with it
    return selector


def filtered_tuning(tuning: Tuning, share: float, nlist: int) -> Tuning:
    """The search settings for a search limited to ``share`` of the gallery. The true
    neighbours among the allowed faces lie farther out than the unfiltered ones, in more
    lists: under ``WIDEN_BELOW`` of the gallery, nprobe grows by sqrt(WIDEN_BELOW / share)
    (at most every list), with the quantizer's breadth to match. Measured at 1M faces
    (docs/index.md): with the tuned nprobe unchanged, recall@10 fell from 0.9985 at 10 %
    allowed to 0.9975 at 5 % and 0.994 at 2 %; widened, 1.0 at 5 % and 2 %."""
    if share >= WIDEN_BELOW:
        return tuning
    wider = tuning.nprobe * math.sqrt(WIDEN_BELOW / max(share, 1e-12))
    nprobe = min(nlist, math.ceil(wider))
    return Tuning(nprobe, max(tuning.ef_search, 2 * nprobe), tuning.shortlist_factor)


def exact_among(
    candidates: np.ndarray, queries: np.ndarray, vectors: VectorFile, k: int, faiss: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Exact search over the given face ids only (sorted, held by the index), by their
    float32 vectors: what a filtered search does when few faces are allowed."""
    approx = np.broadcast_to(candidates, (len(queries), len(candidates)))
    return rerank(approx, queries, vectors, k, faiss)


def search(
    index: Any, vectors: VectorFile, queries: np.ndarray, k: int, tuning: Tuning, faiss: Any,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(squared distances, face ids), each (n, k), exact for every id returned. A query whose
    probed lists hold fewer than k faces (allowed faces, when ``allowed`` limits the search
    to those ids: sorted, see ``allowed_ids``) is searched again over every list, so that
    fewer than k results always means there are fewer than k to find."""
    wanted = min(k, int(index.ntotal))
    selector = None
    if allowed is not None:
        wanted = min(wanted, len(allowed))
        selector = allowed_selector(allowed, faiss)
        tuning = filtered_tuning(tuning, len(allowed) / max(int(index.ntotal), 1), index.nlist)
    shortlist = min(max(tuning.shortlist(k), k), int(index.ntotal))
    _, approx = index.search(queries, shortlist, params=search_params(tuning, faiss, selector))
    short = np.flatnonzero((approx >= 0).sum(axis=1) < wanted)
    if len(short):
        everything = Tuning(index.nlist, max(tuning.ef_search, index.nlist),
                            tuning.shortlist_factor)
        _, approx[short] = index.search(
            np.ascontiguousarray(queries[short]), shortlist,
            params=search_params(everything, faiss, selector),
        )
    return rerank(approx, queries, vectors, k, faiss)


def rerank(
    approx: np.ndarray, queries: np.ndarray, vectors: VectorFile, k: int, faiss: Any
) -> tuple[np.ndarray, np.ndarray]:
    """The exact top ``k`` of each shortlist row (face ids, -1 for none), by the float32
    vectors. One query at a time, as the flat tier searches single queries, so that the
    distances are the flat tier's to the bit."""
    n = len(queries)
    distances = np.full((n, k), np.inf, np.float32)
    ids = np.full((n, k), -1, np.int64)
    for q in range(n):
        candidates = approx[q][approx[q] >= 0]
        if not len(candidates):
            continue
        got = min(k, len(candidates))
        d, i = faiss.knn(queries[q : q + 1], vectors.lookup(candidates), got)
        distances[q, :got], ids[q, :got] = d[0], candidates[i[0]]
    return distances, ids


def tune(index: Any, vectors: VectorFile, policy: IndexPolicy, faiss: Any) -> Measured:
    """The cheapest search settings whose recall@10 against exact search reaches the floor
    with margin (its lower confidence bound does, see ``Measured``), or the best ones found
    (under the floor) when none does.

    Queries are stored vectors (a seeded sample) plus Gaussian noise of ``RECALL_NOISE`` per
    dimension; the truth is exact search over every stored vector. Probing fewer lists is
    what makes a search fast, so nprobe is raised only when no shortlist size is enough."""
    n = vectors.rows
    queries = recall_queries(vectors, policy.recall_queries)
    k = min(RECALL_K, n)
    truth = exact_ids(queries, vectors, k, faiss)
    best: Measured | None = None
    longest = SHORTLIST_FACTORS[-1]
    for nprobe in probe_counts(index.nlist, policy.max_nprobe):
        tuning = Tuning(nprobe, max(2 * nprobe, 16), longest)
        _, approx = index.search(queries, min(tuning.shortlist(k), n),
                                 params=search_params(tuning, faiss))
        for factor in SHORTLIST_FACTORS:
            _, found = rerank(approx[:, : k * factor], queries, vectors, k, faiss)
            measured = measure(Tuning(nprobe, tuning.ef_search, factor), found, truth)
            if best is None or measured.lower > best.lower:
                best = measured
            if measured.lower >= policy.recall_floor:
                return measured
    assert best is not None
    return best


def recall_queries(vectors: VectorFile, count: int) -> np.ndarray:
    """``count`` (at most every) stored vectors, a seeded sample, plus Gaussian noise of
    ``RECALL_NOISE`` per dimension: the queries recall is measured on."""
    n, dim = vectors.rows, vectors.dim
    rng = np.random.default_rng(SEED + 1)
    m = min(count, n)
    rows = np.sort(rng.choice(n, m, replace=False))
    noise = rng.normal(0.0, RECALL_NOISE, (m, dim)).astype(np.float32)
    return np.ascontiguousarray(vectors.at(rows) + noise, dtype=np.float32)


def probe_counts(nlist: int, cap: int) -> list[int]:
    """1, 2, 4, 6, 8, 12, 16, 24, ... (steps of about 1.5x) up to min(nlist, cap), ending
    with that bound itself."""
    top = max(1, min(nlist, cap))
    counts = sorted({c for i in range(int(math.log2(top)) + 1)
                     for c in (2**i, 3 * 2**i // 2) if c <= top})
    return counts if counts[-1] == top else [*counts, top]


def exact_ids(queries: np.ndarray, vectors: VectorFile, k: int, faiss: Any) -> np.ndarray:
    """The true top-k face ids of each query, by brute force over the vector file in chunks."""
    best_d = np.full((len(queries), k), np.inf, np.float32)
    best_i = np.full((len(queries), k), -1, np.int64)
    for start in range(0, vectors.rows, 1_000_000):
        chunk = np.ascontiguousarray(vectors.at(slice(start, start + 1_000_000)))
        d, i = faiss.knn(queries, chunk, min(k, len(chunk)))
        merged_d = np.concatenate([best_d, d], axis=1)
        merged_i = np.concatenate([best_i, vectors.ids[start + i]], axis=1)
        order = np.argsort(merged_d, axis=1, kind="stable")[:, :k]
        best_d = np.take_along_axis(merged_d, order, axis=1)
        best_i = np.take_along_axis(merged_i, order, axis=1)
    return best_i
