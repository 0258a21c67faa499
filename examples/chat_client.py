"""Chat with a model served by `foundry serve`, through the official `openai` client.

    foundry serve gpt-chat &                                    # examples/gpt_chat.yaml
    export FOUNDRY_API_KEY=$(foundry keys create --name me --plan trial)
    python examples/chat_client.py "What does json.dumps do?"
    python examples/chat_client.py --model tiny-llama-chat --temperature 0 "What does os.walk do?"

The reply is printed as it streams, token by token, then the usage the server metered
(and billed the key for): prompt + completion tokens. Any OpenAI-compatible server works
the same way; only `--base-url`, the key and the model name change.
"""

from __future__ import annotations

import argparse
import os
import sys

from openai import OpenAI


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("prompt", help="the user message")
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="the API root")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("FOUNDRY_API_KEY"),
        help="a key from `foundry keys create` (default: $FOUNDRY_API_KEY)",
    )
    parser.add_argument("--model", default="gpt-chat", help="a served model's name")
    parser.add_argument("--system", help="an optional system message before the prompt")
    parser.add_argument("--max-tokens", type=int, default=64, help="most tokens in the reply")
    parser.add_argument("--temperature", type=float, default=0.7, help="0 = greedy")
    parser.add_argument("--seed", type=int, help="the same seed gives the same reply")
    args = parser.parse_args(argv)
    if not args.api_key:
        parser.error("no API key: pass --api-key or set FOUNDRY_API_KEY")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    client = OpenAI(base_url=args.base_url, api_key=args.api_key)
    messages = [{"role": "user", "content": args.prompt}]
    if args.system:
        messages.insert(0, {"role": "system", "content": args.system})
    stream = client.chat.completions.create(
        model=args.model,
        messages=messages,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        seed=args.seed,
        stream=True,
        stream_options={"include_usage": True},  # a last chunk with the usage, no choices
    )
    usage = None
    finish_reason = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            print(choice.delta.content or "", end="", flush=True)
            finish_reason = choice.finish_reason or finish_reason
    print()
    if usage is not None:
        print(
            f"[finish_reason={finish_reason} prompt_tokens={usage.prompt_tokens} "
            f"completion_tokens={usage.completion_tokens} total_tokens={usage.total_tokens}]"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
