"""How good chunks and confidences are: shared by training's validation and `asyncvla evaluate`."""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest, bootstrap, spearmanr


def rater_spearman(confidence, step_error) -> float:
    """Rank correlation between confidence and the negated per-step error of the SFM chunk: 1 when the
    rater orders steps exactly by how wrong they are; NaN with fewer than 3 steps or constant input."""
    confidence, step_error = np.asarray(confidence, float), np.asarray(step_error, float)
    if len(confidence) < 3 or np.ptp(confidence) == 0 or np.ptp(step_error) == 0:
        return float('nan')
    return float(spearmanr(confidence, -step_error).statistic)


def rater_spearman_within_position(confidence, step_error, position) -> float:
    """rater_spearman within each step position of the chunk, averaged with the positions' step counts as
    weights: what the rater knows beyond "later steps are worse", which the overall figure mixes in. NaN when
    no position has three steps that vary."""
    confidence, step_error, position = (np.asarray(a, float) for a in (confidence, step_error, position))
    values, weights = [], []
    for at in np.unique(position):
        here = position == at
        value = rater_spearman(confidence[here], step_error[here])
        if np.isfinite(value):
            values.append(value)
            weights.append(int(here.sum()))
    return float(np.average(values, weights=weights)) if values else float('nan')


def chunk_bootstrap(statistic, chunk_of_step, *per_step, resamples: int = 1000, seed: int = 0) -> list[float]:
    """95 % percentile interval of `statistic(*per_step)` over chunks drawn with replacement (steps of one
    chunk share an observation, so chunks, not steps, are the independent draws); [nan, nan] with fewer than
    two chunks."""
    chunk_of_step = np.asarray(chunk_of_step)
    chunks = np.unique(chunk_of_step)
    if len(chunks) < 2:
        return [float('nan'), float('nan')]
    steps_of = {c: np.flatnonzero(chunk_of_step == c) for c in chunks}
    arrays = [np.asarray(a, float) for a in per_step]

    def resampled(drawn):
        index = np.concatenate([steps_of[c] for c in drawn])
        return statistic(*(a[index] for a in arrays))

    result = bootstrap((chunks,), resampled, vectorized=False, n_resamples=resamples, method='percentile', rng=seed)
    return [round(float(result.confidence_interval.low), 4), round(float(result.confidence_interval.high), 4)]


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


def success_summary(successes: dict[str, list[bool]]) -> dict:
    """Per mode, the success rate and its 95 % Wilson interval (20 episodes leave about +-20 points). For two
    modes run on the same scenes, also the episodes only each one won and the exact McNemar p-value of the
    difference (a two-sided binomial test on those discordant episodes)."""
    summary = {}
    for mode, outcomes in successes.items():
        wins, n = int(np.sum(outcomes)), len(outcomes)
        interval = binomtest(wins, n).proportion_ci(0.95, method='wilson') if n else None
        summary[f'success_rate_{mode}'] = wins / n if n else float('nan')
        summary[f'success_ci95_{mode}'] = [round(float(interval.low), 3), round(float(interval.high), 3)] if n else None
    if len(successes) == 2 and len({len(o) for o in successes.values()}) == 1:
        (first, a), (second, b) = successes.items()
        only_first = sum(bool(x) and not y for x, y in zip(a, b))
        only_second = sum(bool(y) and not x for x, y in zip(a, b))
        discordant = only_first + only_second
        summary[f'only_{first}'], summary[f'only_{second}'] = only_first, only_second
        summary['mcnemar_p'] = round(float(binomtest(only_first, discordant).pvalue), 4) if discordant else 1.0
    return summary
