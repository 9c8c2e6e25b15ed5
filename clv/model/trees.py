"""Fitted scikit-learn tree ensembles laid out as flat arrays, for one-row speed and path attributions.

scikit-learn's `predict` costs a few hundred microseconds of input checks per call, whatever the
number of rows; a served prediction needs several ensembles (point and interval) and its drivers
in well under a millisecond, and batch scoring takes parts of 25,000 rows through 700 trees.
`CompiledForest` walks every tree for one row or for many in one compiled loop (numba), which adds
each leaf's value and credits as it reaches them: no matrix of leaf ids is made. Tests check the
results against scikit-learn's `predict`.

Attributions are path attributions (Saabas; shap's `TreeExplainer(..., approximate=True)`): each
split on a row's path credits its feature with the change in the node mean it causes, so the bias
plus the attributions equals the prediction exactly.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor
from sklearn.impute import SimpleImputer

CHUNK_ROWS = 8192  # rows evaluated at once: chunks share two threads
BLOCK_ROWS = 64  # rows the walk takes through every tree before the next: their inputs and sums stay in the cache
MAX_DEPTH = 12  # the walk pads every tree to the deepest one's 2^depth leaves: beyond this, too many
# two threads, unless the process is given fewer: a Dask worker is (OMP_NUM_THREADS=1), and its
# cores are busy with the other workers' parts
THREADS = max(1, min(2, int(os.environ.get("OMP_NUM_THREADS", "2"))))


def _walk_rows(
    Z, trees, split_feature, split_threshold, leaf_value, tree_ensemble, raw, first_credited, credit_feature, credit,
    contributions,
):  # fmt: skip
    """Add to `raw` (rows, ensembles) the leaf value each row reaches in each of `trees`, in tree order; and to
    `contributions` (rows, features) the path credits of each credited tree, the `credit.shape[0]` trees from
    `first_credited` on (none when `credit` is empty). A tree is a complete binary tree in breadth-first
    slots: slot k's children are 2k + 1, where the row's input <= the split's threshold, and 2k + 2."""
    inner = split_feature.shape[1]
    leaf = np.empty(BLOCK_ROWS, np.int64)
    for start in range(0, Z.shape[0], BLOCK_ROWS):
        stop = min(Z.shape[0], start + BLOCK_ROWS)
        for tree in trees:
            feature, threshold = split_feature[tree], split_threshold[tree]
            row = start
            while row + 4 <= stop:  # four rows' walks side by side: none waits on another's reads
                a, b, c, d = Z[row], Z[row + 1], Z[row + 2], Z[row + 3]
                ka = kb = kc = kd = 0
                while ka < inner:
                    ka = 2 * ka + 2 - np.int64(a[feature[ka]] <= threshold[ka])
                    kb = 2 * kb + 2 - np.int64(b[feature[kb]] <= threshold[kb])
                    kc = 2 * kc + 2 - np.int64(c[feature[kc]] <= threshold[kc])
                    kd = 2 * kd + 2 - np.int64(d[feature[kd]] <= threshold[kd])
                at = row - start
                leaf[at], leaf[at + 1], leaf[at + 2], leaf[at + 3] = ka - inner, kb - inner, kc - inner, kd - inner
                row += 4
            for rest in range(row, stop):
                z, k = Z[rest], 0
                while k < inner:
                    k = 2 * k + 2 - np.int64(z[feature[k]] <= threshold[k])
                leaf[rest - start] = k - inner
            ensemble, values = tree_ensemble[tree], leaf_value[tree]
            for row in range(start, stop):
                raw[row, ensemble] += values[leaf[row - start]]
            if 0 <= tree - first_credited < credit.shape[0]:
                features, credits = credit_feature[tree - first_credited], credit[tree - first_credited]
                for row in range(start, stop):
                    slot = leaf[row - start]
                    for j in range(features.shape[1]):
                        contributions[row, features[slot, j]] += credits[slot, j]


@functools.cache
def _walk() -> Callable:
    """The walk compiled by numba, imported here: a process that loads a model and walks none (the client of a
    cluster) pays neither (about 0.4 s). Kept in numba's cache (beside this file, else the user's cache folder, or
    NUMBA_CACHE_DIR) for the next process; compiled afresh in each process where no folder can be written."""
    import numba

    try:
        return numba.njit(nogil=True, cache=True)(_walk_rows)
    except RuntimeError:  # numba found no folder it may write its cache into
        return numba.njit(nogil=True)(_walk_rows)


