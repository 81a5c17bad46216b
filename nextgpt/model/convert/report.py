"""What a conversion did with every source key and every target tensor (written as conversion.json)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ConversionReport:
    """What happened to every source key and every target tensor."""

    format: str
    sources: list[str] = field(default_factory=list)
    mapped: dict[str, int] = field(default_factory=dict)  # target group -> number of tensors imported
    # written key (embeddings.* or signal_rows.*) -> where its rows came from and the drift of the original rows
    embeddings: dict[str, dict[str, Any]] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)  # source keys with no counterpart, and why
    replaced: list[str] = field(default_factory=list)  # a later source replaced an earlier tensor
    left_over: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    misshaped: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)  # target tensors / groups freshly initialised
    notes: list[str] = field(default_factory=list)
    lora: dict[str, Any] | None = None
    output: str = ""

    @property
    def problems(self) -> bool:
        return bool(self.left_over or self.missing or self.misshaped)

    def problem_text(self, limit: int = 20) -> str:
        lines = []
        for title, items in (("missing", self.missing), ("unexpected / left over", self.left_over),
                             ("mis-shaped", self.misshaped)):
            if items:
                shown = items[:limit] + ([f"… and {len(items) - limit} more"] if len(items) > limit else [])
                lines.append(f"  {title} ({len(items)}): " + "; ".join(shown))
        return "\n".join(lines)

    def lines(self) -> list[str]:
        out = [f"converted {self.format.upper()} checkpoint from {', '.join(self.sources)} -> {self.output}"]
        out += [f"  imported {n} tensor(s) into {group}" for group, n in self.mapped.items()]
        for name, info in self.embeddings.items():
            if info.get("rows_from_source"):
                line = f"  {name}: {info['rows_from_source']} rows from {info['source']} (ids {info['row_ids']})"
                if "original_rows" in info:
                    line += (f"; {info['original_rows_changed']} of the {info['original_rows']} original rows differ "
                             f"from the base LLM (max |diff| {info['original_rows_max_abs_diff']:.3g}, mean "
                             f"{info['original_rows_mean_abs_diff']:.3g})")
            else:
                line = f"  {name}: {info['rows_mean_initialised']} rows {info['why']}: {info['note']}"
            out.append(line)
        if self.lora:
            out.append(f"  LoRA adapter: r={self.lora['r']} alpha={self.lora['alpha']} dropout={self.lora['dropout']} "
                       f"targets={self.lora['target_modules']}")
        out += [f"  note: {n}" for n in self.notes]
        out += [f"  dropped: {d}" for d in self.dropped]
        out += [f"  replaced: {r}" for r in self.replaced]
        out += [f"  freshly initialised: {f}" for f in self.fresh]
        if self.problems:
            out.append("  UNMATCHED (allowed by --allow-unmatched):\n" + self.problem_text())
        return out
