"""Top-k retrieval by dot product over item embeddings: exact numpy search or a ScaNN index.

Both implement ``RetrievalIndex`` (the shape of TFRS ``layers/factorized_top_k.py``: BruteForce
and ScaNN layers behind one interface), so serving and evaluation never care which one they got.

``search`` takes one query (``[dim]``) or a batch (``[n, dim]``) and always answers a batch
``(ids [n, k], scores [n, k])``; a single query goes through ScaNN's single-query path, which
is what an online request does and what the benchmark times.

On disk an index is a directory with ``index.json`` (kind, parameters, shape), ``ids.npy`` and
either ``embeddings.npy`` (brute force) or ScaNN's own serialized assets under ``scann/``,
written with relative paths so the directory can be renamed (the registry moves it from a
staging directory into place).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from kapparec.errors import KapparecError

INDEX_FORMAT = 1
INDEX_JSON = "index.json"
IDS_FILE = "ids.npy"
EMBEDDINGS_FILE = "embeddings.npy"
SCANN_DIR = "scann"

# Below this many items a partitioned, quantized index buys nothing: scoring every item
# exactly is already sub-millisecond, and k-means on a few thousand points gives leaves so
# small that quantization error dominates. ScaNN then scores every item in float32.
BRUTE_FORCE_BELOW = 5_000

# The share of an exact top-k the index must return on the users' own queries (``calibrated``):
# each miss is an item the model ranks in the user's top k that the page never shows.
RECALL_TARGET = 0.99
# ScaNN misses an item in two ways: its leaf was not searched, or its quantized score kept it out
# of the candidates rescored exactly. Searching every leaf leaves only the second, which more
# leaves cannot recover; leaves within this much recall of that bound have found what leaves can.
LEAF_TOLERANCE = 0.005

# Bounds the [queries, items] score matrix of a batched exact search (float32 bytes).
EXACT_BLOCK_BYTES = 256 * 1024 * 1024


class RetrievalIndex(Protocol):
    ids: np.ndarray

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def search_positions(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def save(self, directory: Path) -> None: ...


def as_query_batch(queries: np.ndarray, dim: int) -> np.ndarray:
    """A ``[n, dim]`` float32 C-contiguous batch from one query or many."""
    batch = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    if batch.ndim != 2 or batch.shape[1] != dim:
        raise KapparecError(f"queries must have {dim} dimensions, got shape {np.shape(queries)}")
    return np.ascontiguousarray(batch)


def checked_catalog(embeddings: np.ndarray, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    matrix = np.ascontiguousarray(np.asarray(embeddings, dtype=np.float32))
    id_array = np.asarray(list(ids), dtype=object)
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise KapparecError(f"embeddings must be a non-empty [items, dim] matrix, got shape {matrix.shape}")
    if len(id_array) != matrix.shape[0]:
        raise KapparecError(f"{len(id_array)} ids for {matrix.shape[0]} embeddings")
    if len(set(id_array)) != len(id_array):
        raise KapparecError(f"item ids are not unique ({len(id_array) - len(set(id_array))} duplicates)")
    if not np.isfinite(matrix).all():
        raise KapparecError("embeddings contain NaN or infinite values")
    return matrix, id_array


def top_k_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-k (positions, scores), best first: argpartition then sort only the k."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_scores, order, axis=1)


class BruteForceIndex:
    """Exact search: every item scored by a matmul. The ground truth for recall, and the ceiling."""

    kind = "brute_force"

    def __init__(self, embeddings: np.ndarray, ids: Sequence[str]):
        self.embeddings, self.ids = checked_catalog(embeddings, ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        positions, scores = self.search_positions(queries, k)
        return self.ids[positions], scores

    def search_positions(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``search`` with each hit as its position in ``ids``."""
        batch = as_query_batch(queries, self.embeddings.shape[1])
        rows = max(1, EXACT_BLOCK_BYTES // (4 * len(self.ids)))
        positions, scores = [], []
        for start in range(0, len(batch), rows):
            block_positions, block_scores = top_k_rows(batch[start : start + rows] @ self.embeddings.T, k)
            positions.append(block_positions)
            scores.append(block_scores)
        return np.concatenate(positions), np.concatenate(scores)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / EMBEDDINGS_FILE, self.embeddings)
        write_header(directory, self.kind, self.ids, self.embeddings.shape[1], params=None)


