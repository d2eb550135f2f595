"""What a run shows and records: a tqdm bar on stderr and `log.jsonl`."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm


class Progress:
    """Step bar with losses, it/s and ETA; silent when disabled or stderr is not a terminal."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self.enabled = enabled and sys.stderr.isatty()
        self._bar = tqdm(total=total, initial=initial, unit="step", file=sys.stderr, dynamic_ncols=True,
                         disable=not self.enabled, smoothing=0.1) if self.enabled else None

    def update(self, values: dict[str, float]) -> None:
        if self._bar is not None:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)
            self._bar.update(1)

    def write(self, message: str) -> None:
        """A line above the bar (or plain stderr when the bar is off)."""
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _json_value(value: Any) -> Any:
    """JSON has no NaN or infinity: write those as strings so every line stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    return value


class JsonlLog:
    """`log.jsonl`: one JSON object a line, appended and flushed as it happens."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def start_fresh(self) -> None:
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")

    def keep_until(self, step: int) -> None:
        """Drop lines after `step` (written after the checkpoint a resumed run starts from),
        so the log of an interrupted-and-resumed run reads like an uninterrupted one."""
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            if record.get("step", 0) <= step:
                kept.append(line)
        temp = self.path.with_name(self.path.name + ".tmp")
        temp.write_text("".join(line + "\n" for line in kept))
        os.replace(temp, self.path)

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(_json_value(record)) + "\n")
