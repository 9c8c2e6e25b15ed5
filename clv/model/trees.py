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

import numpy as np
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor
from sklearn.impute import SimpleImputer

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

    def _attributions(self, ensemble: int) -> None:
        """Per leaf of `ensemble`, the credit of each feature along the path from the root."""
        n_nodes = self.value.size
        credit = np.zeros((n_nodes, self.n_features))
        parent_of = np.full(n_nodes, -1)
        internal = self.left != np.arange(n_nodes)
        parent_of[self.left[internal]] = np.flatnonzero(internal)
        parent_of[self.right[internal]] = np.flatnonzero(internal)
        # an ensemble's trees, and so its nodes, are contiguous
        first = self.first_tree[ensemble]
        last = self.first_tree[ensemble + 1] if ensemble + 1 < self.n_ensembles else self.roots.size
        self.attributed = slice(first, last)
        end = self.roots[last] if last < self.roots.size else n_nodes
        # nodes in order of depth: a child comes after its parent in scikit-learn's layout
        for node in np.flatnonzero(parent_of[self.roots[first] : end] >= 0) + self.roots[first]:
            parent = parent_of[node]
            credit[node] = credit[parent]
            credit[node, self.input_owner[self.feature[parent]]] += self.value[node] - self.value[parent]
        self.credit = credit
        self.bias = self.init[ensemble] + self.value[self.roots[self.attributed]].sum()

    def evaluate(self, X: np.ndarray, contributions: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw outputs (rows, ensembles) and attributions (rows, features) or None. Many rows go in chunks,
        on two threads where the process has them: tree walking and numpy's gathers release the GIL."""
        if X.shape[0] <= CHUNK_ROWS:
            leaves = self.leaves(X)
            return self.raw(leaves), self.contributions(leaves) if contributions else None
        chunks = np.array_split(X, -(-X.shape[0] // CHUNK_ROWS))
        if THREADS == 1:
            parts = [self.evaluate(chunk, contributions) for chunk in chunks]
        else:
            with ThreadPoolExecutor(max_workers=THREADS) as pool:
                parts = list(pool.map(lambda chunk: self.evaluate(chunk, contributions), chunks))
        raw = np.vstack([p[0] for p in parts])
        return raw, np.vstack([p[1] for p in parts]) if contributions else None

    def inputs(self, X: np.ndarray) -> np.ndarray:
        """The imputer's output, as float32 values like scikit-learn's trees compare them."""
        missing = np.isnan(X)
        filled = np.where(missing, self.fill, X)
        return np.hstack([filled, missing[:, self.indicator]]).astype(np.float32)

    def leaves(self, X: np.ndarray) -> np.ndarray:
        """Global leaf id of every row in every tree: (rows, trees)."""
        Z = self.inputs(X)
        if Z.shape[0] > ROW_WALK_LIMIT:
            Z = np.ascontiguousarray(Z)
            return np.column_stack([tree.apply(Z) for tree in self.trees]) + self.roots  # local ids to global
        Z64 = Z.astype(np.float64)
        node = np.broadcast_to(self.roots, (Z.shape[0], self.roots.size))
        rows = np.arange(Z.shape[0])[:, None]
        for _ in range(self.depth):
            go_left = Z64[rows, self.feature[node]] <= self.threshold[node]
            node = np.where(go_left, self.left[node], self.right[node])
        return node

    def raw(self, leaves: np.ndarray) -> np.ndarray:
        """Raw output of every ensemble: (rows, ensembles)."""
        # the trees of an ensemble are contiguous, in ensemble order
        return self.init + np.add.reduceat(self.value[leaves], self.first_tree, axis=1)

    def contributions(self, leaves: np.ndarray) -> np.ndarray:
        """Path attributions of the attributed ensemble: (rows, features); bias + sum = raw output."""
        mine = leaves[:, self.attributed]
        out = np.empty((leaves.shape[0], self.n_features))
        step = max(1, (1 << 22) // (mine.shape[1] * self.n_features))  # rows per chunk: about 32 MB
        for start in range(0, mine.shape[0], step):
            out[start : start + step] = self.credit[mine[start : start + step]].sum(axis=1)
        return out
