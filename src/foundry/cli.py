"""The `foundry` command. Each subcommand is a thin wrapper over one public function.

Heavy imports (torch, pandas) happen inside the commands so `foundry --help` stays fast.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import typer

from foundry.cli_models import models_app
from foundry.db_cli import db_app
from foundry.economics.cli import cost as cost_command
from foundry.errors import ConfigError, FoundryError
from foundry.report.cli import report as report_command
from foundry.serve.cli_admin import keys_app, usage_app
from foundry.serve.cli_serve import serve as serve_command
from foundry.tracking.cli import runs_app
from foundry.tuning.cli import tune_command

app = typer.Typer(
    name="foundry",
    help="From a data file to a trained, evaluated, registered model — one config.",
    no_args_is_help=True,
    # --install-completion / --show-completion (bash, zsh, fish, PowerShell): typer's own.
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.add_typer(models_app, name="models")
app.add_typer(keys_app, name="keys")
app.add_typer(usage_app, name="usage")
app.add_typer(db_app, name="db")
app.add_typer(runs_app, name="runs")


def _out(text: str) -> None:
    typer.echo(text)


def _print_version(value: bool) -> None:
    if value:
        from foundry.extras import DISTRIBUTION
        from foundry.version import __version__

        _out(f"foundry {__version__} ({DISTRIBUTION})")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True,
        help="Print foundry's version and exit.",
    ),
) -> None:
    """From a data file to a trained, evaluated, registered model — one config."""


@app.command()
def init(
    data: Path = typer.Argument(..., help="CSV / Parquet / JSONL file or image folder."),
    target: str | None = typer.Option(None, "--target", "-t", help="Column to predict."),
    task: str | None = typer.Option(
        None, help="recommend: DATA is an interactions table (user, item[, weight, time])."
    ),
    output: Path = typer.Option(Path("config.yaml"), "--output", "-o", help="Config to write."),
    name: str | None = typer.Option(None, help="Model name (default: the data file's stem)."),
    model: str | None = typer.Option(
        None,
        help="Model type (gbm, ngram, mlp, text, cnn, hf...). Default: by the data: gbm for "
        "tables, ngram for any text input, cnn for images, hf with --pretrained.",
    ),
    pretrained: str | None = typer.Option(
        None,
        help="Fine-tune this Hugging Face model (hub id or local directory) on the text column.",
    ),
    search: str | None = typer.Option(
        None, help="Write a time-budgeted model search instead (model: {type: auto}), "
        "e.g. --search 5m: the candidates that fit the data, the best registered."
    ),
    item_features: Path | None = typer.Option(
        None, help="--task recommend: an item feature table (recommend.item_features)."
    ),
    user_features: Path | None = typer.Option(
        None, help="--task recommend: a user feature table (recommend.user_features)."
    ),
    force: bool = typer.Option(False, help="Overwrite an existing config."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the config's path."),
    json_out: bool = typer.Option(
        False, "--json", help="Print the path and the written config as JSON."
    ),
) -> None:
    """Write a config for DATA: inferred feature types and the model that fits the data.

    Says which model it chose and why, the epochs and batch size of a network (from the
    number of rows, so a default run stays within ~10 minutes on 2 CPU cores), and each
    column it left out (personal data, opaque identifiers, target leaks) with the reason.
    """
    from foundry.config.init import init_config
    from foundry.console import Reporter
    from foundry.progress import silenced

    with silenced(quiet or json_out):
        path = init_config(
            data, target, task=task, output=output, name=name, model=model,
            pretrained=pretrained, force=force, say=Reporter(quiet=quiet or json_out),
            search=search,
            feature_tables={k: v for k, v in
                            {"item_features": item_features, "user_features": user_features}.items()
                            if v is not None},
        )
    if json_out:
        import yaml

        _out(json.dumps({"config": str(path), "settings": yaml.safe_load(path.read_text())}))
    else:
        _out(str(path) if quiet else f"wrote {path} — train it with: foundry train {path}")


@app.command(context_settings={"allow_extra_args": False})
def train(
    config: Path = typer.Argument(..., help="Config YAML."),
    overrides: list[str] | None = typer.Argument(
        None, help="Overrides like train.optimizer.lr=3e-4 model.layers=[64,32]."
    ),
    resume: bool = typer.Option(
        False, help="Continue the newest unfinished run from its checkpoint."
    ),
    run_dir: Path | None = typer.Option(
        None, help="Run directory (default: output_dir/NAME-TIME)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the result."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    nproc: int = typer.Option(
        1,
        "--nproc",
        help="Train in N local processes (PyTorch DDP, launched like torchrun); "
        "train.batch_size is the global batch. Several machines: see torchrun in the README.",
    ),
) -> None:
    """Train, evaluate and register the model CONFIG describes."""
    from foundry.pipeline import train as run_train

    if nproc != 1:  # N workers, each running this same command without --nproc
        from foundry.config import load_config
        from foundry.training.distributed import launch_local

        flags = {"--resume": resume, "--quiet": quiet, "--json": json_out}
        args = [str(config), *(overrides or []), *(f for f, on in flags.items() if on)]
        args += ["--run-dir", str(run_dir)] if run_dir is not None else []
        launch_local(nproc, ["train", *args], load_config(config, overrides or []).config)
        return
    from foundry.progress import silenced

    with silenced(quiet or json_out):
        result = run_train(
            config, overrides or [], resume=resume, run_dir=run_dir, quiet=quiet or json_out
        )
    from foundry.training.distributed import is_main

    if not is_main():  # the other torchrun workers print nothing: rank 0 has the result
        return
    if json_out:
        _out(
            json.dumps(
                {
                    "model": result.model_ref,
                    "run_dir": str(result.run_dir),
                    "metrics": result.metrics,
                    "best_epoch": result.best_epoch,
                    **_leaderboard(result),
                }
            )
        )
    else:
        _out(f"{result.model_ref}  run: {result.run_dir}")


def _leaderboard(result) -> dict:
    """`{"leaderboard": ...}` of a model search's package (`model.type: auto`), else {}."""
    path = result.package_path / "foundry.json" if result.package_path else None
    if path is None or not path.is_file():
        return {}
    import foundry.crypto as crypto

    board = json.loads(crypto.read_text(path)).get("leaderboard")
    return {"leaderboard": board} if board else {}


