"""`selfcorrect serve`: any local model (the sandbox by default) behind an OpenAI-compatible HTTP API."""

from __future__ import annotations

import typer

from selfcorrect.commands.options import Device, Dtype, Host, MaxBatch, Model, Port, ServedModelName


def serve_command(model: Model = None, host: Host = "127.0.0.1", port: Port = 8000,
                  served_model_name: ServedModelName = None, device: Device = "cpu", dtype: Dtype = "auto",
                  max_batch: MaxBatch = 64) -> None:
    """Serve a model with /v1/chat/completions, /v1/completions (streaming, logprobs, top_logprobs, n, seed),
    /v1/models and /health until Ctrl-C."""
    from selfcorrect.serving.app import serve_model

    serve_model(model=model or "sandbox", host=host, port=port, served_model_name=served_model_name, device=device,
                dtype=dtype, max_batch=max_batch)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
