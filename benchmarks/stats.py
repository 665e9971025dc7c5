"""The percentiles every figure is read from: one definition for every part of the benchmark."""

import statistics
from collections.abc import Sequence


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    """p50, p95 and p99, interpolated between the closest ranks (the "inclusive" method, numpy's
    default). A single sample is each of them: statistics.quantiles wants two before Python 3.13."""
    cuts = statistics.quantiles(samples, n=100, method="inclusive") if len(samples) > 1 else list(samples) * 99
    return {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98]}
