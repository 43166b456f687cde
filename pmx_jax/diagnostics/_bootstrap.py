"""Parameter uncertainty by the nonparametric (case) bootstrap.

Subjects are drawn with replacement (within strata when asked), each draw
becoming a new subject, and the model is refitted from the original
estimates.  A replicate keeps the number of subjects of the original data, so
its arrays are the original padded arrays indexed by the drawn subjects: every
shape and every static flag (dose slots, steady state) is that of the original
fit, and each refit reuses the compiled estimation step of the original fit
(the number of compilations is recorded per replicate).  Refits run one after
another; they are not batched over replicates.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from .._progress import _Progress
from ..estimation import fit as _fit_model
from ..model import natural_names, natural_vector
from ._compile_counter import compilation_count
from ._percentiles import _percentile_table
from ._resample import _resampled_prepared, resample_indices, subject_strata


class BootstrapResult:
    """A nonparametric bootstrap of a fit.

    Attributes:
        replicates: one row per replicate: ``replicate``, ``status``
            (``"converged"``, ``"not converged"`` or ``"failed"``: the refit raised
            or gave non-finite estimates), ``ofv``, ``iterations``, ``seconds``,
            ``compilations`` (XLA compilations during that refit), ``message``
            and the estimates on NONMEM's scale (one column per parameter).
        subject_index: ``(n, n_subjects)`` drawn subject positions per replicate.
        names, estimate: the parameters and the original estimates.
        level: the default confidence level; include: which replicates enter the
            statistics (``"converged"`` or ``"all"``: every one not failed).
        n, n_converged, n_not_converged, n_failed, fraction_converged.
        elapsed_seconds: wall time of all refits.
    """

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    @property
    def n(self) -> int:
        return len(self.replicates)

    def _count(self, status: str) -> int:
        return int((self.replicates["status"] == status).sum())

    @property
    def n_converged(self) -> int:
        return self._count("converged")

    @property
    def n_not_converged(self) -> int:
        return self._count("not converged")

    @property
    def n_failed(self) -> int:
        return self._count("failed")

    @property
    def fraction_converged(self) -> float:
        return self.n_converged / max(self.n, 1)

    @property
    def compilations_after_first(self) -> int:
        """Compilations during all refits but the first (0 when every refit
        reused the compiled estimation step)."""
        return int(self.replicates["compilations"].iloc[1:].sum())

    def used(self) -> pd.DataFrame:
        """The replicates that enter the statistics (see ``include``)."""
        status = self.replicates["status"]
        keep = status == "converged" if self.include == "converged" else status != "failed"
        return self.replicates.loc[keep]

    def summary(self, level: float | None = None) -> pd.DataFrame:
        """Per parameter: original ``estimate``, bootstrap ``mean``, ``median``,
        ``se`` (SD of the replicates), ``rse`` (%), ``bias`` (mean - estimate)
        and the percentile interval ``ci_lower``/``ci_upper`` at ``level``."""
        values = self.used()[list(self.names)].to_numpy(dtype=float)
        table = _percentile_table(values, self.names, self.estimate, level or self.level)
        table["n_used"] = values.shape[0]
        return table

    def ci(self, level: float | None = None) -> pd.DataFrame:
        return self.summary(level)[["parameter", "ci_lower", "ci_upper"]]

    @property
    def se(self) -> pd.Series:
        return self.summary().set_index("parameter")["se"]

    @property
    def bias(self) -> pd.Series:
        return self.summary().set_index("parameter")["bias"]

    def __str__(self) -> str:
        level = self.level
        head = (
            f"Bootstrap: {self.n} replicates, {self.n_converged} converged, "
            f"{self.n_not_converged} not converged, {self.n_failed} failed "
            f"({self.elapsed_seconds:.1f} s); statistics over {self.include} replicates, "
            f"{100 * level:g}% percentile intervals"
        )
        return head + "\n" + self.summary().to_string(index=False)

    __repr__ = __str__


def bootstrap(
    fit: Any,
    n: int = 200,
    *,
    seed: int = 0,
    stratify: Any = None,
    method: str | None = None,
    progress: bool = True,
    level: float = 0.95,
    include: str = "converged",
    **fit_options: Any,
) -> BootstrapResult:
    """Nonparametric bootstrap: resample subjects with replacement, refit,
    and summarise the replicate estimates (percentile CIs, SE, bias).

    Args:
        fit: a :class:`~pmx_jax.estimation.FitResult` (its data are resampled
            and its final estimates start every refit).
        n: number of replicates.
        seed: seed of the resampling (numpy ``default_rng``); the same seed gives
            the same replicates.
        stratify: resample within strata: a covariate/column name (baseline
            value per subject), one label per subject, or a mapping ID -> label
            (see :func:`subject_strata`); stratum sizes are kept.
        method: estimation method of the refits (default: the fit's).
        progress: print a progress line on stderr.
        level: default confidence level of :meth:`BootstrapResult.summary`.
        include: ``"converged"`` (default) uses converged refits only;
            ``"all"`` also those stopped before convergence.  Failed refits (an
            exception, or non-finite estimates) never enter the statistics but
            are counted and their messages kept.
        **fit_options: passed to :func:`pmx_jax.fit` (``max_iterations``,
            ``gradient_tolerance``, ``ebe_max_steps``, ...).  The covariance step is
            not run on the replicates.

    Returns:
        a :class:`BootstrapResult`.

    Example:
        >>> # boot = pmx.diagnostics.bootstrap(result, n=200, stratify="SEX")
        >>> # boot.summary()
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if include not in ("converged", "all"):
        raise ValueError(f"include must be 'converged' or 'all', got {include!r}")
    if "covariance" in fit_options:
        raise TypeError("bootstrap refits do not run a covariance step (covariance=None)")
    problem = getattr(fit, "_problem", None)
    if problem is None:
        raise ValueError("this FitResult keeps no data to resample (no _problem)")
    source = problem.source
    n_subjects = source.subjects.n_subjects
    if stratify is None:
        strata = np.zeros(n_subjects)
    elif fit._dataset is not None:
        strata = subject_strata(fit._dataset, stratify)
    elif isinstance(stratify, str | Mapping):
        raise ValueError(
            "stratify by name or ID needs the fit's Dataset; this fit was given prepared data: "
            "pass one label per subject instead"
        )
    else:
        strata = np.asarray(stratify)
    if strata.shape != (n_subjects,):
        raise ValueError(f"stratify must give one label per subject ({n_subjects})")
    if stratify is not None:
        counts = pd.Series(strata).value_counts()
        if (counts < 2).any():
            warnings.warn(
                f"{int((counts < 2).sum())} stratum/strata of the stratification hold a single "
                "subject, which is then drawn in every replicate (stratify by a categorical "
                "covariate)",
                UserWarning,
                stacklevel=2,
            )
    method = method or fit.method
    fit_options.setdefault("chunk_size", problem.chunk)
    fit_options.setdefault("ebe_search", getattr(fit, "ebe_search", "global"))
    model = fit.model
    names = natural_names(model)
    estimate = np.asarray(natural_vector(model), dtype=float)
    rng = np.random.default_rng(seed)
    bar = _Progress("bootstrap", n, progress)
    rows, indices = [], []
    started = time.perf_counter()
    for replicate in range(1, n + 1):
        index = resample_indices(strata, rng)
        indices.append(index)
        before = compilation_count()
        tic = time.perf_counter()
        row: dict[str, Any] = dict(replicate=replicate)
        try:
            refit = _fit_model(
                model,
                _resampled_prepared(source, index),
                method,
                covariance=None,
                progress=False,
                **fit_options,
            )
            values = np.asarray(natural_vector(refit.model), dtype=float)
            finite = bool(np.all(np.isfinite(values)) and np.isfinite(refit.ofv))
            status = ("converged" if refit.converged else "not converged") if finite else "failed"
            row.update(
                status=status,
                ofv=refit.ofv,
                iterations=refit.iterations,
                message=refit.message if finite else f"non-finite estimates ({refit.message})",
            )
        except Exception as error:  # one bad replicate is reported, not fatal
            values = np.full(len(names), np.nan)
            row.update(
                status="failed",
                ofv=np.nan,
                iterations=0,
                message=f"{type(error).__name__}: {error}",
            )
        row.update(seconds=time.perf_counter() - tic, compilations=compilation_count() - before)
        row.update(zip(names, values, strict=True))
        rows.append(row)
        done = len(rows)
        n_conv = sum(r["status"] == "converged" for r in rows)
        n_fail = sum(r["status"] == "failed" for r in rows)
        bar.update(done, f"refits ({n_conv} converged, {n_fail} failed)")
    bar.close()
    columns = ["replicate", "status", "ofv", "iterations", "seconds", "compilations", "message"]
    return BootstrapResult(
        replicates=pd.DataFrame(rows, columns=columns + list(names)),
        subject_index=np.stack(indices),
        names=names,
        estimate=estimate,
        level=level,
        include=include,
        method=method,
        seed=seed,
        elapsed_seconds=time.perf_counter() - started,
    )
