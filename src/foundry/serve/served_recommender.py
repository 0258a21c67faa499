"""A recommender as the API serves it: POST /v1/models/{name}/recommend.

    {"user": "42", "k": 10}                          one query
    {"items": ["libc6", "zlib1g"], "k": 5}           someone known by recent items
    {"user_features": {"country": "de"}, "k": 5}     a new user known by features
    {"queries": [{"user": "42"}, {"user": "7"}]}     several (one unit each)
    → {"model": "deps:1", "recommendations": [{"items": [{"item", "score"}],
       "source": "model" | "popularity"}], "usage": {"units": n}}

The request goes the predict route's way (key, body checks, admission, metering, the
model's batcher, settlement: `Service.predict`): a query is a record, and the batcher's
forward answers a batch of queries, so concurrent requests share one matrix product
over the item factors, or one search of the approximate index (`forward_records`).
Answers are what `Recommender.recommend` gives for the same query.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from foundry.recommend.model import Recommender
from foundry.serve.errors import ApiError
from foundry.serve.schemas import Records

__all__ = ["MAX_K", "QueryValidator", "ServedRecommender"]

MAX_K = 1000
"""Largest list a query may ask for."""
MAX_RECENT_ITEMS = 1000
"""Most recent items one query may carry."""
_FIELDS = frozenset({"user", "items", "user_features", "k", "exclude_seen"})


class QueryValidator:
    """Body → queries, each checked (422 naming the field); `Service.predict` calls
    `records_of` then `validate`, as for a model's records."""

    def __init__(self, model: str, user_features_problem: Any = None) -> None:
        self.model = model
        self.user_features_problem = user_features_problem
        """`Recommender.user_features_problem`: a query's user features checked against
        the columns and kinds the model was trained with."""

    def records_of(self, payload: Any) -> Records:
        if isinstance(payload, dict) and set(payload) == {"queries"}:
            queries = payload["queries"]
            if not isinstance(queries, list) or not queries:
                raise ApiError(
                    422,
                    "invalid_field",
                    'queries must be a non-empty list of queries like {"user": "42", "k": 10}',
                    param="queries",
                )
            return Records(queries, "queries", True)
        if isinstance(payload, dict):
            return Records([payload], "", False)
        raise ApiError(
            422,
            "invalid_field",
            'the body must be a query ({"user": "42", '
            '"k": 10} or {"items": [...], "k": 10}) or {"queries": [...]}',
        )

    def validate(self, records: Records) -> None:
        for i, query in enumerate(records.items):
            if not isinstance(query, dict):
                raise ApiError(
                    422, "invalid_field", "a query must be a JSON object", param=records.path(i)
                )
            unknown = sorted(set(query) - _FIELDS)
            if unknown:
                raise ApiError(
                    422,
                    "invalid_field",
                    f"unknown field '{unknown[0]}' in a "
                    f"recommend query; the fields are {', '.join(sorted(_FIELDS))}",
                    param=records.path(i, unknown[0]),
                )
            user, items = query.get("user"), query.get("items")
            features = query.get("user_features")
            if user is None and not items and features is None:
                raise ApiError(
                    422,
                    "invalid_field",
                    'a query needs a user id ("user"), a non-empty list of recent items '
                    '("items") or a new user\'s features ("user_features")',
                    param=records.path(i, "user"),
                )
            problem = (
                self.user_features_problem(features)
                if features is not None and self.user_features_problem is not None
                else None
            )
            if problem is not None:
                field, message = problem
                name = f"user_features.{field}" if field else "user_features"
                raise ApiError(422, "invalid_field", message, param=records.path(i, name))
            if user is not None and not isinstance(user, str | int) or isinstance(user, bool):
                raise ApiError(
                    422,
                    "invalid_field",
                    "user must be a string or an integer id",
                    param=records.path(i, "user"),
                )
            if items is not None and (
                not isinstance(items, list)
                or len(items) > MAX_RECENT_ITEMS
                or not all(isinstance(v, str | int) and not isinstance(v, bool) for v in items)
            ):
                raise ApiError(
                    422,
                    "invalid_field",
                    "items must be a list of at most "
                    f"{MAX_RECENT_ITEMS} item ids (strings or integers)",
                    param=records.path(i, "items"),
                )
            k = query.get("k", 10)
            if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
                raise ApiError(
                    422,
                    "invalid_field",
                    f"k must be an integer from 1 to {MAX_K}",
                    param=records.path(i, "k"),
                )
            if not isinstance(query.get("exclude_seen", True), bool):
                raise ApiError(
                    422,
                    "invalid_field",
                    "exclude_seen must be true or false",
                    param=records.path(i, "exclude_seen"),
                )


