"""A stand-in for `text-generation-launcher` in tests: our local server (TGI's HTTP contract) on
the given port with the given `--lora-adapters name=/path,...`. With `--drop-adapters` it
behaves like a TGI that did not load them: an unknown adapter id is answered, silently, by the
base model (TGI issue 2505), which the controller's smoke check must catch. With
`--fail-generate` every generation fails (a server that is healthy but cannot answer)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: find `core` without an install
from core.llm.local_model import LocalModel  # noqa: E402
from core.llm.server import create_app  # noqa: E402


class _AnyAdapter(dict):  # type: ignore[type-arg]
    """Claims every adapter id, like TGI's router does."""

    def __contains__(self, key: object) -> bool:
        return True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--lora-adapters", default="")
    parser.add_argument("--drop-adapters", action="store_true")
    parser.add_argument("--fail-generate", action="store_true")
    args = parser.parse_args()
    model = LocalModel(args.model)
    if args.drop_adapters:
        model.adapters = _AnyAdapter()
        base_generate = model.generate

        def generate(input_ids: list[int], params: Any, adapter_id: str | None = None) -> Any:
            return base_generate(input_ids, params, None)

        model.generate = generate  # type: ignore[method-assign]
    elif args.fail_generate:
        def generate(input_ids: list[int], params: Any, adapter_id: str | None = None) -> Any:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

        model.generate = generate  # type: ignore[method-assign]
    else:
        for spec in filter(None, args.lora_adapters.split(",")):
            name, _, path = spec.partition("=")
            model.load_adapter(name, path)
    uvicorn.run(create_app(model, default_max_new_tokens=16), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
