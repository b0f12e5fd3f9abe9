"""A compiled view of River's ``HalfSpaceTrees`` for scoring and learning: the same results, faster.

Contract
--------
:class:`ForestView` is built from a River ``anomaly.HalfSpaceTrees`` whose trees exist (it has
learnt once). It copies the trees' shape into flat arrays per tree, in heap order (node ``i``'s
children are ``2i + 1`` and ``2i + 2``): each branch's feature (an index into the view's
``features``) and threshold, every node's ``r_mass``, and the node objects themselves.

* :meth:`ForestView.score` is River's ``score_one`` (``river/anomaly/hst.py``, 0.26.1): the same
  walk, the same float operations in the same order, so the **same float**
  (``tests/operators/test_hst.py`` checks equality on generated streams).
* :meth:`ForestView.learn` is River's ``learn_one``: it updates River's own nodes and counters
  (``l_mass`` on the path, ``counter``, and when a window closes every node's ``r_mass`` and
  ``l_mass`` and ``_first_window``) and its copy of ``r_mass`` with them.

River's model stays the state (what is pickled); the view is a cache that stays exact as long as
every learn of the model goes through it (:class:`operators.models.ShardModels` owns its forests
and does so). ``xs`` holds the value of every feature of the view (``xs[i]`` of
``features[i]``): River's path for a missing feature is not implemented here.

Pure: no engine, no I/O, no clock.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ForestView"]


class ForestView:
    """Flat copies of one ``HalfSpaceTrees``' trees for :meth:`score` and :meth:`learn`; see
    the module docstring.

    >>> from river import anomaly
    >>> m = anomaly.HalfSpaceTrees(n_trees=3, height=2, window_size=2, limits={"a": (0.0, 1.0)}, seed=1)
    >>> for v in (0.1, 0.2, 0.3):
    ...     m.learn_one({"a": v})
    >>> v = ForestView(m, ("a",))
    >>> v.score([0.9]) == m.score_one({"a": 0.9}), v.score([0.15]) == m.score_one({"a": 0.15})
    (True, True)
    >>> v.learn([0.9]); m.counter, v.score([0.9]) == m.score_one({"a": 0.9})
    (0, True)
    """

    def __init__(self, model: Any, features: tuple[str, ...]) -> None:
        self.model: Any = model
        self.features = features
        index = {f: i for i, f in enumerate(features)}
        self.window: int = int(model.window_size)
        self.height: int = int(model.height)
        self.size_limit: float = 0.1 * model.window_size  # River's size_limit, computed as River does
        self.max_score: int = int(model._max_score)
        self.feat: list[list[int]] = []
        self.thr: list[list[float]] = []
        self.r: list[list[int]] = []
        self.nodes: list[list[Any]] = []
        n = 2 ** (self.height + 1) - 1
        for root in model.trees:
            feat = [-1] * n
            thr = [0.0] * n
            r = [0] * n
            nodes: list[Any] = [None] * n
            level: list[Any] = [root]
            i = 0
            for d in range(self.height + 1):
                nxt: list[Any] = []
                for node in level:
                    r[i] = int(node.r_mass)
                    nodes[i] = node
                    if d < self.height:
                        feat[i] = index[node.feature]
                        thr[i] = float(node.threshold)
                        c = node.children
                        nxt.append(c[0])
                        nxt.append(c[1])
                    i += 1
                level = nxt
            self.feat.append(feat)
            self.thr.append(thr)
            self.r.append(r)
            self.nodes.append(nodes)

    def score(self, xs: list[float]) -> float:
        """River's ``score_one`` of the vector ``xs`` (``xs[i]`` the value of ``features[i]``)."""
        if self.model._first_window:
            return 0.0
        height = self.height
        size_limit = self.size_limit
        score = 0.0
        for t in range(len(self.r)):
            feat = self.feat[t]
            thr = self.thr[t]
            r = self.r[t]
            i = 0
            depth_pow = 1
            s = 0.0
            done = False
            for _ in range(height):
                m = r[i]
                s += m * depth_pow
                if m < size_limit:
                    done = True
                    break
                i = 2 * i + 1 if xs[feat[i]] < thr[i] else 2 * i + 2
                depth_pow <<= 1
            if not done:
                s += r[i] * depth_pow
            score += s
        return 1 - score / self.max_score

    def learn(self, xs: list[float]) -> None:
        """River's ``learn_one`` of the vector ``xs``, on River's nodes (and this view's copy)."""
        height = self.height
        for t in range(len(self.nodes)):
            feat = self.feat[t]
            thr = self.thr[t]
            nodes = self.nodes[t]
            i = 0
            for _ in range(height):
                node = nodes[i]
                node.l_mass += 1
                i = 2 * i + 1 if xs[feat[i]] < thr[i] else 2 * i + 2
            leaf = nodes[i]
            leaf.l_mass += 1
        model = self.model
        counter: int = model.counter + 1
        if counter == self.window:
            for t in range(len(self.nodes)):
                r = self.r[t]
                nodes = self.nodes[t]
                for i in range(len(nodes)):
                    node = nodes[i]
                    m: int = node.l_mass
                    node.r_mass = m
                    node.l_mass = 0
                    r[i] = m
            model._first_window = False
            counter = 0
        model.counter = counter