class CompiledForest:
    """Several gradient-boosted ensembles over the same imputed inputs, as one set of node arrays."""

    def __init__(
        self,
        imputer: SimpleImputer,
        ensembles: list[GradientBoostingRegressor | GradientBoostingClassifier],
        n_features: int,
        attribute: int = 0,
    ) -> None:
        self.fill = np.asarray(imputer.statistics_, np.float64)
        self.indicator = (
            np.asarray(imputer.indicator_.features_, np.int64) if imputer.indicator_ is not None else np.zeros(0, int)
        )
        self.n_features = n_features
        self.n_inputs = n_features + self.indicator.size
        # an indicator column's credit goes to the feature it flags
        self.input_owner = np.concatenate([np.arange(n_features), self.indicator])
        probe = np.zeros((1, self.n_inputs), np.float32)
        feature, threshold, left, right, value, roots, owner, depth = [], [], [], [], [], [], [], []
        self.init = np.zeros(len(ensembles))
        offset = 0
        for e, model in enumerate(ensembles):
            lr = model.learning_rate
            raw = model.decision_function(probe) if hasattr(model, "predict_proba") else model.predict(probe)
            total = 0.0
            for est in model.estimators_[:, 0]:
                tree = est.tree_
                leaf = tree.children_left == -1
                ids = np.arange(tree.node_count)
                feature.append(np.where(leaf, 0, tree.feature))
                threshold.append(np.where(leaf, np.inf, tree.threshold))
                left.append(np.where(leaf, ids, tree.children_left) + offset)
                right.append(np.where(leaf, ids, tree.children_right) + offset)
                value.append(lr * tree.value[:, 0, 0])
                roots.append(offset)
                owner.append(e)
                depth.append(tree.max_depth)
                total += lr * tree.predict(probe)[0, 0]
                offset += tree.node_count
            self.init[e] = float(np.ravel(raw)[0]) - total
        self.feature = np.concatenate(feature)
        self.threshold = np.concatenate(threshold)
        self.left = np.concatenate(left)
        self.right = np.concatenate(right)
        self.value = np.concatenate(value)
        self.roots = np.array(roots)
        self.tree_ensemble = np.array(owner)
        self.tree_depth = np.array(depth, np.int64)
        self.n_ensembles = len(ensembles)
        self._prepare(attribute)

    # the node arrays a saved model keeps (clv.model.persistence): the forest is rebuilt from them alone
    ARRAYS = (
        "fill", "indicator", "feature", "threshold", "left", "right", "value", "roots", "tree_ensemble", "init",
        "tree_depth",
    )  # fmt: skip

    def to_arrays(self) -> dict[str, np.ndarray]:
        """What `from_arrays` rebuilds this forest from: plain numbers, nothing that runs."""
        return {name: getattr(self, name) for name in self.ARRAYS}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], n_features: int, attribute: int) -> CompiledForest:
        """The forest `to_arrays` described, checked node by node first (a child after its parent, in its own tree;
        a feature among the inputs), so a changed file is refused here rather than walked out of bounds."""
        forest = cls.__new__(cls)
        missing = [name for name in cls.ARRAYS if name not in arrays]
        if missing:
            raise ValueError(f"the forest lacks the arrays {missing}")
        flat = [name for name in cls.ARRAYS if np.ndim(arrays[name]) != 1]
        if flat:
            raise ValueError(f"the forest's arrays {flat} are not one-dimensional")
        forest.fill = np.asarray(arrays["fill"], np.float64)
        forest.indicator = np.asarray(arrays["indicator"], np.int64)
        forest.feature = np.asarray(arrays["feature"], np.int64)
        forest.threshold = np.asarray(arrays["threshold"], np.float64)
        forest.left = np.asarray(arrays["left"], np.int64)
        forest.right = np.asarray(arrays["right"], np.int64)
        forest.value = np.asarray(arrays["value"], np.float64)
        forest.roots = np.asarray(arrays["roots"], np.int64)
        forest.tree_ensemble = np.asarray(arrays["tree_ensemble"], np.int64)
        forest.init = np.asarray(arrays["init"], np.float64)
        forest.tree_depth = np.asarray(arrays["tree_depth"], np.int64)
        forest.n_features = n_features
        forest.n_inputs = n_features + forest.indicator.size
        forest.input_owner = np.concatenate([np.arange(n_features), forest.indicator])
        forest.n_ensembles = forest.init.size
        forest._check(attribute)
        forest._prepare(attribute)
        return forest

    def _check(self, attribute: int) -> None:
        n_nodes = self.value.size
        ids = np.arange(n_nodes)
        depth = self.tree_depth
        if self.fill.size != self.n_features or not np.isin(self.indicator, np.arange(self.n_features)).all():
            raise ValueError(f"the imputer does not fit {self.n_features} features")
        if any(getattr(self, name).size != n_nodes for name in ("feature", "threshold", "left", "right")):
            raise ValueError("the node arrays differ in length")
        if not (self.roots.size == self.tree_ensemble.size == depth.size > 0) or self.roots[0] != 0:
            raise ValueError("the tree arrays differ in length")
        if (np.diff(self.roots) < 1).any() or self.roots[-1] >= n_nodes or (depth < 0).any():
            raise ValueError("the trees' first nodes are not in order")
        if (np.diff(self.tree_ensemble) < 0).any() or not np.array_equal(
            np.unique(self.tree_ensemble), np.arange(self.n_ensembles)
        ):
            raise ValueError("the trees' ensembles are not in order")
        if not 0 <= attribute < self.n_ensembles:
            raise ValueError(f"no ensemble {attribute} to attribute")
        end = np.append(self.roots[1:], n_nodes)[np.searchsorted(self.roots, ids, side="right") - 1]
        leaf = self.left == ids
        children = (self.left > ids) & (self.right > ids) & (self.left < end) & (self.right < end)
        inputs = (self.feature >= 0) & (self.feature < self.n_inputs)
        if not (np.where(leaf, self.right == ids, children & inputs)).all():
            raise ValueError("a node points outside its tree, backwards, or at no input")

    def _prepare(self, attribute: int) -> None:
        """The walk's complete trees and the attributed ensemble's credits, from the node arrays."""
        self.first_tree = np.searchsorted(self.tree_ensemble, np.arange(self.n_ensembles))
        self.every_tree = np.arange(self.roots.size)
        self.depth = int(self.tree_depth.max())
        if self.depth > MAX_DEPTH:
            raise ValueError(f"a tree is {self.depth} levels deep: the walk takes at most {MAX_DEPTH}")
        self._attributions(attribute, self._layout())

    def warm(self) -> None:
        """Walk one row, so that numba compiles the walk (or reads it from its cache) now rather than at a first
        request: what the service does as it starts serving a model."""
        self.evaluate(np.zeros((1, self.n_features)))

    def _layout(self) -> np.ndarray:
        """Every tree as a complete binary tree of the deepest tree's depth, in breadth-first slots (the walk's
        layout): a node's split at its slot, its children at 2k + 1 and 2k + 2; a leaf above the last level splits
        at +inf, sending every row left down copies of itself. A row then takes the same number of steps in every
        tree, and finds its child by arithmetic rather than by reading a pointer. Returns each leaf slot's node."""
        trees = self.roots.size
        internal = self.left != np.arange(self.value.size)
        nodes = self.roots.reshape(-1, 1)
        feature, threshold = [], []
        for _ in range(self.depth):
            split = internal[nodes]
            feature.append(np.where(split, self.feature[nodes], 0))
            threshold.append(np.where(split, self.threshold[nodes], np.inf))
            below = np.empty((trees, 2 * nodes.shape[1]), np.int64)
            below[:, 0::2] = np.where(split, self.left[nodes], nodes)
            below[:, 1::2] = np.where(split, self.right[nodes], nodes)
            nodes = below
        if internal[nodes].any():
            raise ValueError(f"a tree is deeper than the {self.depth} levels its forest records")
        empty = np.zeros((trees, 0))
        self.split_feature = np.hstack([empty, *feature]).astype(np.int64)
        # scikit-learn compares a float32 input with a float64 threshold: as float32, the threshold rounded down
        # gives the same answer for every float32 input
        exact = np.hstack([empty, *threshold])
        rounded = exact.astype(np.float32)
        over = rounded.astype(np.float64) > exact
        rounded[over] = np.nextafter(rounded[over], np.float32(-np.inf))
        self.split_threshold = rounded
        self.leaf_value = self.value[nodes]
        return nodes

    def _attributions(self, ensemble: int, leaf_node: np.ndarray) -> None:
        """Per leaf slot of `ensemble`'s trees (`leaf_node`: each slot's node), the credit of each feature along
        the path from the root."""
        n_nodes = self.value.size
        parent_of = np.full(n_nodes, -1)
        internal = self.left != np.arange(n_nodes)
        parent_of[self.left[internal]] = np.flatnonzero(internal)
        parent_of[self.right[internal]] = np.flatnonzero(internal)
        # an ensemble's trees, and so its nodes, are contiguous
        self.attribute = ensemble
        first = self.first_tree[ensemble]
        last = self.first_tree[ensemble + 1] if ensemble + 1 < self.n_ensembles else self.roots.size
        self.attributed = slice(first, last)
        start, end = self.roots[first], self.roots[last] if last < self.roots.size else n_nodes
        credit = np.zeros((end - start, self.n_features))  # the ensemble's nodes, from its first
        # nodes in order of depth: a child comes after its parent in scikit-learn's layout
        for node in np.flatnonzero(parent_of[start:end] >= 0) + start:
            parent = parent_of[node]
            credit[node - start] = credit[parent - start]
            credit[node - start, self.input_owner[self.feature[parent]]] += self.value[node] - self.value[parent]
        # a path splits on at most `depth` features: each node keeps those (feature, credit) pairs alone, padded with
        # zero credit, so that a row's attributions add a few numbers a tree instead of a whole row of features; each
        # leaf slot of the walk takes its node's
        width = max(1, int((credit != 0).sum(axis=1).max()))
        order = np.argsort(credit == 0, axis=1, kind="stable")[:, :width]
        slots = leaf_node[self.attributed] - start
        self.credit_feature = order[slots]
        self.credit = np.take_along_axis(credit, order, axis=1)[slots]
        self.bias = self.init[ensemble] + self.value[self.roots[self.attributed]].sum()

    def evaluate(
        self, X: np.ndarray, contributions: bool = True, ensembles: tuple[int, ...] | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw outputs (rows, ensembles) and attributions (rows, features) or None. `ensembles` walks only those
        ensembles' trees (the others' outputs are NaN; no attributions). Many rows go in chunks, on two threads
        where the process has them: the walk releases the GIL. Each row's sums add its trees in tree order, so a
        row gets the same bits alone as among many."""
        if ensembles is not None and contributions:
            raise ValueError("attributions need every ensemble's trees")
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"the forest takes rows of {self.n_features} features, not an array of shape {X.shape}")
        if ensembles is None:
            trees, initial = self.every_tree, self.init
        else:
            trees = np.flatnonzero(np.isin(self.tree_ensemble, ensembles))
            initial = np.where(np.isin(np.arange(self.n_ensembles), ensembles), self.init, np.nan)
        Z = self.inputs(X)
        raw = np.tile(initial, (X.shape[0], 1))
        # without attributions, no tree is credited and the credits' array is empty (as each chunk's slice of it)
        attributions = np.zeros((X.shape[0], self.n_features) if contributions else (0, 0))
        credited = slice(None) if contributions else slice(0)
        credit_feature, credit = self.credit_feature[credited], self.credit[credited]
        nodes = (self.split_feature, self.split_threshold, self.leaf_value, self.tree_ensemble)
        kernel = _walk()

        def walk(rows: slice) -> None:
            kernel(Z[rows], trees, *nodes, raw[rows], self.attributed.start, credit_feature, credit, attributions[rows])

        chunks = [slice(start, start + CHUNK_ROWS) for start in range(0, X.shape[0], CHUNK_ROWS)]
        if THREADS == 1 or len(chunks) == 1:
            for rows in chunks:
                walk(rows)
        else:
            with ThreadPoolExecutor(max_workers=THREADS) as pool:
                list(pool.map(walk, chunks))
        return raw, attributions if contributions else None

    def inputs(self, X: np.ndarray) -> np.ndarray:
        """The imputer's output, as float32 values like scikit-learn's trees compare them."""
        missing = np.isnan(X)
        filled = np.where(missing, self.fill, X)
        # row-major whatever X's order: the walk reads a row's inputs together, and is compiled for this layout
        return np.hstack([filled, missing[:, self.indicator]]).astype(np.float32, order="C")
