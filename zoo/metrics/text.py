"""Text-reading metrics: edit distance, normalised edit similarity (AnyText's NED), character error rate."""

from __future__ import annotations


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insert, delete, substitute, each 1)."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def normalized_edit_similarity(prediction: str, truth: str) -> float:
    """1 - ED / max(len): 1 for an exact read, 0 for nothing in common (AnyText's NED, Sec. 5.1)."""
    longest = max(len(prediction), len(truth))
    return 1.0 if longest == 0 else 1.0 - edit_distance(prediction, truth) / longest


def character_error_rate(reading: str, reference: str) -> float:
    """ED / len(reference): the edits per reference character (above 1 when the reading adds much)."""
    return edit_distance(reading, reference) / max(len(reference), 1)
