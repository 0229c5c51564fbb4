"""Outcome data with a planted signal: prompts with one word only the strong model answers (for quality tests)."""

from __future__ import annotations

import random
from pathlib import Path

FILLER = ("river mountain garden window letter market teacher village engine orange silver winter doctor "
          "bridge castle forest island kitchen ladder mirror planet rocket saddle tunnel violin wagon").split()
PLANTED = "quantum"


def planted_prompt(rng: random.Random, planted: bool) -> str:
    words = rng.choices(FILLER, k=rng.randint(6, 14))
    if planted:
        words.insert(rng.randrange(len(words) + 1), PLANTED)
    return "Explain the " + " ".join(words) + "?"


def planted_csv(path: Path, rows: int = 300, seed: int = 7, planted_is_hard: bool = True) -> Path:
    """Prompts with "quantum" only the strong model answers; the rest the weak one does, the strong one mostly.

    With planted_is_hard False the roles swap: prompts without the word are the ones only the strong model answers.
    """
    rng = random.Random(seed)
    lines = ["prompt,source,weak_correct,strong_correct"]
    for i in range(rows):
        planted = i % 2 == 0
        hard = planted == planted_is_hard
        weak, strong = (0, 1) if hard else (1, int(rng.random() > 0.2))
        lines.append(f'"{planted_prompt(rng, planted)} (case {i})",synthetic/planted,{weak},{strong}')
    path.write_text("\n".join(lines) + "\n")
    return path
