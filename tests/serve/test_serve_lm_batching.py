"""Continuous batching through the real server (`foundry serve` subprocess): concurrent
streams share the engine and each gets what it gets alone; past the bounded queue a
request is refused with 503 + Retry-After in the OpenAI error shape, charged nothing;
the engine's series are in /metrics."""

from __future__ import annotations

import concurrent.futures
import os
import re
import signal
import time
from pathlib import Path

import httpx
import pytest
import yaml
from tests.serve.serve_app_support import run_cli

from foundry.serve.loadtest import Server, free_port, serve_command

pytestmark = pytest.mark.slow

CORPUS = "\n\n".join(
    f"The {animal} sat on the {thing}. Then the {animal} ran to the {thing} again."
    for animal in ("cat", "dog", "fox", "owl")
    for thing in ("mat", "wall", "box")
)
PLAN = {"lm": {"included_units": 1_000_000, "requests_per_minute": 100_000,
               "tokens_per_minute": 10_000_000}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmbatch")
    env = {**os.environ, "FOUNDRY_HOME": str(root / "home")}
    env.pop("FOUNDRY_DATABASE_URL", None)
    (root / "corpus.txt").write_text(CORPUS)
    config = {
        "name": "tiny-gpt",
        "data": {"path": "corpus.txt"},
        "model": {"type": "gpt", "n_layers": 1, "d_model": 32, "n_heads": 2,
                  "context_length": 2048, "vocab_size": 300},
        "train": {"epochs": 1, "batch_size": 16, "optimizer": {"lr": 3e-3}},
        "lm": {"generation": {"max_tokens": 8, "temperature": 0}},
        # two slots, no queue; a prompt read one token per step, so two long prompts
        # hold both slots long enough for a third request to find them taken
        "serve": {"plans": PLAN, "metrics": "public",
                  "lm": {"max_concurrent": 2, "max_queue": 0, "prefill_chunk": 1,
                         "max_batch_tokens": 1, "retry_after_s": 2}},
    }
    (root / "gpt.yaml").write_text(yaml.safe_dump(config))
    run_cli(root, env, "train", "gpt.yaml")
    key = run_cli(root, env, "keys", "create", "--name", "lm", "--plan", "lm",
                  "--config", "gpt.yaml")
    command = serve_command("tiny-gpt", free_port(), config=root / "gpt.yaml")
    with Server(command, env=env, log=root / "server.log", cwd=root) as running:
        yield {"url": running.url, "headers": {"authorization": f"Bearer {key}"},
               "root": root, "env": env, "pid": running.proc.pid}


def _complete(server, prompt: str, **extra) -> httpx.Response:
    body = {"model": "tiny-gpt", "prompt": prompt, "max_tokens": 8, "temperature": 0,
            **extra}
    return httpx.post(f"{server['url']}/v1/completions", json=body,
                      headers=server["headers"], timeout=120)


def _metric(server, name: str) -> float:
    text = httpx.get(f"{server['url']}/metrics", timeout=30).text
    found = re.search(rf'^{name}\{{model="tiny-gpt"\}} (\S+)$', text, re.MULTILINE)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


def _usage(server) -> int:
    r = httpx.get(f"{server['url']}/v1/usage", headers=server["headers"], timeout=30)
    return r.json()["units_used"]


def test_a_full_queue_is_a_503_with_retry_after_and_charges_nothing(server):
    # ~1,750 tokens, read one a step: the two hold both slots for some hundreds of ms
    # (with 351 tokens, an engine in its own process read both before a loaded CI
    # machine's client had sent the burst)
    long_prompt = "The cat sat on the mat. " * 250
    rejected_before = _metric(server, "foundry_lm_rejections_total")
    before = _usage(server)
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        running = [pool.submit(_complete, server, long_prompt) for _ in range(2)]
        deadline = time.monotonic() + 60
        while _metric(server, "foundry_lm_running") < 2:
            assert time.monotonic() < deadline, "the two long prompts never ran together"
            time.sleep(0.01)
        # a burst while both slots are taken: on an idle machine the long prompts may end
        # within a few requests' time, so one lone request could find a slot free again
        burst = [pool.submit(_complete, server, "The dog") for _ in range(8)]
        answers = [f.result() for f in running + burst]
    refused = [a for a in answers if a.status_code == 503]
    served = [a for a in answers if a.status_code != 503]
    assert refused, "no request of the burst found both slots taken"
    assert [a.status_code for a in served] == [200] * len(served)
    for answer in refused:
        assert answer.headers["retry-after"] == "2"
        error = answer.json()["error"]
        assert error["code"] == "server_busy" and error["type"] == "server_error"
        assert "serve.lm.max_queue" in error["message"]
    # the refused requests reserved and were charged nothing; those that ran were
    assert _usage(server) - before == sum(a.json()["usage"]["total_tokens"] for a in served)
    rejected = _metric(server, "foundry_lm_rejections_total") - rejected_before
    assert rejected == len(refused)
    assert _complete(server, "The dog").status_code == 200  # slots free again


def test_concurrent_requests_get_what_they_get_alone_and_metrics_show_the_engine(server):
    prompts = ["The cat sat on the", "Then the fox ran"]  # two slots, no queue
    params = {"temperature": 1.0, "seed": 7, "max_tokens": 10}
    alone = [_complete(server, p, **params).json()["choices"][0]["text"] for p in prompts]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda p: _complete(server, p, **params), prompts))
    assert [r.json()["choices"][0]["text"] for r in together] == alone
    assert _metric(server, "foundry_lm_tokens_total") > 0
    assert _metric(server, "foundry_lm_queue_wait_seconds_count") >= 4
    assert _metric(server, "foundry_lm_batch_rows_count") > 0
    assert _metric(server, "foundry_lm_tokens_per_second") > 0
    assert _metric(server, "foundry_lm_queued") == 0


