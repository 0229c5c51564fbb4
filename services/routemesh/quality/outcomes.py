"""Routing outcomes: which models answered which prompts well, read from CSV, split by a stable hash."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

OUTCOME_SUFFIX = "_correct"
# An outcome not known: a ledger row says only how the model that served it did (quality.ledger).
UNKNOWN = -1
# The share of prompts kept for validation: chosen by a hash of the prompt, so it never moves.
VALIDATION_SHARE = 0.2
# The outcomes shipped with routemesh (data/README.md gives their source and licence).
SHIPPED_OUTCOMES = "data/outcomes_train.csv.gz"


def shipped_outcomes_path() -> Path:
    """The file of the outcomes shipped with routemesh (inside the installed package)."""
    return Path(str(resources.files("routemesh.quality").joinpath(SHIPPED_OUTCOMES)))


class OutcomesError(ValueError):
    """An outcomes file that cannot be used; the message says what is wrong and where."""


@dataclass(frozen=True)
class OutcomeTable:
    """Prompts, their benchmark (`source`, optional) and one outcome column per model: 0, 1, or UNKNOWN."""

    prompts: tuple[str, ...]
    sources: tuple[str, ...]
    models: tuple[str, ...]
    outcomes: dict[str, tuple[int, ...]]

    def __len__(self) -> int:
        return len(self.prompts)

    def benchmark(self, i: int) -> str:
        """The benchmark of row i: the source up to its first '/' ("mmlu/anatomy" -> "mmlu")."""
        return self.sources[i].split("/", 1)[0] if self.sources[i] else "all"

    def extended(self, other: OutcomeTable) -> OutcomeTable:
        """This table with `other`'s rows after it (the same models)."""
        return OutcomeTable(prompts=self.prompts + other.prompts, sources=self.sources + other.sources,
                            models=self.models,
                            outcomes={m: self.outcomes[m] + other.outcomes[m] for m in self.models})

    def subset(self, rows: Sequence[int]) -> OutcomeTable:
        return OutcomeTable(
            prompts=tuple(self.prompts[i] for i in rows), sources=tuple(self.sources[i] for i in rows),
            models=self.models, outcomes={m: tuple(v[i] for i in rows) for m, v in self.outcomes.items()})


def _text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise OutcomesError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise OutcomesError(f"{path}: not a valid gzip file ({exc})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise OutcomesError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def parse_outcomes(text: str, name: str = "outcomes") -> OutcomeTable:
    """Parse CSV text with a `prompt` column and one `<model>_correct` column (0 or 1) per model."""
    csv.field_size_limit(1 << 26)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise OutcomesError(f"{name}: empty; expected a header with prompt and <model>_correct columns") from None
    except csv.Error as exc:
        raise OutcomesError(f"{name}: not valid CSV ({exc})") from None
    header = [h.strip() for h in header]
    if "prompt" not in header:
        raise OutcomesError(f"{name}: no 'prompt' column (columns: {', '.join(header)})")
    outcome_columns = [h for h in header if h.endswith(OUTCOME_SUFFIX) and len(h) > len(OUTCOME_SUFFIX)]
    if not outcome_columns:
        raise OutcomesError(f"{name}: no outcome columns; name one per model '<model>{OUTCOME_SUFFIX}' with 0 or 1")
    at = {h: header.index(h) for h in header}
    prompts: list[str] = []
    sources: list[str] = []
    values: dict[str, list[int]] = {h: [] for h in outcome_columns}
    try:
        for line, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise OutcomesError(f"{name}: row at line {line} has {len(row)} fields, the header {len(header)}")
            prompt = row[at["prompt"]]
            if not prompt.strip():
                raise OutcomesError(f"{name}: row at line {line} has an empty prompt")
            for column in outcome_columns:
                cell = row[at[column]].strip()
                if cell not in ("0", "1"):
                    raise OutcomesError(f"{name}: row at line {line}, column {column}: {cell!r} is not 0 or 1")
                values[column].append(int(cell))
            prompts.append(prompt)
            sources.append(row[at["source"]].strip() if "source" in at else "")
    except csv.Error as exc:
        raise OutcomesError(f"{name}: not valid CSV ({exc})") from None
    if not prompts:
        raise OutcomesError(f"{name}: no rows after the header")
    models = tuple(c.removesuffix(OUTCOME_SUFFIX) for c in outcome_columns)
    return OutcomeTable(prompts=tuple(prompts), sources=tuple(sources), models=models,
                        outcomes={m: tuple(values[m + OUTCOME_SUFFIX]) for m in models})


def load_outcomes(path: str | Path) -> OutcomeTable:
    """Read an outcomes CSV (plain or gzip-compressed); OutcomesError says what is wrong."""
    path = Path(path)
    return parse_outcomes(_text(path), str(path))


def in_validation(prompt: str, share: float = VALIDATION_SHARE) -> bool:
    """Whether a prompt belongs to the validation split: the first 8 bytes of its SHA-256, as a fraction."""
    point = int.from_bytes(hashlib.sha256(prompt.encode("utf-8")).digest()[:8], "big") / 2**64
    return point < share


def split(table: OutcomeTable, share: float = VALIDATION_SHARE) -> tuple[OutcomeTable, OutcomeTable]:
    """(training, validation) rows of the table, by in_validation()."""
    validation = [i for i, p in enumerate(table.prompts) if in_validation(p, share)]
    chosen = set(validation)
    return table.subset([i for i in range(len(table)) if i not in chosen]), table.subset(validation)
