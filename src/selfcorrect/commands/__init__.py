"""CLI command modules; each exposes `register(app)` (see selfcorrect.cli.COMMAND_MODULES)."""
