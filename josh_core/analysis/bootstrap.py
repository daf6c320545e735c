"""Bootstrap standard deviation of a benchmark score against the number of conversations
(paper Figure 3c, after Efron 1992).

For each size n of a grid, draw `resamples` samples of n conversations with replacement from
the observed per-conversation scores, compute the metric (a mean) of each sample, and report
the standard deviation of those means. The curve says how many conversations a benchmark
needs before its score stops moving. Seeded: the same scores, grid and seed give the same
numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

DEFAULT_RESAMPLES = 1000


# Bounds checked before anything is drawn: far above any useful setting, low enough that a typo
# (--resamples 1000000000000) is an error rather than a MemoryError or hours of work.
MAX_RESAMPLES = 1_000_000
MAX_SAMPLE_SIZE = 1_000_000
_BLOCK_DRAWS = 4_000_000  # indices drawn at a time (32 MB)


def default_sizes(total: int) -> list[int]:
    """A grid of sample sizes from 5 up to the number of observed conversations."""
    if total <= 0:
        return []
    grid = [5, 10, 25, 50, 100, 150, 200, 300, 450, 600, 800, 1000]
    sizes = [n for n in grid if n < total]
    sizes.append(total)
    return sizes


def bootstrap_std(
    scores: dict[str, Sequence[float]],
    sizes: Sequence[int] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> pd.DataFrame:
    """Bootstrap std of the mean of each named per-conversation score, per sample size.

    `scores` maps a metric name to one value per conversation, all the same length (e.g.
    {"average_reward": rewards, "success_rate": 1.0/0.0 per conversation}); the conversations
    resampled are shared across metrics, so rows of one size come from the same draws.

    Returns columns: metric, n (sample size), mean (of the resampled means), std (their
    population standard deviation), resamples.
    """
    columns = ["metric", "n", "mean", "std", "resamples"]
    names = list(scores)
    arrays = [np.asarray(scores[name], dtype=float) for name in names]
    total = len(arrays[0]) if arrays else 0
    if any(len(a) != total for a in arrays):
        raise ValueError("every metric needs one score per conversation")
    if total == 0:
        return pd.DataFrame(columns=columns)
    if not 1 <= resamples <= MAX_RESAMPLES:
        raise ValueError(f"--resamples: from 1 to {MAX_RESAMPLES}, got {resamples}")
    sizes = list(sizes) if sizes is not None else default_sizes(total)
    if any(n < 1 for n in sizes):
        raise ValueError("sample sizes must be positive")
    if any(n > MAX_SAMPLE_SIZE for n in sizes):
        raise ValueError(f"--bootstrap-sizes: at most {MAX_SAMPLE_SIZE} conversations per sample")
    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        # Drawn in blocks of rows so memory stays bounded whatever resamples x n is; the
        # generator fills rows in order, so the draws equal one (resamples, n) array's.
        block = max(1, _BLOCK_DRAWS // n)
        sums = {name: [] for name in names}
        for start in range(0, resamples, block):
            picks = rng.integers(0, total, size=(min(block, resamples - start), n))
            for name, values in zip(names, arrays):
                sums[name].append(values[picks].mean(axis=1))
        for name in names:
            means = np.concatenate(sums[name])
            rows.append(
                {"metric": name, "n": int(n), "mean": float(means.mean()), "std": float(means.std()),
                 "resamples": resamples}
            )  # fmt: skip
    return pd.DataFrame(rows, columns=columns)