@dataclass(frozen=True)
class ScannParams:
    """How ScaNN partitions and scores; ``for_catalog`` picks them from the catalog size.

    ``num_leaves == 0`` means no partitioning and ``dims_per_block == 0`` means exact float
    scoring (ScaNN's brute force) instead of asymmetric hashing.
    """

    num_leaves: int
    leaves_to_search: int
    training_sample_size: int
    dims_per_block: int
    anisotropic_threshold: float
    reorder_num_neighbors: int

    @classmethod
    def for_catalog(cls, num_items: int, k: int = 10) -> "ScannParams":
        """Parameters by catalog size, following ScaNN's own tuning guide (docs/algorithms.md).

        - ``num_leaves`` ≈ sqrt(n): balances the cost of scoring the centroids against the cost
          of scoring the points in the searched leaves (both ~sqrt(n) per leaf searched).
        - ``leaves_to_search`` ≈ 5% of leaves (at least 8): learned embeddings are clustered, so
          a query's true neighbours concentrate in a few leaves. This is where ``calibrated``
          starts: how clustered a model's embeddings are is known only once they are.
        - ``training_sample_size``: k-means needs a few hundred points per leaf, not the whole
          catalog; 250 per leaf, capped at 250k, keeps a 1M build in seconds.
        - ``dims_per_block`` = 2 with LUT16 asymmetric hashing, ScaNN's recommendation: 16 codes
          per 2 dims is accurate enough that the exact reorder fixes the rest.
        - ``anisotropic_threshold`` = 0.2: anisotropic quantization for dot product (the value
          of ScaNN's examples); it penalises error parallel to the datapoint, which is what
          changes a dot-product ranking.
        - ``reorder_num_neighbors``: AH candidates rescored in float32; max(200, 20k) leaves
          room for the quantization error at the top of the list.

        Catalogs under ``BRUTE_FORCE_BELOW`` items are scored exactly inside ScaNN.
        """
        if num_items < BRUTE_FORCE_BELOW:
            return cls(0, 0, 0, 0, math.nan, 0)
        num_leaves = max(16, round(math.sqrt(num_items)))
        return cls(
            num_leaves=num_leaves,
            leaves_to_search=max(8, math.ceil(0.05 * num_leaves)),
            training_sample_size=min(num_items, 250 * num_leaves, 250_000),
            dims_per_block=2,
            anisotropic_threshold=0.2,
            reorder_num_neighbors=max(200, 20 * k),
        )

    @property
    def exact(self) -> bool:
        return self.num_leaves == 0 and self.dims_per_block == 0


