"""CLI subcommands: one module each, exposing ``register(subparsers)``."""

__all__: list[str] = []
