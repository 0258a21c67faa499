"""A fitted recommender: what `foundry.load` returns for a popularity or mf package.

    model = foundry.load("deps:1")
    model.recommend(user="python3-numpy", k=10)        # [{"item", "score"}, ...]
    model.recommend(items=["libc6", "zlib1g"], k=10)   # a user not seen in training
    model.recommend(user_features={"country": "de"})   # two_tower with user features

Scores: mf, the dot product of the user's vector with every item's ([n_items]); a user
unknown to training but with recent items gets a vector folded in from them (one ALS
step against the fixed item factors; two_tower: their direction), and under a
two_tower trained with `recommend.user_features`, one who brings features gets the user
tower's feature part (with recent items too: the two directions added); a user with
none of these gets the popularity list, as the popularity model gives everyone.
Retrieval is exact (one matrix-vector product over the item matrix and `torch.topk`)
or, for a large catalogue, through an approximate index (recommend/index.py);
benchmarks/recommend.py measures both at 10⁵ and 10⁶ items.

State (`state_dict` / `from_state`): float32 tensors for model.safetensors and the ids as
JSON (ids.json; a user tower's feature columns and token vocabulary in
user_features.json, its token vectors in model.safetensors): no pickle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from foundry.errors import ModelError
from foundry.recommend.index import ItemIndex

if TYPE_CHECKING:
    from foundry.recommend.two_tower import UserEncoder

__all__ = ["Recommender", "top_k"]


@dataclass
class Recommender:
    kind: str
    """`popularity`, `mf` or `two_tower` (the `model.type` it was trained as)."""
    users: list[str]
    items: list[str]
    popularity: np.ndarray
    """float32 [n_items]: how many training users interacted with each item."""
    seen_indptr: np.ndarray
    """int64 [n_users + 1]: CSR row pointers of each user's training items."""
    seen_items: np.ndarray
    """int64 [n_seen]: the item indices, row by row."""
    user_factors: np.ndarray | None = None
    """float32 [n_users, d] (mf only)."""
    item_factors: np.ndarray | None = None
    """float32 [n_items, d] (mf only)."""
    regularization: float = 0.0
    alpha: float = 1.0
    """mf's fitting settings, which folding a new user in reuses."""
    exclude_seen: bool = True
    index: ItemIndex | None = None
    """The approximate item index (large catalogues), or None: exact retrieval."""
    user_encoder: UserEncoder | None = None
    """two_tower with `recommend.user_features`: places a new user by their features."""
    ref: str = ""
    manifest: dict[str, Any] = field(default_factory=dict)
    user_index: dict[str, int] = field(init=False, repr=False)
    item_index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.user_index = {u: i for i, u in enumerate(self.users)}
        self.item_index = {v: i for i, v in enumerate(self.items)}

    @property
    def name(self) -> str:
        return self.ref.split(":")[0]

    # ------------------------------------------------------------------ scoring

    def seen(self, user: int) -> np.ndarray:
        return self.seen_items[self.seen_indptr[user] : self.seen_indptr[user + 1]]

    def user_vector(
        self,
        user: str | None = None,
        items: list[str] | None = None,
        user_features: dict[str, Any] | None = None,
    ) -> np.ndarray | None:
        """The user's factor vector: learned (a training user), from `user_features`
        and/or folded in from `items` (anyone else), or None (fall back to popularity).
        `user_features` are checked first, whoever the user, as serving checks them."""
        self.check_user_features(user_features)
        if self.user_factors is None:
            return None
        index = self.user_index.get(user) if user is not None else None
        if index is not None:
            return self.user_factors[index]
        known = [self.item_index[i] for i in items or [] if i in self.item_index]
        from_features = (
            self.user_encoder.vector(user_features)
            if self.user_encoder is not None and user_features
            else None
        )
        if not known:
            return from_features
        assert self.item_factors is not None
        if self.kind == "two_tower":  # the direction of their items, as a user vector is
            mean = self.item_factors[known].mean(axis=0)
            direction = mean / max(float(np.linalg.norm(mean)), 1e-12)
            if from_features is not None:  # both: the two directions added
                direction = direction + from_features
                direction = direction / max(float(np.linalg.norm(direction)), 1e-12)
            return direction.astype(np.float32)
        y = self.item_factors.astype(np.float64)
        chosen = y[known]  # confidence alpha (× weight 1) for each recent item, as in fit
        a = y.T @ y + (self.alpha - 1.0) * chosen.T @ chosen
        a += self.regularization * np.eye(y.shape[1])
        b = self.alpha * chosen.sum(axis=0)
        return np.linalg.solve(a, b).astype(np.float32)

    def user_features_problem(self, features: Any) -> tuple[str | None, str] | None:
        """(the field at fault, what is wrong) with a query's user features, or None;
        serving answers 422 with it, `recommend` raises `ModelError`."""
        if features is None:
            return None
        if self.user_encoder is None:
            field = next(iter(features), None) if isinstance(features, dict) else None
            return field, (
                f"model {self.ref or self.kind} reads no user features (a two_tower model "
                "trained with recommend.user_features does)"
            )
        return self.user_encoder.problem(features)

    def check_user_features(self, features: Any) -> None:
        problem = self.user_features_problem(features)
        if problem is not None:
            field, message = problem
            where = f"user_features.{field}" if field else "user_features"
            raise ModelError(f"{where}: {message}")

    def scores(
        self, user: str | None = None, items: list[str] | None = None
    ) -> tuple[np.ndarray, str]:
        """float32 [n_items] scores for one user, and where they came from (`model` or
        `popularity`)."""
        vector = self.user_vector(user, items)
        if vector is None:
            return self.popularity, "popularity"
        assert self.item_factors is not None
        # torch.mv, not numpy's `@`: 1.4 ms against 23 ms at 10⁵ items on the shared
        # 2-core machine, where OpenBLAS's threads stall under load
        # (benchmarks/recommend.py); the same at 10⁶ items, where memory bandwidth bounds
        # both.
        import torch

        scores = torch.mv(torch.from_numpy(self.item_factors), torch.from_numpy(vector))
        return scores.numpy(), "model"

    def top_items(
        self, vectors: np.ndarray, k: int, banned: list[np.ndarray | None]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per row of `vectors` [B, d] (user vectors): (item indices, scores) of its top
        `k` items, best first, none of its `banned`. Through the approximate index when
        the model has one (large catalogues: recommend/index.py), else exact."""
        assert self.item_factors is not None
        if self.index is not None:
            return self.index.search(self.item_factors, vectors, k, banned)
        # torch, not numpy's `@`: 1.4 ms against 23 ms at 10⁵ items on the shared 2-core
        # machine, where OpenBLAS's threads stall under load (benchmarks/recommend.py)
        import torch

        items_t = torch.from_numpy(self.item_factors)
        if len(vectors) == 1:
            scores = torch.mv(items_t, torch.from_numpy(vectors[0]))[None, :].numpy()
        else:
            scores = (torch.from_numpy(vectors) @ items_t.T).numpy()  # [B, n_items]
        return [top_k(row, k, b) for row, b in zip(scores, banned, strict=True)]

    def score_matrix(self, users: list[str]) -> np.ndarray:
        """float32 [len(users), n_items]: every item's score for each user (unknown
        users get popularity): the family's raw outputs."""
        return (
            np.stack([self.scores(u)[0] for u in users])
            if users
            else np.zeros((0, len(self.items)), np.float32)
        )

    def recommend(
        self,
        user: str | None = None,
        *,
        items: list[str] | None = None,
        user_features: dict[str, Any] | None = None,
        k: int = 10,
        exclude_seen: bool | None = None,
    ) -> dict[str, Any]:
        """The top `k` items for `user` (an id seen in training) or for someone whose
        recent `items` and/or `user_features` (two_tower trained with user features) are
        given, best first: {"items": [{"item", "score"}], "source"}.
        Items the user interacted with in training, and the given recent items, are left
        out unless `exclude_seen` is False."""
        if k < 1:
            raise ModelError(f"k must be at least 1; got {k}")
        exclude = self.exclude_seen if exclude_seen is None else exclude_seen
        banned: np.ndarray | None = None
        if exclude:
            parts = []
            index = self.user_index.get(user) if user is not None else None
            if index is not None:
                parts.append(self.seen(index))
            recent = [self.item_index[i] for i in items or [] if i in self.item_index]
            if recent:
                parts.append(np.asarray(recent, np.int64))
            banned = np.concatenate(parts) if parts else None
        vector = self.user_vector(user, items, user_features)
        if vector is None:
            top, values = top_k(self.popularity, k, banned)
            source = "popularity"
        else:
            [(top, values)] = self.top_items(vector[None, :], k, [banned])
            source = "model"
        return {
            "items": [
                {"item": self.items[i], "score": float(s)}
                for i, s in zip(top.tolist(), values.tolist(), strict=True)
            ],
            "source": source,
        }

    def predict(self, *_: Any, **__: Any) -> Any:
        """`foundry predict` / `Predictor.predict`'s name: a recommender has no labels."""
        raise ModelError(
            f"model {self.ref or self.kind} is a recommender: it has no labels to predict",
            hint=f"foundry recommend {self.name or 'NAME'} --user ID -k 10, "
            "Recommender.recommend(user=...), or POST /v1/models/NAME/recommend",
        )

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Tensors for model.safetensors (ids go to ids.json: `ids`)."""
        import torch

        state = {
            "popularity": torch.from_numpy(np.ascontiguousarray(self.popularity, np.float32)),
            "seen_indptr": torch.from_numpy(np.ascontiguousarray(self.seen_indptr, np.int64)),
            "seen_items": torch.from_numpy(np.ascontiguousarray(self.seen_items, np.int64)),
        }
        if self.user_factors is not None and self.item_factors is not None:
            state["user_factors"] = torch.from_numpy(np.ascontiguousarray(self.user_factors))
            state["item_factors"] = torch.from_numpy(np.ascontiguousarray(self.item_factors))
        if self.user_encoder is not None:
            vectors = np.ascontiguousarray(self.user_encoder.vectors, np.float32)
            state["user_token_vectors"] = torch.from_numpy(vectors)
        return state

    def user_features_json(self) -> dict[str, Any] | None:
        """user_features.json: the user tower's feature columns and token vocabulary."""
        if self.user_encoder is None:
            return None
        return {"columns": self.user_encoder.columns, "tokens": self.user_encoder.tokens}

    def ids(self) -> dict[str, list[str]]:
        return {"users": self.users, "items": self.items}

    @classmethod
    def from_state(
        cls,
        weights: dict[str, Any],
        ids: dict[str, Any],
        settings: dict[str, Any],
        *,
        ref: str = "",
        manifest: dict[str, Any] | None = None,
        index: ItemIndex | None = None,
        user_features: dict[str, Any] | None = None,
    ) -> Recommender:
        def array(name: str) -> np.ndarray | None:
            tensor = weights.get(name)
            return None if tensor is None else tensor.numpy()

        item_factors = array("item_factors")
        codes = array("item_factors_int8")
        scales = array("item_scales")
        if item_factors is None and codes is not None and scales is not None:
            # an int8 variant (foundry compress): float32 again for scoring
            item_factors = codes.astype(np.float32) * scales[:, None]

        encoder = None
        if user_features is not None:
            from foundry.recommend.two_tower import UserEncoder

            vectors = array("user_token_vectors")
            tokens = [str(t) for t in user_features.get("tokens", [])]
            if vectors is None or len(vectors) != len(tokens):
                raise ModelError("the package's user token vectors do not match its vocabulary")
            columns = {str(c): str(kind) for c, kind in user_features["columns"].items()}
            encoder = UserEncoder(columns, tokens, vectors)
        model = cls(
            kind=settings["kind"],
            users=[str(u) for u in ids["users"]],
            items=[str(i) for i in ids["items"]],
            popularity=array("popularity"),
            seen_indptr=array("seen_indptr"),
            seen_items=array("seen_items"),
            user_factors=array("user_factors"),
            item_factors=item_factors,
            regularization=float(settings.get("regularization", 0.0)),
            alpha=float(settings.get("alpha", 1.0)),
            exclude_seen=bool(settings.get("exclude_seen", True)),
            index=index,
            user_encoder=encoder,
            ref=ref,
            manifest=manifest or {},
        )
        if model.popularity is None or len(model.popularity) != len(model.items):
            raise ModelError("the package's popularity vector does not match its item ids")
        if model.item_factors is not None and len(model.item_factors) != len(model.items):
            raise ModelError("the package's item factors do not match its item ids")
        return model


def top_k(
    scores: np.ndarray, k: int, banned: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The indices and scores of the `k` largest `scores` [n] (best first), never one in
    `banned`. torch.topk: 3.5 ms against np.argpartition's 48 ms at 10⁶ items
    (benchmarks/recommend.py)."""
    import torch

    if banned is not None and len(banned):
        scores = scores.copy()
        scores[banned] = -np.inf
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, scores.dtype)
    values, top = torch.topk(torch.from_numpy(scores), k)
    values, top = values.numpy(), top.numpy()
    keep = np.isfinite(values)  # fewer than k items left once the banned are out
    return top[keep], values[keep]