def _engine_processes(pid: int) -> list[int]:
    """The `foundry.lm.engine_process` processes under process `pid`, from /proc."""
    found, todo = [], [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").iterdir():
            for child in map(int, (task / "children").read_text().split()):
                todo.append(child)
                if b"foundry.lm.engine_process" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.append(child)
    return found


def test_the_engine_runs_in_its_own_process_and_a_killed_one_is_a_503_not_a_hang(server):
    # its own server on the same registry: killing its engine must not touch the others
    root, env = server["root"], server["env"]
    command = serve_command("tiny-gpt", free_port(), config=root / "gpt.yaml")
    with Server(command, env=env, log=root / "server-kill.log", cwd=root) as running:
        other = {**server, "url": running.url}
        [engine] = _engine_processes(running.proc.pid)
        assert _complete(other, "The cat").status_code == 200  # served by that process
        before = _usage(other)
        long_prompt = "The cat sat on the mat. " * 250  # read one token a step: a while
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            cut = pool.submit(_complete, other, long_prompt)
            deadline = time.monotonic() + 60
            while _metric(other, "foundry_lm_running") < 1:
                assert time.monotonic() < deadline, "the long prompt never started"
                time.sleep(0.01)
            os.kill(engine, signal.SIGKILL)
            answer = cut.result(timeout=60)  # the request in flight ends, with an error
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "model_unavailable"
        refused = _complete(other, "The dog")  # and so does every request after it
        assert refused.status_code == 503
        assert "engine process of model 'tiny-gpt' exited" in refused.json()["error"]["message"]
        ready = httpx.get(f"{running.url}/readyz", timeout=30)
        [state] = ready.json()["models"].values()
        assert ready.status_code == 503 and state.startswith("failed: the engine process")
        assert _usage(other) == before  # neither computed a token: neither is charged
        assert httpx.get(f"{running.url}/healthz", timeout=30).status_code == 200


def test_the_engine_process_ends_with_a_server_killed_by_sigkill(server):
    root, env = server["root"], server["env"]
    command = serve_command("tiny-gpt", free_port(), config=root / "gpt.yaml")
    with Server(command, env=env, log=root / "server-sigkill.log", cwd=root) as running:
        [engine] = _engine_processes(running.proc.pid)
        # the server alone (not its process group): no shutdown code of its runs, and
        # the engine learns of it only by its socket closing
        os.kill(running.proc.pid, signal.SIGKILL)
        running.proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{engine}").exists() and _state(engine) != "Z":
            assert time.monotonic() < deadline, "the engine outlived its server"
            time.sleep(0.05)


def _state(pid: int) -> str:
    """A process's state letter (Z: exited, not yet reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
