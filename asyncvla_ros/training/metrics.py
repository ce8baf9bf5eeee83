"""How good chunks and confidences are: shared by training's validation and `asyncvla evaluate`."""
from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr


def rater_spearman(confidence, step_error) -> float:
    """Rank correlation between confidence and the negated per-step error of the SFM chunk: 1 when the
    rater orders steps exactly by how wrong they are; NaN with fewer than 3 steps or constant input."""
    confidence, step_error = np.asarray(confidence, float), np.asarray(step_error, float)
    if len(confidence) < 3 or np.ptp(confidence) == 0 or np.ptp(step_error) == 0:
        return float('nan')
    return float(spearmanr(confidence, -step_error).statistic)


def reliability_bins(confidence, step_error, bins: int = 10) -> dict:
    """Mean per-step error and count in equal-width confidence bins over [0, 1] (a reliability diagram
    for a regression rater: error should fall as confidence rises)."""
    confidence, step_error = np.asarray(confidence, float), np.asarray(step_error, float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges) - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    sums = np.bincount(which, weights=step_error, minlength=bins)
    mean = np.divide(sums, counts, out=np.full(bins, np.nan), where=counts > 0)
    return {'centers': (edges[:-1] + edges[1:]) / 2, 'mean_error': mean, 'counts': counts}
