"""Fitted scikit-learn tree ensembles laid out as flat arrays, for one-row speed and path attributions.

scikit-learn's `predict` costs a few hundred microseconds of input checks per call, whatever the
number of rows; a served prediction needs several ensembles (point and interval) and its drivers
in well under a millisecond. `CompiledForest` walks every tree of every ensemble at once with numpy
for a few rows, and uses each tree's own Cython `apply` for many rows. Both give leaf ids; values
and attributions follow from the leaves. Tests check the results against scikit-learn's `predict`.

Attributions are path attributions (Saabas; shap's `TreeExplainer(..., approximate=True)`): each
split on a row's path credits its feature with the change in the node mean it causes, so the bias
plus the attributions equals the prediction exactly.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property

import numpy as np
from scipy import sparse
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.tree._tree import NODE_DTYPE, Tree

ROW_WALK_LIMIT = 64  # rows up to this walk the trees in numpy; more use each tree's Cython apply
CHUNK_ROWS = 8192  # rows evaluated at once: bounds memory, and chunks share two threads
# two threads, unless the process is given fewer: a Dask worker is (OMP_NUM_THREADS=1), and its
# cores are busy with the other workers' parts
THREADS = max(1, min(2, int(os.environ.get("OMP_NUM_THREADS", "2"))))


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
        feature, threshold, left, right, value, roots, owner, self.trees = [], [], [], [], [], [], [], []
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
                self.trees.append(tree)
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
        self.n_ensembles = len(ensembles)
        self.first_tree = np.searchsorted(self.tree_ensemble, np.arange(self.n_ensembles))
        self.depth = max(t.max_depth for t in self.trees)
        self._attributions(attribute)

    # the node arrays a saved model keeps (clv.model.persistence): the forest is rebuilt from them alone
    ARRAYS = ("fill", "indicator", "feature", "threshold", "left", "right", "value", "roots", "tree_ensemble", "init")

    def to_arrays(self) -> dict[str, np.ndarray]:
        """What `from_arrays` rebuilds this forest from, each tree's depth too: plain numbers, nothing that runs."""
        arrays = {name: getattr(self, name) for name in self.ARRAYS}
        return arrays | {"tree_depth": np.array([tree.max_depth for tree in self.trees], np.int64)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], n_features: int, attribute: int) -> CompiledForest:
        """The forest `to_arrays` described, checked node by node first (a child after its parent, in its own tree;
        a feature among the inputs), so a changed file is refused here rather than walked out of bounds."""
        forest = cls.__new__(cls)
        missing = [name for name in (*cls.ARRAYS, "tree_depth") if name not in arrays]
        if missing:
            raise ValueError(f"the forest lacks the arrays {missing}")
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
        depth = np.asarray(arrays["tree_depth"], np.int64)
        forest.n_features = n_features
        forest.n_inputs = n_features + forest.indicator.size
        forest.input_owner = np.concatenate([np.arange(n_features), forest.indicator])
        forest.n_ensembles = forest.init.size
        forest._check(depth, attribute)
        forest.first_tree = np.searchsorted(forest.tree_ensemble, np.arange(forest.n_ensembles))
        ends = np.append(forest.roots[1:], forest.value.size)
        forest.trees = [forest._tree(root, end, int(d)) for root, end, d in zip(forest.roots, ends, depth, strict=True)]
        forest.depth = int(depth.max())
        forest._attributions(attribute)
        return forest

    def _check(self, depth: np.ndarray, attribute: int) -> None:
        n_nodes = self.value.size
        ids = np.arange(n_nodes)
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

    def _tree(self, root: int, end: int, depth: int) -> Tree:
        """A scikit-learn tree of the nodes root..end, for its Cython `apply` on many rows. Only the splits matter
        to `apply`; a leaf's value is the forest's, not the tree's own."""
        ids = np.arange(end - root)
        left, right = self.left[root:end] - root, self.right[root:end] - root
        leaf = left == ids
        nodes = np.zeros(ids.size, NODE_DTYPE)
        nodes["left_child"] = np.where(leaf, -1, left)
        nodes["right_child"] = np.where(leaf, -1, right)
        nodes["feature"] = np.where(leaf, -2, self.feature[root:end])
        nodes["threshold"] = np.where(leaf, -2.0, self.threshold[root:end])
        tree = Tree(self.n_inputs, np.ones(1, np.intp), 1)
        values = self.value[root:end].reshape(-1, 1, 1)
        tree.__setstate__({"max_depth": depth, "node_count": ids.size, "nodes": nodes, "values": values})
        return tree

    def _attributions(self, ensemble: int) -> None:
        """Per leaf of `ensemble`, the credit of each feature along the path from the root."""
        n_nodes = self.value.size
        credit = np.zeros((n_nodes, self.n_features))
        parent_of = np.full(n_nodes, -1)
        internal = self.left != np.arange(n_nodes)
        parent_of[self.left[internal]] = np.flatnonzero(internal)
        parent_of[self.right[internal]] = np.flatnonzero(internal)
        # an ensemble's trees, and so its nodes, are contiguous
        self.attribute = ensemble
        first = self.first_tree[ensemble]
        last = self.first_tree[ensemble + 1] if ensemble + 1 < self.n_ensembles else self.roots.size
        self.attributed = slice(first, last)
        end = self.roots[last] if last < self.roots.size else n_nodes
        # nodes in order of depth: a child comes after its parent in scikit-learn's layout
        for node in np.flatnonzero(parent_of[self.roots[first] : end] >= 0) + self.roots[first]:
            parent = parent_of[node]
            credit[node] = credit[parent]
            credit[node, self.input_owner[self.feature[parent]]] += self.value[node] - self.value[parent]
        # many rows add the ensemble's nodes' credits whole, in one sparse product
        self.credit_first, self.node_credit = self.roots[first], credit[self.roots[first] : end].copy()
        # a path splits on at most `depth` features: each node keeps those (feature, credit) pairs alone, padded with
        # zero credit, so that a few rows' attributions add a few numbers a tree instead of a whole row of features
        width = max(1, int((credit != 0).sum(axis=1).max()))
        self.path_feature = np.argsort(credit == 0, axis=1, kind="stable")[:, :width]
        self.path_credit = np.take_along_axis(credit, self.path_feature, axis=1)
        self.bias = self.init[ensemble] + self.value[self.roots[self.attributed]].sum()

    def evaluate(
        self, X: np.ndarray, contributions: bool = True, ensembles: tuple[int, ...] | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw outputs (rows, ensembles) and attributions (rows, features) or None. `ensembles` walks only those
        ensembles' trees (the others' outputs are NaN; no attributions). Many rows go in chunks, on two threads
        where the process has them: tree walking and numpy's gathers release the GIL."""
        if ensembles is not None and contributions:
            raise ValueError("attributions need every ensemble's trees")
        if X.shape[0] <= CHUNK_ROWS:
            picked = None if ensembles is None else np.flatnonzero(np.isin(self.tree_ensemble, ensembles))
            leaves = self.leaves(X, picked)
            return self.raw(leaves, picked), self.contributions(leaves) if contributions else None
        chunks = np.array_split(X, -(-X.shape[0] // CHUNK_ROWS))
        if THREADS == 1:
            parts = [self.evaluate(chunk, contributions, ensembles) for chunk in chunks]
        else:
            with ThreadPoolExecutor(max_workers=THREADS) as pool:
                parts = list(pool.map(lambda chunk: self.evaluate(chunk, contributions, ensembles), chunks))
        raw = np.vstack([p[0] for p in parts])
        return raw, np.vstack([p[1] for p in parts]) if contributions else None

    def inputs(self, X: np.ndarray) -> np.ndarray:
        """The imputer's output, as float32 values like scikit-learn's trees compare them."""
        missing = np.isnan(X)
        filled = np.where(missing, self.fill, X)
        return np.hstack([filled, missing[:, self.indicator]]).astype(np.float32)

    def leaves(self, X: np.ndarray, picked: np.ndarray | None = None) -> np.ndarray:
        """Global leaf id of every row in every tree (or in the `picked` trees): (rows, trees)."""
        Z = self.inputs(X)
        if Z.shape[0] > ROW_WALK_LIMIT:
            Z = np.ascontiguousarray(Z)
            trees = self.trees if picked is None else [self.trees[i] for i in picked]
            roots = self.roots if picked is None else self.roots[picked]
            # int32 ids (of a forest small enough), written in place a tree at a time: half the memory of stacking
            # each tree's int64 answer
            ids = np.int32 if self.value.size < 2**31 else np.int64
            leaves = np.empty((Z.shape[0], len(trees)), ids)
            for column, (tree, root) in enumerate(zip(trees, roots, strict=True)):
                leaves[:, column] = tree.apply(Z) + root  # local ids to global
            return leaves
        # a few rows walk every tree at once, by flat gathers over the walk's arrays: a node is 2 x its id there, and
        # 2 x id + 1 when the row goes left, so that one gather gives the next node
        children, feature, threshold, roots = self._walk
        roots = roots if picked is None else roots[picked]
        values = Z.astype(np.float64).ravel()
        row_starts = (np.arange(Z.shape[0]) * Z.shape[1])[:, None]
        node = np.tile(roots, (Z.shape[0], 1))
        for _ in range(self.depth):
            go_left = values.take(feature.take(node) + row_starts) <= threshold.take(node)
            node = children.take(node + go_left)
        return node >> 1

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)  # a copy: the walk's arrays are made again where the forest arrives
        state.pop("_walk", None)
        return state

    @cached_property
    def _walk(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The node arrays as the few-row walk reads them, made once per forest: at 2 x id, the right child (2 x its
        id), at 2 x id + 1 the left; the node's feature and threshold at both; the roots, doubled."""
        children = np.empty(2 * self.value.size, np.intp)
        children[0::2], children[1::2] = 2 * self.right, 2 * self.left
        feature, threshold = np.repeat(self.feature.astype(np.intp), 2), np.repeat(self.threshold, 2)
        return children, feature, threshold, (2 * self.roots).astype(np.intp)

    def raw(self, leaves: np.ndarray, picked: np.ndarray | None = None) -> np.ndarray:
        """Raw output of every ensemble (of the `picked` trees' ensembles, the others NaN): (rows, ensembles)."""
        # the trees of an ensemble are contiguous, in ensemble order
        if picked is None:
            return self.init + np.add.reduceat(self.value[leaves], self.first_tree, axis=1)
        owner = self.tree_ensemble[picked]
        first = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        out = np.full((leaves.shape[0], self.n_ensembles), np.nan)
        out[:, owner[first]] = self.init[owner[first]] + np.add.reduceat(self.value[leaves], first, axis=1)
        return out

    def contributions(self, leaves: np.ndarray) -> np.ndarray:
        """Path attributions of the attributed ensemble: (rows, features); bias + sum = raw output.

        Many rows take one sparse product: rows by the ensemble's nodes, a 1 at each row's leaf in each tree, times
        each node's credits. A few rows add their paths' credits by bincount, without building the matrix. Both add
        a row's trees in tree order, so they give the same bits."""
        mine = leaves[:, self.attributed]
        if mine.shape[0] > ROW_WALK_LIMIT:
            rows, trees = mine.shape
            first, nodes = self.credit_first, self.node_credit.shape[0]
            hits = sparse.csr_array(
                (np.ones(mine.size), (mine - first).ravel(), np.arange(0, mine.size + 1, trees)), shape=(rows, nodes)
            )
            return hits @ self.node_credit
        out = np.empty((leaves.shape[0], self.n_features))
        step = max(1, (1 << 20) // (mine.shape[1] * self.path_feature.shape[1]))  # rows per chunk: about 16 MB
        for start in range(0, mine.shape[0], step):
            chunk = mine[start : start + step]
            rows = np.arange(chunk.shape[0]).reshape(-1, 1, 1) * self.n_features
            cells = (rows + self.path_feature[chunk]).ravel()  # (row, feature) of each credit on each path
            sums = np.bincount(cells, self.path_credit[chunk].ravel(), chunk.shape[0] * self.n_features)
            out[start : start + step] = sums.reshape(-1, self.n_features)
        return out
