"""What ``init_`` did, per layer: frozen dataclasses with a readable text and rich form."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["LayerInit", "InitSummary"]


@dataclass(frozen=True)
class LayerInit:
    """One initialised layer."""

    name: str  # qualified module name, "(root)" for the model itself
    kind: str  # module class, e.g. "Linear"
    scheme: str  # a Scheme value: "xavier" / "he" / "orthogonal" / "lsuv"
    activation: str  # the activation the gain was chosen for, e.g. "Tanh", "relu", "none"
    source: str  # how the activation was found: "forward trace", "registration order", "given"...
    gain: float  # gain used for the draw
    weight_std: float  # std of the weight after init (all weight matrices of the layer)
    output_var: float | None = None  # lsuv: output variance on the batch after rescaling
    iterations: int = 0  # lsuv: rescaling passes used
    note: str = ""  # anything unusual (per-gate init, skipped rescaling...)

    def __str__(self) -> str:
        var = (
            ""
            if self.output_var is None
            else f", out var {self.output_var:.3f} ({self.iterations} it)"
        )
        note = f" — {self.note}" if self.note else ""
        return (
            f"{self.name} [{self.kind}]: {self.scheme}, gain {self.gain:.3f} for {self.activation} "
            f"({self.source}), w std {self.weight_std:.4g}{var}{note}"
        )


@dataclass(frozen=True)
class InitSummary:
    """Per-layer record of an ``init_`` call; iterates, indexes and prints like a list."""

    scheme: str
    layers: tuple[LayerInit, ...]

    def __iter__(self) -> Iterator[LayerInit]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> LayerInit:
        return self.layers[i]

    def by_name(self, name: str) -> LayerInit:
        """The entry of the layer called ``name``; KeyError if it was not initialised."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def __str__(self) -> str:
        head = f"init_ {self.scheme}: {len(self.layers)} layers"
        return "\n".join([head, *(f"  {layer}" for layer in self.layers)])

    def __rich__(self) -> Any:
        from rich.table import Table

        table = Table(title=f"init_ {self.scheme}", title_justify="left")
        for col in ("layer", "kind", "activation", "source", "gain", "w std", "out var", "note"):
            table.add_column(
                col, justify="right" if col in ("gain", "w std", "out var") else "left"
            )
        for r in self.layers:
            var = "" if r.output_var is None else f"{r.output_var:.3f}"
            table.add_row(
                r.name,
                r.kind,
                r.activation,
                r.source,
                f"{r.gain:.3f}",
                f"{r.weight_std:.4g}",
                var,
                r.note,
            )
        return table