class ScannIndex:
    """A ScaNN searcher over the embeddings (tree partitioning + AH scoring + exact reorder)."""

    kind = "scann"

    def __init__(self, embeddings: np.ndarray, ids: Sequence[str], params: ScannParams | None = None):
        matrix, self.ids = checked_catalog(embeddings, ids)
        self.params = params or ScannParams.for_catalog(len(self.ids))
        self.dim = matrix.shape[1]
        self.searcher = build_searcher(matrix, self.params)

    @classmethod
    def restored(cls, searcher, ids: np.ndarray, params: ScannParams, dim: int) -> "ScannIndex":
        """An index around a searcher loaded from disk (no rebuild)."""
        index = cls.__new__(cls)
        index.searcher, index.ids, index.params, index.dim = searcher, ids, params, dim
        return index

    def searching(self, leaves: int) -> "ScannIndex":
        """This index searching ``leaves`` leaves per query (the same searcher: nothing is rebuilt)."""
        return self.restored(self.searcher, self.ids, replace(self.params, leaves_to_search=leaves), self.dim)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        positions, scores = self.search_positions(queries, k)
        return self.ids[positions], scores

    def search_positions(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``search`` with each hit as its position in ``ids``."""
        single = np.ndim(queries) == 1
        batch = as_query_batch(queries, self.dim)
        k = min(k, len(self.ids))
        pre_reorder = max(self.params.reorder_num_neighbors, k) if self.params.reorder_num_neighbors else -1
        # Passed per query (-1: the searcher's own) so that an index ``searching`` another number
        # of leaves shares the searcher, as calibration and the benchmark's sweep do.
        leaves = self.params.leaves_to_search or -1
        if single:
            positions, scores = self.searcher.search(batch[0], k, pre_reorder, leaves)
            positions, scores = positions[None, :], scores[None, :]
        else:
            # parallel=False: one thread, so queries/s is the per-core figure.
            positions, scores = self.searcher.search_batched(batch, k, pre_reorder, leaves, False, 0)
        return np.asarray(positions), np.asarray(scores)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        assets = directory / SCANN_DIR
        assets.mkdir(parents=True, exist_ok=True)
        # relative_path: the assets list refers to files by name, so the directory may move.
        self.searcher.serialize(str(assets), True)
        write_header(directory, self.kind, self.ids, self.dim, params=asdict(self.params))


def scann_module():
    """``scann_ops_pybind``, imported late: importing scann loads TensorFlow (seconds)."""
    from scann.scann_ops.py import scann_ops_pybind

    return scann_ops_pybind


def build_searcher(matrix: np.ndarray, params: ScannParams):
    builder = scann_module().builder(matrix, 10, "dot_product")
    if params.exact:
        return builder.score_brute_force().build().searcher
    builder = builder.tree(
        num_leaves=params.num_leaves,
        num_leaves_to_search=params.leaves_to_search,
        training_sample_size=params.training_sample_size,
    )
    builder = builder.score_ah(
        params.dims_per_block,
        anisotropic_quantization_threshold=params.anisotropic_threshold,
        training_sample_size=params.training_sample_size,
    )
    # .searcher: the raw pybind object, whose search returns numpy positions (the Python
    # wrapper would map them through a docid list one Python object at a time).
    return builder.reorder(params.reorder_num_neighbors).build().searcher


def write_header(directory: Path, kind: str, ids: np.ndarray, dim: int, params: dict | None) -> None:
    # Fixed-width unicode, not object: loads without pickle.
    np.save(directory / IDS_FILE, ids.astype(str))
    header = {"format": INDEX_FORMAT, "kind": kind, "count": len(ids), "dim": dim, "params": params}
    (directory / INDEX_JSON).write_text(json.dumps(header, indent=2) + "\n")


def read_header(directory: Path) -> dict:
    path = directory / INDEX_JSON
    try:
        header = json.loads(path.read_text())
        if header["format"] != INDEX_FORMAT:
            raise KapparecError(f"index at {directory} has format {header['format']}, this code reads {INDEX_FORMAT}")
        return header
    except FileNotFoundError:
        raise KapparecError(f"no index at {directory} ({INDEX_JSON} missing)") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise KapparecError(f"index at {directory} has an invalid {INDEX_JSON}: {exc}") from None


def load_index(directory: Path) -> RetrievalIndex:
    """The index saved in ``directory`` by ``save``; a damaged directory is a ``KapparecError``."""
    directory = Path(directory)
    header = read_header(directory)
    try:
        ids = np.load(directory / IDS_FILE).astype(object)
        if header["kind"] == BruteForceIndex.kind:
            index = BruteForceIndex(np.load(directory / EMBEDDINGS_FILE), ids)
        elif header["kind"] == ScannIndex.kind:
            searcher = load_searcher(directory / SCANN_DIR)
            index = ScannIndex.restored(searcher, ids, ScannParams(**header["params"]), header["dim"])
        else:
            raise KapparecError(f"index at {directory} has unknown kind {header['kind']!r}")
    except (OSError, ValueError, TypeError) as exc:
        raise KapparecError(f"index at {directory} is damaged: {str(exc).splitlines()[0]}") from None
    if len(index.ids) != header["count"]:
        raise KapparecError(f"index at {directory} has {len(index.ids)} ids, {INDEX_JSON} says {header['count']}")
    return index


def load_searcher(assets: Path):
    pybind = scann_module()
    if not (assets / "scann_assets.pbtxt").is_file():
        raise KapparecError(f"ScaNN assets missing at {assets}")
    return pybind.load_searcher(str(assets)).searcher


# Two exact scores this close are one score: float32 sums in another order differ by about this.
TIE_TOLERANCE = 1e-6


def recall_against_exact(index: RetrievalIndex, exact: BruteForceIndex, queries: np.ndarray, k: int = 10) -> float:
    """Mean over queries of the share of the approximate top-k that belongs in an exact top-k.

    An item whose exact score ties the exact k-th belongs: which of tied items comes k-th is
    arbitrary (items with the same features embed alike), so set overlap would count a correct
    answer as a miss.
    """
    approx_positions, _ = index.search_positions(queries, k)
    _, exact_scores = exact.search_positions(queries, k)
    batch = as_query_batch(queries, exact.embeddings.shape[1])
    approx_scores = np.einsum("qd,qkd->qk", batch, exact.embeddings[approx_positions])
    return float(np.mean(approx_scores >= exact_scores[:, -1:] - TIE_TOLERANCE))


def calibrated(index: RetrievalIndex, exact: BruteForceIndex, queries: np.ndarray, k: int = 10,
               target: float = RECALL_TARGET) -> tuple[RetrievalIndex, list[dict]]:
    """``index`` searching the fewest leaves, doubling from its own, whose recall@k against ``exact``
    on ``queries`` reaches ``target``, or comes within ``LEAF_TOLERANCE`` of searching every leaf
    when the quantizer keeps even that below ``target``; and the recall of every leaf count tried,
    fewest leaves first (every leaf is always tried: it is the bound).

    Measured rather than set by catalog size because the leaves a query's neighbours fall in
    depend on the embeddings: a model whose embeddings concatenate several members' spreads them
    over more leaves than one member does. Bounded by every leaf's recall because a query's cost
    grows with the leaves it searches: past that bound, doubling them buys the cost and not the
    items. The queries should be the users' own, as serving sees them; an exact index needs no
    calibration and is returned as it is."""
    if not isinstance(index, ScannIndex) or index.params.num_leaves == 0 or len(queries) == 0:
        return index, []
    bound = recall_against_exact(index.searching(index.params.num_leaves), exact, queries, k)
    goal = min(target, bound - LEAF_TOLERANCE)
    tried = {index.params.num_leaves: bound}
    leaves = index.params.leaves_to_search
    while leaves not in tried:
        tried[leaves] = recall_against_exact(index.searching(leaves), exact, queries, k)
        if tried[leaves] >= goal:
            break
        leaves = min(2 * leaves, index.params.num_leaves)
    return index.searching(leaves), [{"leaves": n, f"recall@{k}": round(recall, 4)} for n, recall in sorted(tried.items())]
