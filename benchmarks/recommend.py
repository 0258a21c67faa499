"""Recommenders: retrieval latency at 10⁵ and 10⁶ items, and quality on real data.

    python benchmarks/recommend.py                   # retrieval + Debian + ratings
    python benchmarks/recommend.py --skip-quality --skip-ratings   # retrieval only
    python benchmarks/recommend.py --ratings-only    # the MovieLens-shaped table only

retrieval  `Recommender.recommend` as served (user vector, 50 seen items masked, top 10,
           ids) over n items with d = 64 float32 vectors clustered by taste, exact
           against the approximate index (recommend/index.py), alternated query by
           query: p50 / p99 ms over --queries after 20 warm-up, the index's top-10
           overlap with exact (recall@10) and its build seconds, cells, nprobe, size.
quality    The Debian dependency graph (examples/make_interactions.py: a package is a
           user, what it depends on / recommends are its items), random 20% of each
           package's items held out for test and 10% for validation. foundry's mf and
           implicit's ALS over the same grid (--alphas × --regs), each one's best on
           validation NDCG@10 scored on test, beside popularity, the model section
           `foundry init` writes (alpha / regularization auto) and two_tower
           (--tower-epochs, each package's section and priority as features); then the
           approximate index built on the best mf's real vectors. Recall@10, NDCG@10,
           coverage@10, fit seconds.
ratings    A generated MovieLens-shaped table (ratings 1-5, timestamps), per-user
           temporal split: the same comparison on the shape of public ratings data.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))


def _ms(samples: list[float]) -> str:
    q = statistics.quantiles(samples, n=10)
    return f"p50 {statistics.median(samples):7.3f} ms  p90 {q[8]:7.3f} ms"


def _p(samples: list[float]) -> str:
    return (
        f"p50 {statistics.median(samples):7.3f} ms  p99 {float(np.percentile(samples, 99)):7.3f} ms"
    )


def retrieval(n_items: int, *, d: int = 64, k: int = 10, queries: int = 200) -> None:
    """`Recommender.recommend` as served (user vector, 50 seen items masked, top k, ids),
    exact against the approximate index, alternated query by query."""
    from dataclasses import replace

    from foundry.recommend.index import build_item_index
    from foundry.recommend.model import Recommender

    rng = np.random.default_rng(0)
    # learned factors cluster by taste: 10⁴ taste centres, each item and user one of
    # them plus noise as large as the centre (pure Gaussian vectors, with no structure,
    # are the worst case of any index and unlike what ALS learns)
    centres = rng.standard_normal((10_000, d), dtype=np.float32)
    items = centres[rng.integers(0, len(centres), n_items)]
    items += rng.standard_normal((n_items, d), dtype=np.float32)
    users = centres[rng.integers(0, len(centres), 2 * queries + 256)]
    users += rng.standard_normal(users.shape, dtype=np.float32)
    seen = np.sort(rng.choice(n_items, 50, replace=False))
    indptr = np.arange(len(users) + 1) * 50
    exact = Recommender(
        "mf",
        [f"u{i}" for i in range(len(users))],
        [str(i) for i in range(n_items)],
        np.zeros(n_items, np.float32),
        indptr,
        np.tile(seen, len(users)),
        users,
        items,
    )
    started = time.perf_counter()
    # tuned on 200 users, timed and scored on others
    index = build_item_index(items, queries=users[-200:], recall=0.95, seed=0)
    build = time.perf_counter() - started
    approximate = replace(exact, index=index)
    timings: dict[str, list[float]] = {"exact": [], "index": []}
    overlap = []
    for q in range(queries + 20):  # the first 20 warm up
        user = f"u{q}"
        got = {}
        for name in ("exact", "index") if q % 2 else ("index", "exact"):
            model = exact if name == "exact" else approximate
            t0 = time.perf_counter()
            got[name] = {e["item"] for e in model.recommend(user, k=k)["items"]}
            if q >= 20:
                timings[name].append((time.perf_counter() - t0) * 1e3)
        overlap.append(len(got["exact"] & got["index"]) / k)
    print(f"{n_items:>9,} items  exact recommend()   {_p(timings['exact'])}")
    print(
        f"{'':>9}        index recommend()   {_p(timings['index'])}  recall@{k} vs exact "
        f"{np.mean(overlap):.3f}  (build {build:.1f} s: {index.cells} cells, nprobe "
        f"{index.nprobe}, {len(index.to_bytes()) / 1e6:.0f} MB)"
    )


def _implicit_als(train, factors, iterations, regularization, alpha):
    """`implicit`'s ALS (CPU, conjugate gradient) on the same training matrix, wrapped as
    a foundry `Recommender` so the same evaluation scores it; None without implicit."""
    from dataclasses import replace

    from threadpoolctl import threadpool_limits

    from foundry.recommend.fit import popularity_of

    try:
        from implicit.cpu.als import AlternatingLeastSquares
    except ImportError:
        return None, 0.0
    started = time.perf_counter()
    # implicit asks for one BLAS thread (its own threads parallelise over users)
    with threadpool_limits(1, "blas"):
        als = AlternatingLeastSquares(
            factors=factors,
            regularization=regularization,
            alpha=alpha,
            iterations=iterations,
            random_state=0,
        )
        als.fit(train.matrix(), show_progress=False)
    seconds = time.perf_counter() - started
    users, items = np.asarray(als.user_factors), np.asarray(als.item_factors)
    return replace(popularity_of(train), kind="mf", user_factors=users, item_factors=items), seconds


def quality(
    alphas: list[float], regs: list[float], factors: int, iterations: int, tower_epochs: int
) -> None:
    from make_interactions import debian_dependencies

    from foundry.config.schema import MFConfig, PopularityConfig, RecommendConfig
    from foundry.recommend.data import read_interactions, split_interactions
    from foundry.recommend.fit import evaluate_recommender, fit_recommender

    rec = RecommendConfig(
        user="package",
        item="dependency",
        weight="weight",
        split="random",
        test=0.2,
        val=0.1,
        seed=42,
    )
    data = read_interactions(debian_dependencies(), rec)
    splits = split_interactions(data, rec)
    print(
        f"\nDebian graph: {len(data):,} interactions, {len(data.users):,} packages, "
        f"{len(data.items):,} items; train/val/test {len(splits.train):,}/"
        f"{len(splits.val):,}/{len(splits.test):,}"
    )
    # the same grid for both libraries, chosen on validation NDCG@10, never on test
    best: dict[str, tuple[float, object, float, str]] = {}
    for alpha in alphas:
        for reg in regs:
            settings = f"alpha {alpha:g}, reg {reg:g}"
            ours, ours_s = fit_recommender(
                splits.train,
                MFConfig(factors=factors, iterations=iterations, alpha=alpha, regularization=reg),
                rec,
                seed=0,
            )
            theirs, theirs_s = _implicit_als(splits.train, factors, iterations, reg, alpha)
            line = f"  val  {settings:<20}"
            for name, model, seconds in (("foundry", ours, ours_s), ("implicit", theirs, theirs_s)):
                if model is None:
                    continue
                val = evaluate_recommender(model, splits, "val", k=10)
                line += (
                    f"  {name} recall@10 {val['recall@10']:.4f} ndcg@10 {val['ndcg@10']:.4f}"
                    f" ({seconds:.1f} s)"
                )
                if val["ndcg@10"] > best.get(name, (-1.0,))[0]:
                    best[name] = (val["ndcg@10"], model, seconds, settings)
            print(line, flush=True)
    pop, pop_seconds = fit_recommender(splits.train, PopularityConfig(), rec, seed=0)
    # the model section `foundry init --task recommend` writes (alpha and regularization
    # auto: chosen inside the training split)
    from foundry.recommend.init import INIT_MODEL

    init = MFConfig(**{key: v for key, v in INIT_MODEL.items() if key != "type"})
    defaults, defaults_seconds = fit_recommender(splits.train, init, rec, seed=0)
    # two_tower over each package's section and priority, restricted to the packages in
    # the graph (so the catalogue is mf's: a package nobody depends on is never a right
    # answer here)
    import pandas as pd
    from make_interactions import debian_item_features

    from foundry.config.schema import TwoTowerConfig
    from foundry.recommend.two_tower import feature_tokens

    features = pd.read_csv(debian_item_features())
    tokens = feature_tokens(features, "dependency", data.items)
    towers, tower_seconds = fit_recommender(
        splits.train, TwoTowerConfig(epochs=tower_epochs), rec, seed=0, tokens=tokens
    )
    print(f"  test split, {factors} factors, {iterations} iterations (settings chosen on val):")
    runs = [("popularity", pop, pop_seconds)]
    for name in ("foundry", "implicit"):
        if name in best:
            _, model, seconds, settings = best[name]
            runs.append((f"{name} mf ({settings})", model, seconds))
    runs.append(
        (
            f"foundry init's mf (auto: alpha {defaults.alpha:g}, reg "
            f"{defaults.regularization:g}, {init.iterations} it)",
            defaults,
            defaults_seconds,
        )
    )
    runs.append((f"two_tower ({tower_epochs} epochs)", towers, tower_seconds))
    for name, m, s in runs:
        got = evaluate_recommender(m, splits, "test", k=10)
        print(
            f"  {name:<48} recall@10 {got['recall@10']:.4f}  ndcg@10 {got['ndcg@10']:.4f}"
            f"  coverage@10 {got['coverage@10']:.4f}  fit {s:6.2f} s  ({got['users']:,} users)"
        )
    # the approximate index on real factors (forced: the catalogue is below index_above)
    from dataclasses import replace

    from foundry.recommend.index import build_item_index

    model = best["foundry"][1]
    index = build_item_index(
        model.item_factors, queries=model.user_factors[:200], recall=0.95, seed=0
    )
    indexed = replace(model, index=index)
    users = [u for u in model.users[200:2200]]
    overlap = np.mean(
        [
            len(
                {e["item"] for e in indexed.recommend(u)["items"]}
                & {e["item"] for e in model.recommend(u)["items"]}
            )
            / 10
            for u in users
        ]
    )
    print(
        f"  index on foundry's best mf: {index.cells} cells, nprobe {index.nprobe}, built in "
        f"{index.build_seconds:.1f} s; top 10 overlap with exact {overlap:.3f} on {len(users):,} "
        "other users"
    )


def ratings(alphas: list[float], regs: list[float]) -> None:
    """A generated MovieLens-shaped table (foundry.recommend.planted.ratings_table:
    1,000 users, 1,700 movies, ~100 ratings of 1-5 stars a user, timestamps), each
    user's latest 20% held out for test and the 10% before for validation: the shape of
    a public ratings dataset read with `foundry init`'s config. Popularity, foundry's mf
    and implicit's ALS tuned on one grid on validation, and init's model section."""
    from foundry.config.schema import MFConfig, PopularityConfig, RecommendConfig
    from foundry.recommend.data import interactions_from_frame, split_interactions
    from foundry.recommend.fit import evaluate_recommender, fit_recommender
    from foundry.recommend.init import INIT_MODEL, infer_interaction_columns
    from foundry.recommend.planted import ratings_table

    df = ratings_table()
    columns = infer_interaction_columns(df)  # as foundry init reads them
    rec = RecommendConfig(**columns, split="temporal", test=0.2, val=0.1)
    splits = split_interactions(interactions_from_frame(df, rec), rec)
    print(
        f"\nMovieLens-shaped ratings: {len(df):,} ratings, columns {columns}; "
        f"train/val/test {len(splits.train):,}/{len(splits.val):,}/{len(splits.test):,}"
    )
    best: dict[str, tuple[float, object, float, str]] = {}
    for alpha in alphas:
        for reg in regs:
            settings = f"alpha {alpha:g}, reg {reg:g}"
            config = MFConfig(alpha=alpha, regularization=reg)
            ours, ours_s = fit_recommender(splits.train, config, rec, seed=0)
            theirs, theirs_s = _implicit_als(splits.train, 64, 15, reg, alpha)
            line = f"  val  {settings:<20}"
            for name, model, seconds in (("foundry", ours, ours_s), ("implicit", theirs, theirs_s)):
                if model is None:
                    continue
                val = evaluate_recommender(model, splits, "val", k=10)
                line += f"  {name} recall@10 {val['recall@10']:.4f} ndcg@10 {val['ndcg@10']:.4f}"
                if val["ndcg@10"] > best.get(name, (-1.0,))[0]:
                    best[name] = (val["ndcg@10"], model, seconds, settings)
            print(line, flush=True)
    init = MFConfig(**{key: v for key, v in INIT_MODEL.items() if key != "type"})
    defaults, defaults_s = fit_recommender(splits.train, init, rec, seed=0)
    pop, pop_s = fit_recommender(splits.train, PopularityConfig(), rec, seed=0)
    runs = [("popularity", pop, pop_s)]
    runs += [(f"{n} mf ({b[3]})", b[1], b[2]) for n, b in best.items()]
    runs.append(
        (
            f"foundry init's mf (auto: alpha {defaults.alpha:g}, reg {defaults.regularization:g})",
            defaults,
            defaults_s,
        )
    )
    for name, m, s in runs:
        got = evaluate_recommender(m, splits, "test", k=10)
        print(
            f"  {name:<48} recall@10 {got['recall@10']:.4f}  ndcg@10 {got['ndcg@10']:.4f}"
            f"  coverage@10 {got['coverage@10']:.4f}  fit {s:6.2f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-retrieval", action="store_true")
    parser.add_argument("--skip-ratings", action="store_true")
    parser.add_argument("--ratings-only", action="store_true")
    parser.add_argument("--tower-epochs", type=int, default=2)
    parser.add_argument("--alphas", default="5,20,40")
    parser.add_argument("--regs", default="0.01,0.1")
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=15)
    args = parser.parse_args()
    import torch

    print(f"threads: torch {torch.get_num_threads()}")
    alphas = [float(a) for a in args.alphas.split(",")]
    regs = [float(r) for r in args.regs.split(",")]
    if args.ratings_only:
        ratings([0.25, 1.0, 4.0, 16.0], [0.05, 10.0, 30.0])
        return
    for n in () if args.skip_retrieval else (int(s) for s in args.sizes.split(",")):
        retrieval(n, queries=args.queries)
    if not args.skip_quality:
        quality(alphas, regs, args.factors, args.iterations, args.tower_epochs)
    if not args.skip_ratings:
        ratings([0.25, 1.0, 4.0, 16.0], [0.05, 10.0, 30.0])


if __name__ == "__main__":
    main()
