"""Recommenders over an interactions table: `model.type: popularity` and `model.type: mf`.

prepare   recommend.data: read the user / item / weight / time columns the `recommend`
          section names, split each user's interactions (latest or random held out)
fit       popularity counts, or ALS matrix factorization (recommend.als); one record per
          ALS sweep in metrics.jsonl
evaluate  Recall / NDCG / HitRate / MAP / coverage @k on `evaluate.split`, for the model
          and for the popularity baseline on the same split (`metrics["popularity"]`)
package   model.safetensors (factors, popularity, each user's training items) + ids.json
load      recommend.model.Recommender: `recommend(user=... | items=..., k)`; served on
          POST /v1/models/{name}/recommend
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from foundry.errors import ModelError
from foundry.families.interface import Evaluation, Fitted, PackageContents, Run
from foundry.families.manifest import card_header, data_section, provenance, training_section
from foundry.families.registry import register_family
from foundry.recommend.index import INDEX_FILE

__all__ = ["IDS_FILE", "USER_FEATURES_FILE", "RecommendFamily"]

USER_FEATURES_FILE = "user_features.json"
"""A user tower's feature columns and token vocabulary (two_tower with user features)."""
IDS_FILE = "ids.json"
"""The package's user and item ids ({"users": [...], "items": [...]}), index order."""
METRICS = ("recall", "ndcg", "hit_rate", "map", "coverage")


@dataclass
class RecommendData:
    splits: Any
    """`InteractionSplits`."""
    fingerprint: str
    source: str
    tokens: list[list[str]] | None = None
    """Each item's feature tokens (`recommend.item_features`), or None without one."""
    users: Any = None
    """`UserFeatures` (`recommend.user_features`), or None without one."""