@app.command("run")
def run_cmd(
    config: Path = typer.Argument(..., help="Config YAML."),
    overrides: list[str] | None = typer.Argument(None, help="key.path=value overrides."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the result."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Run the whole pipeline a config describes: train → evaluate → register, then
    compress when the config has a compress section."""
    from foundry.pipeline import run
    from foundry.progress import silenced

    with silenced(quiet or json_out):
        result = run(config, overrides or [], quiet=quiet or json_out)
    if json_out:
        c = result.compression
        _out(json.dumps({
            "model": result.model_ref,
            "run_dir": str(result.run_dir),
            "metrics": result.metrics,
            "best_epoch": result.best_epoch,
            "seconds": result.seconds,
            **_leaderboard(result),
            "compression": None if c is None else {
                "tagged": c.tagged, "selection": c.selection, "report_dir": str(c.report_dir),
                "variants": [v.ref for v in c.variants],
            },
        }, default=str))
        return
    _out(f"{result.model_ref}  run: {result.run_dir}")
    if result.compression is not None:
        c = result.compression
        _out(f"compressed: {c.tagged or 'nothing tagged'}  report: {c.report_dir}")


@app.command()
def compress(
    model: str = typer.Argument(..., help="Model reference: name, name:latest or name:VERSION."),
    max_accuracy_drop: float | None = typer.Option(
        None,
        help="Tag the fastest variant within this quality drop name:compressed (0.01 = 1 point "
        "of accuracy; R² for regressors; 1% perplexity for GPTs).",
    ),
    methods: str | None = typer.Option(
        None, help="Comma-separated: int8,onnx,onnx_int8,prune,distill,sparsity."
    ),
    data: Path | None = typer.Option(
        None,
        "--data",
        "-d",
        help="Labelled file (text for GPTs) to measure on (default: the model's test split).",
    ),
    config: Path | None = typer.Option(
        None, help="Take the compress section from this YAML (default: the model's own config)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the result."),
    json_out: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
) -> None:
    """Build, register and measure compressed variants of MODEL; print the comparison."""
    from dataclasses import asdict

    from pydantic import ValidationError

    from foundry.compression import compress as run_compress
    from foundry.config.load import format_error, read_yaml
    from foundry.config.schema import CompressConfig
    from foundry.registry import Registry

    if config is not None:
        section = read_yaml(config).get("compress") or {}
    else:
        manifest = Registry().load(model).manifest
        section = dict((manifest.get("config") or {}).get("compress") or {})
    if max_accuracy_drop is not None:
        section["max_accuracy_drop"] = max_accuracy_drop
    if methods is not None:
        section["methods"] = [m.strip() for m in methods.split(",") if m.strip()]
    if data is not None:
        section["data"] = str(data.resolve())
    try:
        settings = CompressConfig.model_validate(section)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(format_error({**err, "loc": ("compress", *err["loc"])})) from None
    from foundry.progress import silenced

    with silenced(quiet or json_out):
        result = run_compress(model, settings, quiet=quiet or json_out)
    if json_out:
        _out(json.dumps({
            "parent": result.parent,
            "tagged": result.tagged,
            "selection": result.selection,
            "skipped": result.skipped,
            "report_dir": str(result.report_dir),
            "variants": [asdict(v) for v in result.variants],
        }, default=str))
        return
    _out(f"report: {result.report_dir / 'compress.md'}")


@app.command()
def evaluate(
    model: str = typer.Argument(..., help="Model reference: name, name:latest or name:VERSION."),
    data: Path = typer.Option(..., "--data", "-d", help="Labelled data file."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write metrics.json here."),
    json_out: bool = typer.Option(False, "--json", help="Print metrics as JSON."),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="Print only the metrics: no progress bars."
    ),
) -> None:
    """Compute metrics of MODEL on a labelled data file (a language model: its perplexity
    on a text file)."""
    from foundry.evaluation.run import evaluate_model
    from foundry.progress import silenced

    with silenced(quiet or json_out):
        result = evaluate_model(model, data, output=output)
    if json_out:
        _out(json.dumps(result.metrics))
        return
    from rich.console import Console

    from foundry.evaluation import confusion_table, metrics_table

    console = Console()
    console.print(
        metrics_table(result.metrics, title=f"{result.model_ref} on {data} ({result.rows} rows)")
    )
    if "confusion_matrix" in result.metrics:
        console.print(confusion_table(result.metrics["confusion_matrix"], result.classes))
    if "fairness" in result.metrics:
        from foundry.evaluation.fairness import format_audit

        _out(format_audit(result.metrics["fairness"]))
        if "fairness_mitigated" in result.metrics:
            _out("\nwith the model's fairness mitigation (group thresholds):\n")
            _out(format_audit(result.metrics["fairness_mitigated"]))
    if output:
        _out(f"wrote {output}")


@app.command()
def predict(
    model: str = typer.Argument(..., help="Model reference: name, name:latest or name:VERSION."),
    data: Path = typer.Argument(..., help="CSV / Parquet / JSONL file or image folder."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="CSV/Parquet/JSONL to write; stdout when absent."
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No progress and no 'wrote' line: only the predictions."
    ),
    json_out: bool = typer.Option(
        False, "--json",
        help="Print one JSON object: model, rows, seconds, and the predictions as records "
        "(with -o: the output path instead).",
    ),
) -> None:
    """Predict every row of DATA with MODEL."""
    import time

    from foundry.data import read_table
    from foundry.predictor import Predictor, load
    from foundry.progress import silenced
    from foundry.writers import write_table

    started = time.perf_counter()
    with silenced(quiet or json_out):
        predictor = load(model)
        frame = read_table(data)
        if isinstance(predictor, Predictor):  # chunked, with a rows/s bar on big files
            predictions = predictor.predict(frame, progress=None)
        else:
            predictions = predictor.predict(frame)
        if output is not None:
            write_table(predictions, output)
    if json_out:
        summary = {
            "model": predictor.ref, "rows": len(predictions),
            "seconds": round(time.perf_counter() - started, 3),
        }
        if output is None:
            summary["predictions"] = json.loads(predictions.to_json(orient="records"))
        else:
            summary["output"] = str(output)
        _out(json.dumps(summary))
    elif output is None:
        predictions.to_csv(sys.stdout, index=False)
    elif not quiet:
        typer.echo(f"wrote {len(predictions)} predictions to {output}", err=True)


@app.command()
def recommend(
    model: str = typer.Argument(..., help="Recommender: name, name:latest or name:VERSION."),
    user: str | None = typer.Option(None, "--user", "-u", help="A user id seen in training."),
    items: str | None = typer.Option(
        None, help="Comma-separated recent items of a user the model does not know."
    ),
    user_features: str | None = typer.Option(
        None,
        "--user-features",
        help='A new user\'s features as JSON, e.g. \'{"country": "de"}\' (two_tower trained '
        "with recommend.user_features).",
    ),
    k: int = typer.Option(10, "-k", min=1, max=1000, help="How many items."),
    keep_seen: bool = typer.Option(
        False, help="Keep items the user already interacted with (default: left out)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the answer as JSON."),
) -> None:
    """The top K items MODEL (model type popularity or mf) recommends for a user."""
    from foundry.predictor import load
    from foundry.recommend.model import Recommender

    features = None
    if user_features is not None:
        try:
            features = json.loads(user_features)
        except json.JSONDecodeError as e:
            raise ConfigError(f"--user-features is not JSON ({e})",
                              hint="give an object of feature column → value") from e
        if not isinstance(features, dict):
            raise ConfigError("--user-features must be a JSON object of feature column → value")
    if user is None and not items and features is None:
        raise ConfigError("give --user ID, or --items A,B,C or --user-features JSON for "
                          "someone the model does not know")
    recommender = load(model)
    if not isinstance(recommender, Recommender):
        raise ConfigError(f"{model} is not a recommender (model type popularity or mf); "
                          "predict with `foundry predict`")
    recent = [i.strip() for i in items.split(",") if i.strip()] if items else None
    answer = recommender.recommend(user, items=recent, user_features=features, k=k,
                                   exclude_seen=False if keep_seen else None)
    if json_out:
        _out(json.dumps({"model": recommender.ref, "user": user, **answer}))
        return
    who = user or ("recent items" if recent else "user features")
    _out(f"# {recommender.ref}: top {k} for {who} ({answer['source']})")
    for rank, entry in enumerate(answer["items"], 1):
        _out(f"{rank:>3}  {entry['item']}  {entry['score']:.4f}")


@app.command()
def explain(
    model: str = typer.Argument(..., help="Model reference: name, name:latest or name:VERSION."),
    data: Path = typer.Argument(..., help="CSV / Parquet / JSONL file or image folder."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write every attribution (and importance) as JSON here."
    ),
    rows: int = typer.Option(20, "--rows", "-n", min=1, help="Explain the first N rows."),
    steps: int | None = typer.Option(
        None, "--steps", min=2, max=1000,
        help="Integrated-gradients steps [the model's evaluate.explain.steps, 50].",
    ),
    target: str | None = typer.Option(
        None, "--target", help="Explain this class in every row [each row's predicted class]."
    ),
    importance: bool = typer.Option(
        False, "--importance",
        help="Also rank the inputs by permutation importance (DATA needs the target column).",
    ),
    top: int = typer.Option(5, "--top", min=1, help="Attributions shown per row."),
    json_out: bool = typer.Option(False, "--json", help="Print the JSON instead of tables."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the tables."),
) -> None:
    """Why MODEL predicts what it does on DATA: integrated-gradients attributions per row
    (and, with --importance, permutation importance of each input)."""
    from foundry.evaluation.explain import attribution_tables, explain_file, importance_table
    from foundry.progress import silenced

    with silenced(quiet or json_out):
        result = explain_file(
            model, data, output=output, steps=steps, target=target, rows=rows,
            importance=importance,
        )
    if json_out:
        _out(json.dumps(result.to_dict()))
        return
    from rich.console import Console

    console = Console()
    explanations = result.explanations
    method = {
        "integrated_gradients": f"integrated gradients ({explanations['steps']} steps)",
        "tree_shap": "exact TreeSHAP contributions",  # gbm
        "linear_contributions": "exact linear contributions (weight x tf-idf)",  # ngram
    }.get(explanations["method"], explanations["method"])
    console.print(f"{result.model_ref}: {method} of {explanations['output']}")
    for table in attribution_tables(explanations, result.frame, top=top):
        console.print(table)
    if result.importance is not None:
        console.print(importance_table(result.importance))
    if output:
        _out(f"wrote {output}")


@app.command()
def generate(
    model: str = typer.Argument(..., help="A language model: name, name:latest or name:VERSION."),
    prompt: str = typer.Argument(..., help="Prompt text (with --chat: the user message)."),
    max_tokens: int | None = typer.Option(None, "--max-tokens", min=1,
                                          help="Most new tokens [the model's default]."),
    temperature: float | None = typer.Option(None, min=0.0, help="0 = greedy."),
    top_k: int | None = typer.Option(None, "--top-k", min=1),
    top_p: float | None = typer.Option(None, "--top-p", min=0.0, max=1.0),
    repetition_penalty: float | None = typer.Option(None, "--repetition-penalty", min=0.0),
    stop: list[str] | None = typer.Option(None, "--stop", help="Stop string (repeatable)."),
    seed: int | None = typer.Option(None, help="Seed for sampling."),
    chat: bool = typer.Option(False, "--chat", help="Wrap PROMPT as a user chat message."),
    stream: bool = typer.Option(True, "--stream/--no-stream", help="Print tokens as they come."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the text."),
    json_out: bool = typer.Option(
        False, "--json",
        help="Print one JSON object when done: text, token counts, finish reason (no stream).",
    ),
) -> None:
    """Generate text with a registered language model (gpt, or hf causal_lm)."""
    from foundry.config.schema import LMServeConfig
    from foundry.errors import ModelError
    from foundry.lm.api import LanguageModel
    from foundry.lm.load import load
    from foundry.registry import Registry
    from foundry.serve.errors import ApiError
    from foundry.serve.lm_serving import ServedLanguageModel, generation_params

    registry = Registry()
    lm = load(model, registry=registry)
    if not isinstance(lm, LanguageModel):
        raise ModelError(f"model {model} makes embeddings, it does not generate text")
    # one request: the one-at-a-time engine (no batching thread, no KV slots)
    served = ServedLanguageModel.from_model(lm, registry, settings=LMServeConfig(max_concurrent=1))
    text = lm.render_chat([{"role": "user", "content": prompt}]) if chat else prompt
    try:
        params = generation_params(
            served, lm.count_tokens(text), max_tokens=max_tokens, temperature=temperature,
            top_p=top_p, top_k=top_k, repetition_penalty=repetition_penalty, stop=stop,
            seed=seed,
        )
    except ApiError as exc:
        raise ModelError(exc.message) from None
    from foundry.progress import silenced

    if stream and not json_out:
        with silenced(quiet):
            for delta in lm.stream(text, params):
                sys.stdout.write(delta.text)
                sys.stdout.flush()
        sys.stdout.write("\n")
        return
    with silenced(quiet or json_out):
        [completion] = lm.generate([text], params)
    if json_out:
        _out(json.dumps({
            "model": served.ref,
            "text": completion.text,
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "finish_reason": completion.finish_reason,
        }))
        return
    _out(completion.text)


@app.command()
def export(
    model: str = typer.Argument(..., help="A foundry GPT: name, name:latest or name:VERSION."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write (new or empty)."),
) -> None:
    """Write a GPT trained by foundry as a Hugging Face transformers folder (config.json,
    model.safetensors, tokenizer files, generation_config.json) that
    AutoModelForCausalLM / AutoTokenizer, vLLM, TGI and llama.cpp's converters load.
    Packages trained now carry the same folder as hf/; this writes it for older ones."""
    from foundry.lm.export import export_package

    path = export_package(model, out)
    _out(f"wrote {path} (AutoModelForCausalLM.from_pretrained({str(path)!r}) loads it)")


@app.command("config-docs")
def config_docs() -> None:
    """Print every config key with its type, default and documentation (Markdown)."""
    from foundry.config.docs import config_markdown

    _out(config_markdown())


# Serving lives in foundry.serve; registered here so it lists after the pipeline commands.
app.command("serve")(serve_command)
# Hyper-parameter search lives in foundry.tuning.
app.command("tune")(tune_command)
# Unit economics (training cost, cost per 1k predictions, plan margins) in foundry.economics.
app.command("cost")(cost_command)
# One self-contained HTML page per model, in foundry.report.
app.command("report")(report_command)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (a skipped ID column, an unstratified split) as one plain line each."""
    typer.echo(f"warning: {message}", err=True)


def main() -> None:
    """Entry point: user errors print one line and exit 2; never a traceback.

    Usage errors (a missing argument, an unknown option) are click's, printed with usage.
    """
    warnings.showwarning = _show_warning
    try:
        try:
            app(prog_name="foundry")
        except FoundryError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise SystemExit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise SystemExit(130) from None
    except SystemExit as done:
        _exit_if_trained_in_group(done.code)
        raise


def _exit_if_trained_in_group(code: object) -> None:
    """A torchrun worker that trained in a process group ends here, through
    `distributed.exit_worker` (see there why); any other process returns."""
    distributed = sys.modules.get("foundry.training.distributed")  # imported if it trained
    if distributed is not None:
        if code is None:
            code = 0
        elif not isinstance(code, int):
            print(code, file=sys.stderr)  # what SystemExit("message") would have printed
            code = 1
        distributed.exit_worker(code)


if __name__ == "__main__":
    main()
