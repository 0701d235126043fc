"""`selfcorrect serve`: any local model (the sandbox by default) behind an OpenAI-compatible HTTP API."""

from __future__ import annotations

from typing import Annotated

import typer


def serve_command(
    model: Annotated[str, typer.Option(help="Model folder, hub id, or `sandbox`.")] = "sandbox",
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default: there is no authentication).")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    served_model_name: Annotated[str | None, typer.Option(help="Name clients pass as `model` (default: --model "
                                                                "as given).")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    dtype: Annotated[str, typer.Option(help="float32, bfloat16, float16 or auto.")] = "auto",
    max_batch: Annotated[int, typer.Option(help="Most requests decoded together in one backend call.")] = 64,
) -> None:
    """Serve a model with /v1/chat/completions, /v1/completions (streaming, logprobs, top_logprobs, n, seed),
    /v1/models and /health until Ctrl-C."""
    from selfcorrect.serving.app import serve_model

    serve_model(model=model, host=host, port=port, served_model_name=served_model_name, device=device,
                dtype=dtype, max_batch=max_batch)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