@register_family("recommend", model_types=("popularity", "mf", "two_tower"))
class RecommendFamily:
    """Popularity and implicit-feedback matrix factorization over (user, item) events."""

    name = "recommend"
    supports = frozenset({"recommend", "compress"})
    """`compress`: int8 item vectors (foundry/recommend/compress.py)."""
    why_not_explain = "a recommender's scores are dot products of learned factors: no inputs"

    def prepare(self, run: Run) -> RecommendData:
        from foundry.recommend.data import read_interactions, split_interactions

        cfg, say = run.config, run.say
        path = run.loaded.resolve(cfg.data.path)
        data = read_interactions(
            path, cfg.recommend, fmt=cfg.data.format, delimiter=cfg.data.delimiter
        )
        tokens = None
        if cfg.recommend.item_features is not None:
            data, tokens = _with_item_features(data, run)
        users = None
        if cfg.recommend.user_features is not None:
            users = _user_features(data, run)
        splits = split_interactions(data, cfg.recommend)
        say.info(
            f"interactions: {len(data)} events, {len(data.users)} users, {len(data.items)} "
            f"items; {cfg.recommend.split} split train/val/test = {len(splits.train)}/"
            f"{len(splits.val)}/{len(splits.test)}"
        )
        return RecommendData(splits, _fingerprint(data), str(path), tokens, users)

    def fit(self, data: RecommendData, train: Any, run: Run) -> Fitted:
        import time

        from foundry.recommend.fit import fit_recommender
        from foundry.training.loop import FitResult

        cfg = run.config
        history: list[dict[str, Any]] = []
        path = run.out_dir / "metrics.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        started = time.perf_counter()

        # With a validation split, `on_epoch_end` (foundry tune's objective and pruner)
        # gets one record, after fitting, carrying the val ranking metrics
        # (`val_ndcg@10`...): scoring every user after every ALS sweep would cost more
        # than the sweep. Without one, a record per sweep as it comes.
        validate = len(data.splits.val) > 0

        def record(iteration: int, users: Any, items: Any, **extra: float) -> None:
            entry = {
                "epoch": iteration,
                **extra,
                "seconds": round(time.perf_counter() - started, 4),
            }
            history.append(entry)
            with path.open("a") as f:
                f.write(json.dumps(entry) + "\n")
            if run.on_epoch_end is not None and not validate:
                run.on_epoch_end(entry)

        model, seconds = fit_recommender(
            data.splits.train,
            cfg.model,
            cfg.recommend,
            seed=train.seed,
            on_iteration=record,
            tokens=data.tokens,
            users=data.users,
        )
        chosen = ""
        if "auto" in (
            getattr(cfg.model, "alpha", None),
            getattr(cfg.model, "regularization", None),
        ):
            chosen = (
                f" (alpha {model.alpha:g}, regularization {model.regularization:g}: chosen "
                "on 10% of each user's training interactions held out)"
            )
        run.say.info(
            f"{cfg.model.type}: fitted in {seconds:.2f} s on {len(model.users)} "
            f"users × {len(model.items)} items{chosen}"
        )
        if validate:
            from foundry.recommend.fit import evaluate_recommender

            val = evaluate_recommender(model, data.splits, "val", k=cfg.recommend.k)
            if not history:  # popularity: nothing iterated, one record for its val figures
                history.append({"epoch": 1, "seconds": round(seconds, 4)})
            history[-1].update({f"val_{key}": v for key, v in val.items() if key != "users"})
            with path.open("a") as f:
                f.write(json.dumps(history[-1]) + "\n")
            if run.on_epoch_end is not None:
                run.on_epoch_end(history[-1])
        iterations = len(history)
        result = FitResult(
            history=history,
            best_epoch=iterations,
            best_metrics=history[-1] if history else {},
            stopped_early=False,
            state_dict={},
            seconds=seconds,
            epochs_run=iterations,
        )
        return Fitted(model, result)

    def evaluate(self, fitted: Fitted, data: RecommendData, run: Run) -> Evaluation:
        from foundry.recommend.fit import evaluate_recommender, popularity_of

        cfg = run.config
        split, k = cfg.evaluate.split, cfg.recommend.k
        if not len(data.splits.held_out(split)):
            raise ModelError(
                f"evaluate.split '{split}' holds no interactions to score",
                hint="set recommend.val above 0 to evaluate on val, or evaluate.split: test",
            )
        metrics = {"split": split, **evaluate_recommender(fitted.model, data.splits, split, k=k)}
        baseline = popularity_of(data.splits.train)
        baseline.exclude_seen = cfg.recommend.exclude_seen
        base = evaluate_recommender(baseline, data.splits, split, k=k)
        metrics["popularity"] = {key: v for key, v in base.items() if key != "users"}
        return Evaluation(metrics)

    def package(
        self, fitted: Fitted, data: RecommendData, evaluation: Evaluation, run: Run
    ) -> PackageContents:
        cfg, model, splits = run.config, fitted.model, data.splits
        manifest = {
            **provenance(cfg),
            "task": "recommend",
            "recommend": {
                "kind": model.kind,
                "users": len(model.users),
                "items": len(model.items),
                "factors": None if model.item_factors is None else model.item_factors.shape[1],
                "regularization": model.regularization,
                "alpha": model.alpha,
                "exclude_seen": model.exclude_seen,
                "columns": {
                    "user": cfg.recommend.user,
                    "item": cfg.recommend.item,
                    "weight": cfg.recommend.weight,
                    "time": cfg.recommend.time,
                },
                "split": {
                    "method": splits.method,
                    "seed": cfg.recommend.seed,
                    "test": cfg.recommend.test,
                    "val": cfg.recommend.val,
                },
                "k": cfg.recommend.k,
            },
            "fingerprint": data.fingerprint,
            "data": data_section(run, splits),
            "training": {
                **training_section(fitted.result),
                "unit": "iteration",
                "run_dir": str(run.out_dir),
            },
        }
        files: dict[str, Any] = {IDS_FILE: json.dumps(model.ids())}
        if model.user_encoder is not None:
            manifest["recommend"]["user_features"] = model.user_encoder.columns
            files[USER_FEATURES_FILE] = json.dumps(model.user_features_json())
        if model.index is not None:
            manifest["recommend"]["index"] = model.index.describe()
            files[INDEX_FILE] = model.index.to_bytes()
        return PackageContents(
            weights=model.state_dict(),
            manifest=manifest,
            card=recommend_card(cfg, manifest, evaluation.metrics),
            files=files,
        )

    def summarize(self, ref: str, fitted: Fitted, evaluation: Evaluation, run: Run) -> None:
        if run.say.quiet:
            return
        from rich.table import Table

        metrics, k = evaluation.metrics, run.config.recommend.k
        table = Table(
            title=f"{ref or run.config.name} — {metrics['split']} split, {metrics['users']} users"
        )
        for column in ("metric", run.config.model.type, "popularity"):
            table.add_column(column, justify="right" if column != "metric" else "left")
        for name in METRICS:
            key = f"{name}@{k}"
            table.add_row(key, f"{metrics[key]:.4f}", f"{metrics['popularity'][key]:.4f}")
        run.say.console.print(table)

    def load(self, package: Any, ref: str) -> Any:
        from foundry.recommend.model import Recommender
        from foundry.registry.integrity import Confinement

        manifest = package.manifest
        settings = manifest.get("recommend")
        if not isinstance(settings, dict):
            raise ModelError(
                f"{package.path}/foundry.json is not a recommender manifest (no recommend section)"
            )
        confine = Confinement([package.path])
        path = confine.require(package.path / IDS_FILE, what="the recommender's id file")
        if not path.is_file():
            raise ModelError(f"model package {package.path} is missing {IDS_FILE}")
        ids = json.loads(path.read_text(encoding="utf-8"))
        index = None
        if isinstance(settings.get("index"), dict):
            from foundry.recommend.index import ItemIndex

            file = confine.require(package.path / INDEX_FILE, what="the item index")
            if not file.is_file():
                raise ModelError(f"model package {package.path} is missing {INDEX_FILE}")
            index = ItemIndex.from_bytes(file.read_bytes(), settings["index"])
        user_features = None
        if isinstance(settings.get("user_features"), dict):
            file = confine.require(package.path / USER_FEATURES_FILE, what="the user features")
            if not file.is_file():
                raise ModelError(f"model package {package.path} is missing {USER_FEATURES_FILE}")
            user_features = json.loads(file.read_text(encoding="utf-8"))
        return Recommender.from_state(
            package.weights,
            ids,
            settings,
            ref=ref,
            manifest=manifest,
            index=index,
            user_features=user_features,
        )

    def outputs(self, model: Any, batch: Any) -> np.ndarray:
        """float32 [len(batch), n_items]: every item's score for each user id in
        `batch` (a list of ids; a user unknown to training gets the popularity scores)."""
        if isinstance(batch, str) or not isinstance(batch, list | tuple):
            raise ModelError(f"a recommender scores a list of user ids; got {type(batch).__name__}")
        return model.score_matrix([str(u) for u in batch])