@dataclass(frozen=True)
class ServedRecommender:
    name: str
    model: Recommender
    validator: QueryValidator
    summary: dict[str, Any]
    detail: dict[str, Any]

    @classmethod
    def load(cls, ref: str, *, registry: Any = None) -> ServedRecommender:
        from foundry.predictor import load

        return cls.from_model(load(ref, registry=registry))

    @classmethod
    def from_model(cls, model: Recommender) -> ServedRecommender:
        version = model.manifest.get("version")
        summary = {
            "name": model.name,
            "version": version if isinstance(version, int) else None,
            "ref": model.ref,
            "task": {"type": "recommend", "target": None, "classes": []},
            "inputs": [
                {
                    "name": "user",
                    "type": "category",
                    "nullable": True,
                    "values": None,
                    "example": model.users[0] if model.users else "user",
                },
                {
                    "name": "items",
                    "type": "category",
                    "nullable": True,
                    "values": None,
                    "example": model.items[:2],
                },
            ],
        }
        if model.user_encoder is not None:
            summary["inputs"].append(
                {
                    "name": "user_features",
                    "type": "object",
                    "nullable": True,
                    "values": None,
                    "example": None,
                    "fields": model.user_encoder.columns,  # column → number / text
                }
            )
        example = {"user": summary["inputs"][0]["example"], "k": 10}
        return cls(
            model.name,
            model,
            QueryValidator(model.name, model.user_features_problem),
            summary,
            {**summary, "example": example},
        )

    @property
    def ref(self) -> str:
        return self.model.ref

    scrubs = False  # ids, not free text: nothing for the PII scrubber to mask

    def predict_records(self, queries: list[dict]) -> list[dict[str, Any]]:
        """What `foundry cost` times in process (ServedModel's name for it)."""
        return self.forward_records(queries)

    def forward_records(self, queries: list[dict]) -> list[dict[str, Any]]:
        """The batcher's forward: validated queries → one answer each. Known users'
        scores come from one [batch, d] × [d, n_items] product."""
        model = self.model
        answers: list[dict[str, Any] | None] = [None] * len(queries)
        known = [
            (i, model.user_index[str(q["user"])])
            for i, q in enumerate(queries)
            if q.get("user") is not None
            and str(q["user"]) in model.user_index
            and model.user_factors is not None
        ]
        if known:
            users = np.array([u for _, u in known])
            banned = []
            for i, u in known:
                query = queries[i]
                recent = [
                    model.item_index[str(v)]
                    for v in query.get("items") or []
                    if str(v) in model.item_index
                ]
                exclude = query.get("exclude_seen", model.exclude_seen)
                banned.append(np.r_[model.seen(u), recent].astype(np.int64) if exclude else None)
            # one [batch, d] × [d, n_items] product (or one index search) for the batch;
            # each query's own k is cut from the largest asked
            k = max(queries[i].get("k", 10) for i, _ in known)
            assert model.user_factors is not None
            found = model.top_items(model.user_factors[users], k, banned)
            for (i, _), (top, values) in zip(known, found, strict=True):
                n = queries[i].get("k", 10)
                answers[i] = {
                    "items": [
                        {"item": model.items[t], "score": float(s)}
                        for t, s in zip(top[:n].tolist(), values[:n].tolist(), strict=True)
                    ],
                    "source": "model",
                }
        for i, query in enumerate(queries):
            if answers[i] is None:
                user = query.get("user")
                answers[i] = model.recommend(
                    None if user is None else str(user),
                    items=[str(v) for v in query.get("items") or []],
                    user_features=query.get("user_features"),
                    k=query.get("k", 10),
                    exclude_seen=query.get("exclude_seen"),
                )
        return answers  # type: ignore[return-value]
