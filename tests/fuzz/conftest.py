"""Hypothesis settings profiles for the fuzz targets: `ci` (default) and `long`.

The profiles are applied to the fuzz tests only, through the `FUZZ` decorator below, and
never loaded globally: the rest of the suite keeps its own settings (and Hypothesis' own
`ci` profile, which it activates when `$CI` is set, is not touched).

- `ci`: bounded and derandomised (the same examples on every run), a few hundred examples
  per target; the whole `tests/fuzz` directory runs in well under a minute.
- `long`: `HYPOTHESIS_PROFILE=long python3 -m pytest tests/fuzz` runs 100,000 examples per
  target (`HYPOTHESIS_FUZZ_EXAMPLES` overrides the count), random, with the example
  database on so a failure is replayed first on the next run. See docs/fuzzing.md.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

__all__ = ["FUZZ", "PROFILE", "scaled"]

_SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

settings.register_profile(
    "curvecert-fuzz-ci", max_examples=400, deadline=None, derandomize=True, database=None,
    suppress_health_check=_SUPPRESS, print_blob=True)
settings.register_profile(
    "curvecert-fuzz-long", max_examples=int(os.environ.get("HYPOTHESIS_FUZZ_EXAMPLES", 100_000)),
    deadline=None, suppress_health_check=_SUPPRESS, print_blob=True,
    phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink))

#: "ci" or "long", from $HYPOTHESIS_PROFILE (anything else means "ci").
PROFILE = "long" if os.environ.get("HYPOTHESIS_PROFILE", "ci") == "long" else "ci"
#: The settings every fuzz target uses.
FUZZ = settings.get_profile(f"curvecert-fuzz-{PROFILE}")


def scaled(fraction: float) -> settings:
    """`FUZZ` with `max_examples` scaled by `fraction` (for the costlier targets)."""
    return settings(FUZZ, max_examples=max(50, int(FUZZ.max_examples * fraction)))