def recommend_card(cfg: Any, manifest: dict[str, Any], metrics: dict[str, Any]) -> str:
    """model card markdown: data, split, model, and the ranking metrics beside the
    popularity baseline's on the same split."""
    rec, rows, k = manifest["recommend"], manifest["data"]["rows"], manifest["recommend"]["k"]
    model_line = (
        f"- `mf`: {rec['factors']} factors per user and item, fitted by ALS "
        f"(regularization {rec['regularization']}, alpha {rec['alpha']})"
        if rec["kind"] == "mf"
        else "- `two_tower`: user tower of id"
        + (" + feature embeddings" if rec.get("user_features") else "")
        + ", item tower of id + feature embeddings "
        f"({rec['factors']} dimensions, in-batch softmax); new items from their features"
        + ("; new users from theirs" if rec.get("user_features") else "")
        if rec["kind"] == "two_tower"
        else "- `popularity`: the same list for everyone, the items most users touched"
    )
    lines = [
        *card_header(cfg),
        f"- source: `{cfg.data.path}` (fingerprint `{manifest['fingerprint'][:16]}`)",
        f"- {rec['users']} users, {rec['items']} items; interactions train {rows['train']}, "
        f"val {rows['val']}, test {rows['test']}",
        f"- split: {rec['split']['method']} per user (seed {rec['split']['seed']})",
        "",
        "## Model",
        model_line,
        f"- items a user already interacted with are "
        f"{'left out of' if rec['exclude_seen'] else 'kept in'} their recommendations",
        "- a user unknown to training: folded in from their recent items if given, else "
        "the popularity list",
        "",
        f"## Metrics ({metrics['split']} split, {metrics['users']} users, k = {k})",
        "",
        f"| metric | {cfg.model.type} | popularity |",
        "|---|---:|---:|",
    ]
    for name in METRICS:
        key = f"{name}@{k}"
        lines.append(f"| {key} | {metrics[key]:.4f} | {metrics['popularity'][key]:.4f} |")
    return "\n".join(lines) + "\n"


def _with_item_features(data: Any, run: Run) -> tuple[Any, list[list[str]]]:
    """`data` with the feature table's items that have no interactions added to its
    catalogue (new items), and every item's feature tokens."""
    from dataclasses import replace

    from foundry.data import read_table
    from foundry.recommend.two_tower import feature_tokens

    rec = run.config.recommend
    path = run.loaded.resolve(rec.item_features)
    table = read_table(path)
    if rec.item not in table.columns:
        feature_tokens(table, rec.item, [], source=str(path))  # the error naming the columns
    known = set(data.items)
    new = [i for i in dict.fromkeys(table[rec.item].astype(str).tolist()) if i not in known]
    data = replace(data, items=data.items + new)
    tokens = feature_tokens(table, rec.item, data.items, source=str(path))
    run.say.info(
        f"item features: {sum(1 for t in tokens if t)} of {len(data.items)} items have "
        f"some; {len(new)} new items (features, no interactions)"
    )
    return data, tokens


def _user_features(data: Any, run: Run) -> Any:
    """The user feature table's tokens for each training user, and its column kinds
    (users only in the table are skipped: without interactions there is nothing to
    learn from them)."""
    from foundry.data import read_table
    from foundry.recommend.two_tower import user_features_of

    rec = run.config.recommend
    if run.config.model.type != "two_tower":
        run.say.info(f"recommend.user_features: read by two_tower, not {run.config.model.type}")
        return None
    path = run.loaded.resolve(rec.user_features)
    users = user_features_of(read_table(path), rec.user, data.users, str(path))
    run.say.info(
        f"user features: {sum(1 for t in users.tokens if t)} of {len(data.users)} users "
        f"have some ({', '.join(users.columns)})"
    )
    return users


def _fingerprint(data: Any) -> str:
    """sha256 of the indexed events (ids, weights, times): same file, same fingerprint."""
    h = hashlib.sha256()
    for part in (
        data.user,
        data.item,
        data.weight,
        data.time if data.time is not None else np.zeros(0),
    ):
        h.update(np.ascontiguousarray(part).tobytes())
    h.update("\x00".join(data.users).encode())
    h.update("\x00".join(data.items).encode())
    return h.hexdigest()
