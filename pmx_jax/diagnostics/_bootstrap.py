"""Parameter uncertainty by resampling: the nonparametric (case) bootstrap, and
sampling importance resampling (SIR; Dosne, Bergstrand, Harling and Karlsson,
J Pharmacokinet Pharmacodyn 2016).

Bootstrap.  Subjects are drawn with replacement (within strata when asked),
each draw becoming a new subject, and the model is refitted from the original
estimates.  A replicate keeps the number of subjects of the original data, so
its arrays are the original padded arrays indexed by the drawn subjects: every
shape and every static flag (dose slots, steady state) is that of the original
fit, and each refit reuses the compiled estimation step of the original fit
(the number of compilations is recorded per replicate).  Refits run one after
another; they are not batched over replicates.

SIR.  Parameter vectors are drawn from a multivariate normal (or t)
proposal centred at the estimates with the covariance step's matrix on the
estimation (unconstrained) scale, weighted by ``exp(-OFV/2)`` over the proposal
density, and a subset is drawn without replacement with probabilities
proportional to the weights.  As in Dosne et al., the target is the likelihood
with a flat prior on NONMEM's scale (THETA, OMEGA variances): the weight
carries the Jacobian of the map from the estimation scale, whose bounded
THETAs and positive-definite OMEGAs keep every draw inside the parameter space.
The OFVs are evaluated in fixed-size batches (``vmap`` over parameter vectors,
one compilation).
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.flatten_util import ravel_pytree
from scipy import stats

from ..data._dataset import Dataset
from ..estimation._covariance import natural_names, natural_vector
from ..estimation._fit import fit as _fit_model
from ..estimation._objective import _population_ofv
from ..simulation._core import Prepared

# -- compilation counter ---------------------------------------------------------------

_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
_compilations = [0]
_listening = [False]


def _on_event(event: str, duration: float, **_: Any) -> None:
    if event == _BACKEND_COMPILE:
        _compilations[0] += 1


def compilation_count() -> int:
    """XLA compilations in this process since the first call (a counter fed by
    ``jax.monitoring``): the difference between two calls is the number of
    compilations in between."""
    if not _listening[0]:
        jax.monitoring.register_event_duration_secs_listener(_on_event)
        _listening[0] = True
    return _compilations[0]


# -- text progress -----------------------------------------------------------------------


class _Progress:
    """One self-overwriting line on stderr: done/total, rate and time left."""

    def __init__(self, label: str, total: int, enabled: bool) -> None:
        self.label, self.total, self.enabled = label, total, enabled
        self.started = time.perf_counter()
        self.last = -math.inf

    def update(self, done: int, detail: str = "") -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if done < self.total and now - self.last < 0.2:
            return
        self.last = now
        elapsed = now - self.started
        left = elapsed / done * (self.total - done) if done else math.nan
        left_text = f", about {left:.0f} s left" if done and done < self.total else ""
        sys.stderr.write(
            f"\r{self.label}: {done}/{self.total}{' ' + detail if detail else ''} "
            f"({elapsed:.0f} s{left_text})   "
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


# -- resampling subjects -------------------------------------------------------------------


def subject_strata(dataset: Dataset, stratify: Any) -> np.ndarray:
    """One stratum label per subject of ``dataset``.

    ``stratify``: a covariate or table column name (matched case-insensitively;
    the subject's first record, i.e. its baseline value, is used), a sequence of
    one label per subject (dataset order), or a mapping ID -> label.
    """
    n = dataset.n_subjects
    if isinstance(stratify, str):
        first = dataset.records.groupby("subject", sort=True).head(1).index.to_numpy()
        for frame in (dataset.covariates, dataset.table.reset_index(drop=True)):
            by_upper = {str(c).upper(): c for c in frame.columns}
            column = by_upper.get(stratify.upper())
            if column is not None:
                return frame[column].to_numpy()[first]
        raise KeyError(
            f"cannot stratify by {stratify!r}: the dataset has no such covariate or column "
            f"(covariates: {', '.join(dataset.covariate_names) or '(none)'}; columns: "
            f"{', '.join(map(str, dataset.table.columns))})"
        )
    if isinstance(stratify, Mapping):
        missing = [i for i in dataset.ids if i not in stratify]
        if missing:
            raise KeyError(f"stratify has no label for ID(s) {missing[:5]}")
        return np.asarray([stratify[i] for i in dataset.ids])
    labels = np.asarray(stratify)
    if labels.shape != (n,):
        raise ValueError(
            f"stratify must give one label per subject ({n}), got shape {labels.shape}"
        )
    return labels


def resample_indices(strata: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Subject indices drawn with replacement, within each stratum: position
    ``k`` of the result is a subject of the same stratum as subject ``k``, so
    every stratum keeps its number of subjects."""
    strata = np.asarray(strata)
    index = np.empty(strata.shape[0], dtype=np.int64)
    for label in pd.unique(strata):
        members = np.flatnonzero(strata == label)
        index[members] = rng.choice(members, size=members.size, replace=True)
    return index


def resampled_dataset(dataset: Dataset, index: Sequence[int]) -> Dataset:
    """The dataset of subjects ``index`` (subject positions, repeats allowed),
    renumbered ``ID = 1..len(index)``: a subject drawn twice is two subjects.
    ``table`` keeps every original column with the new IDs, ``row`` counts rows
    of the new table."""
    index = np.asarray(index, dtype=np.int64)
    if index.ndim != 1 or index.size == 0:
        raise ValueError("index must be a non-empty vector of subject positions")
    if index.min() < 0 or index.max() >= dataset.n_subjects:
        raise IndexError(f"subject positions must lie in 0..{dataset.n_subjects - 1}")
    subject = dataset.records["subject"].to_numpy()
    rows_of = [np.flatnonzero(subject == s) for s in range(dataset.n_subjects)]
    positions = np.concatenate([rows_of[s] for s in index])
    new_subject = np.concatenate(
        [np.full(rows_of[s].size, k, dtype=np.int64) for k, s in enumerate(index)]
    )
    new_ids = np.arange(1, index.size + 1)
    records = dataset.records.iloc[positions].reset_index(drop=True)
    records["subject"] = new_subject
    records["id"] = new_ids[new_subject]
    records["row"] = np.arange(positions.size)
    table = dataset.table.iloc[positions].reset_index(drop=True)
    id_column = dataset.roles.get("ID")
    if id_column is not None and id_column in table.columns:
        table[id_column] = new_ids[new_subject]
    return Dataset(
        table=table,
        records=records,
        covariates=dataset.covariates.iloc[positions].reset_index(drop=True),
        roles=dataset.roles,
        ids=new_ids,
        dvid_levels=dataset.dvid_levels,
        occ_levels=dataset.occ_levels,
        categories=dataset.categories,
        notes=[
            *dataset.notes,
            f"bootstrap resample: {index.size} subjects drawn with replacement from "
            f"{dataset.n_subjects}, renumbered 1..{index.size}",
        ],
    )


def resample_subjects(
    dataset: Dataset, *, seed: int | np.random.Generator = 0, stratify: Any = None
) -> tuple[Dataset, np.ndarray]:
    """One bootstrap sample of ``dataset``: as many subjects, drawn with
    replacement (within strata of ``stratify``, see :func:`subject_strata`),
    IDs renumbered 1..n.  Returns the dataset and the drawn subject positions
    (``dataset.ids[index[k]]`` is the original ID of new subject ``k + 1``)."""
    rng = np.random.default_rng(seed)
    strata = np.zeros(dataset.n_subjects) if stratify is None else subject_strata(dataset, stratify)
    index = resample_indices(strata, rng)
    return resampled_dataset(dataset, index), index


def _resampled_prepared(source: Prepared, index: np.ndarray) -> Prepared:
    """``source`` (padded arrays, subject axis first) for subjects ``index``:
    same shapes and static flags, hence the same compiled objective."""

    def take(x):
        if isinstance(x, jax.Array | np.ndarray) and np.ndim(x) >= 1:
            return jax.device_put(np.asarray(x)[index])
        return x

    return jax.tree_util.tree_map(take, source)


# -- summaries shared by bootstrap and SIR --------------------------------------------------


def _percentile_table(
    values: np.ndarray, names: Sequence[str], estimate: np.ndarray, level: float
) -> pd.DataFrame:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    tail = 100.0 * (1.0 - level) / 2.0
    n_used = values.shape[0]
    if n_used:
        lower, upper = np.percentile(values, [tail, 100.0 - tail], axis=0)
        mean, median = values.mean(axis=0), np.median(values, axis=0)
        se = values.std(axis=0, ddof=1) if n_used > 1 else np.full(len(names), np.nan)
    else:
        lower = upper = mean = median = se = np.full(len(names), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        rse = 100.0 * se / np.abs(estimate)
    return pd.DataFrame(
        dict(
            parameter=list(names),
            estimate=estimate,
            mean=mean,
            median=median,
            se=se,
            rse=rse,
            bias=mean - estimate,
            ci_lower=lower,
            ci_upper=upper,
        )
    )


# -- bootstrap ------------------------------------------------------------------------------


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


# -- SIR ------------------------------------------------------------------------------------


def proposal_samples(
    mean: np.ndarray,
    covariance: np.ndarray,
    n: int,
    rng: np.random.Generator,
    *,
    df: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` draws from a multivariate normal (``df=None``) or Student t
    (``df`` degrees of freedom, scale matrix ``covariance``) and their log
    densities.  Returns ``(samples (n, p), log_density (n,))``."""
    mean = np.asarray(mean, dtype=float)
    p = mean.size
    chol = np.linalg.cholesky(np.asarray(covariance, dtype=float))
    z = rng.standard_normal((n, p))
    half_logdet = float(np.sum(np.log(np.diagonal(chol))))
    if df is None:
        samples = mean + z @ chol.T
        log_density = -0.5 * np.sum(z**2, axis=1) - half_logdet - 0.5 * p * math.log(2 * math.pi)
    else:
        if df <= 0:
            raise ValueError(f"df must be > 0, got {df}")
        u = z / np.sqrt(rng.chisquare(df, size=n) / df)[:, None]
        samples = mean + u @ chol.T
        log_density = (
            math.lgamma(0.5 * (df + p))
            - math.lgamma(0.5 * df)
            - 0.5 * p * math.log(df * math.pi)
            - half_logdet
            - 0.5 * (df + p) * np.log1p(np.sum(u**2, axis=1) / df)
        )
    return samples, log_density


def importance_weights(
    dofv: np.ndarray, log_proposal: np.ndarray, log_jacobian: np.ndarray | float = 0.0
) -> np.ndarray:
    """SIR importance weights, normalised to sum to 1: the target
    ``exp(-dOFV/2)`` (times the Jacobian of the map to the scale of the flat
    prior) over the proposal density.  Non-finite OFVs get weight 0."""
    log_w = -0.5 * np.asarray(dofv, dtype=float) + log_jacobian - np.asarray(log_proposal)
    log_w = np.where(np.isfinite(log_w), log_w, -np.inf)
    if not np.any(np.isfinite(log_w)):
        raise ValueError("no proposal sample has a finite OFV: every importance weight is 0")
    w = np.exp(log_w - np.max(log_w))
    return w / w.sum()


class ImportanceResample(eqx.Module):
    """The draws of :func:`importance_resample`: ``samples`` (n, p),
    ``log_proposal`` and ``log_weight`` (n,), normalised ``weights`` and the
    indices ``chosen`` (without replacement, in the order drawn)."""

    samples: np.ndarray
    log_proposal: np.ndarray
    log_weight: np.ndarray
    weights: np.ndarray
    chosen: np.ndarray


def importance_resample(
    log_target: Any,
    mean: np.ndarray,
    covariance: np.ndarray,
    n_samples: int,
    n_resamples: int,
    rng: np.random.Generator,
    *,
    df: float | None = None,
) -> ImportanceResample:
    """The SIR kernel on one parameter scale: draw ``n_samples`` from the
    normal (or t) proposal, weight them by ``exp(log_target) / proposal`` and
    draw ``n_resamples`` of them without replacement with probabilities
    proportional to the weights.

    ``log_target(samples) -> (n,)``: the log target density up to a constant
    (``-dOFV/2`` plus any log Jacobian); non-finite values get weight 0.
    """
    samples, log_proposal = proposal_samples(mean, covariance, n_samples, rng, df=df)
    log_target_values = np.asarray(log_target(samples), dtype=float)
    log_weight = log_target_values - log_proposal
    log_weight = np.where(np.isfinite(log_weight), log_weight, -np.inf)
    weights = importance_weights(-2.0 * log_target_values, log_proposal)
    n_positive = int(np.sum(weights > 0))
    if n_positive < n_resamples:
        raise ValueError(
            f"only {n_positive} proposal draws have a finite OFV, fewer than n_resamples "
            f"({n_resamples}): lower n_resamples or proposal_inflation"
        )
    chosen = rng.choice(n_samples, size=n_resamples, replace=False, p=weights)
    return ImportanceResample(samples, log_proposal, log_weight, weights, chosen)


def chi2_quantile(probability: np.ndarray, df: float) -> np.ndarray:
    """Quantiles of chi-square(``df``) at ``probability`` (a 1-D array): the
    reference distribution of dOFV for ``df`` estimated parameters."""
    return np.atleast_1d(stats.chi2.ppf(np.asarray(probability, dtype=float), df))


class _BatchOFV(eqx.Module):
    """The OFV at a batch of unconstrained parameter vectors (``vmap``)."""

    unravel: Any = eqx.field(static=True)

    def __call__(self, ys, model, problem, ebe_init, max_steps, tolerance):
        def one(y):
            result = _population_ofv(
                model.from_unconstrained(self.unravel(y)), problem, ebe_init, max_steps, tolerance
            )
            return result.ofv, jnp.sum(problem.take(result.status) != 0)

        return jax.vmap(one)(ys)


class _Natural(eqx.Module):
    """NONMEM-scale parameter vectors at a batch of unconstrained vectors."""

    unravel: Any = eqx.field(static=True)

    def __call__(self, ys, model):
        return jax.vmap(lambda y: natural_vector(model.from_unconstrained(self.unravel(y))))(ys)


class _LogJacobian(eqx.Module):
    """``log |det d natural / du|`` at a batch of unconstrained vectors."""

    unravel: Any = eqx.field(static=True)

    def __call__(self, ys, model):
        def natural(y):
            return natural_vector(model.from_unconstrained(self.unravel(y)))

        def one(y):
            return jnp.linalg.slogdet(jax.jacfwd(natural)(y))[1]

        return jax.vmap(one)(ys)


@eqx.filter_jit
def _call(fn, *args):
    return fn(*args)


class SIRResult:
    """Sampling importance resampling of the parameter uncertainty.

    Attributes:
        samples: the resampled parameter vectors on NONMEM's scale (one row per
            resample, in the order drawn) with their ``dofv``.
        proposal: every proposal draw: parameters, ``dofv`` (OFV - OFV at the
            estimates), ``log_weight``, ``weight`` (normalised) and ``resampled``.
        names, estimate: parameters and estimates (NONMEM's scale).
        covariance_ci: the covariance step's Wald table (for comparison).
        n_parameters: estimated parameters (the chi-square df of the dOFV check).
        effective_sample_size: ``1 / sum w^2`` of the proposal weights.
        n_nonfinite: proposal draws with a non-finite OFV (weight 0).
        n_ebe_failures: EBE searches that did not converge, over all draws.
        ofv: the OFV at the estimates, as evaluated here.
    """

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def summary(self, level: float | None = None) -> pd.DataFrame:
        """Per parameter: estimate, SIR mean/median/SE/percentile CI, and the
        covariance step's SE and Wald CI (``cov_se``, ``cov_ci_lower/upper``)."""
        level = level or self.level
        values = self.samples[list(self.names)].to_numpy(dtype=float)
        table = _percentile_table(values, self.names, self.estimate, level)
        z = float(stats.norm.ppf(0.5 + 0.5 * level))  # two-sided Wald z-value
        cov_se = self.covariance_se
        table["cov_se"] = cov_se
        table["cov_ci_lower"] = self.estimate - z * cov_se
        table["cov_ci_upper"] = self.estimate + z * cov_se
        return table

    def ci(self, level: float | None = None) -> pd.DataFrame:
        return self.summary(level)[["parameter", "ci_lower", "ci_upper"]]

    def dofv_table(self, probabilities: Sequence[float] | None = None) -> pd.DataFrame:
        """Dosne's diagnostic: quantiles of dOFV of the proposal draws and of the
        resamples next to those of chi-square(n_parameters).  When the resampled
        dOFVs follow the chi-square, the uncertainty is consistent with the
        likelihood; proposal quantiles far above it mean a proposal too wide."""
        prob = np.asarray(
            probabilities if probabilities is not None else np.arange(0.05, 1.0, 0.05)
        )
        finite = self.proposal["dofv"].to_numpy()
        finite = finite[np.isfinite(finite)]
        return pd.DataFrame(
            dict(
                probability=prob,
                chi_square=chi2_quantile(prob, self.n_parameters),
                proposal=np.quantile(finite, prob),
                resampled=np.quantile(self.samples["dofv"].to_numpy(), prob),
            )
        )

    def __str__(self) -> str:
        head = (
            f"SIR: {len(self.proposal)} proposal draws, {len(self.samples)} resampled; "
            f"effective sample size {self.effective_sample_size:.0f}, "
            f"{self.n_nonfinite} non-finite OFV(s) ({self.elapsed_seconds:.1f} s)"
        )
        return head + "\n" + self.summary().to_string(index=False)

    __repr__ = __str__


def sir(
    fit: Any,
    n_samples: int = 1000,
    n_resamples: int | None = None,
    *,
    seed: int = 0,
    proposal_inflation: float = 1.0,
    proposal_df: float | None = None,
    prior_scale: str = "natural",
    batch_size: int = 50,
    level: float = 0.95,
    progress: bool = True,
    ebe_max_steps: int = 100,
    ebe_tolerance: float = 1e-12,
) -> SIRResult:
    """Sampling importance resampling of the parameter uncertainty (Dosne et al. 2016).

    Args:
        fit: a :class:`~pmx_jax.estimation.FitResult` with a successful
            covariance step (``fit(..., covariance="sandwich")`` or
            ``fit.compute_covariance()``).
        n_samples: proposal draws (OFV evaluations).
        n_resamples: parameter vectors kept, drawn without replacement with
            probability proportional to the importance weights (default
            ``n_samples // 5``, the ratio Dosne et al. use).
        seed: seed of the proposal draws and of the resampling.
        proposal_inflation: factor on the proposal covariance (> 1 widens it).
        proposal_df: Student-t proposal with these degrees of freedom (heavier
            tails); ``None`` (default): multivariate normal.
        prior_scale: ``"natural"`` (default): the target is the likelihood with
            a flat prior on NONMEM's scale (THETA, OMEGA variances), as in Dosne
            et al.; ``"unconstrained"``: flat on the estimation scale.
        batch_size: parameter vectors per OFV evaluation (``vmap``; the last
            batch is padded, so one compilation serves all).
        level: default confidence level of :meth:`SIRResult.summary`.
        progress: print a progress line on stderr.
        ebe_max_steps, ebe_tolerance: the EBE search (warm-started at the fit's EBEs).

    Returns:
        a :class:`SIRResult`.

    Example:
        >>> # result = pmx.fit(model, data, covariance="sandwich")
        >>> # s = pmx.diagnostics.sir(result, n_samples=2000, n_resamples=500)
        >>> # s.summary(); s.dofv_table()
    """
    started = time.perf_counter()
    cov = getattr(fit, "covariance", None)
    if cov is None or not getattr(cov, "ok", False):
        reason = getattr(fit, "covariance_note", "not computed") if cov is None else cov.message
        raise ValueError(
            f"SIR needs a successful covariance step for its proposal (here: {reason}); run "
            "pmx.fit(..., covariance='sandwich') or fit.compute_covariance() first"
        )
    if prior_scale not in ("natural", "unconstrained"):
        raise ValueError(f"prior_scale must be 'natural' or 'unconstrained', got {prior_scale!r}")
    if proposal_inflation <= 0:
        raise ValueError(f"proposal_inflation must be > 0, got {proposal_inflation}")
    n_resamples = max(1, n_samples // 5) if n_resamples is None else int(n_resamples)
    if not 1 <= n_resamples <= n_samples:
        raise ValueError(f"n_resamples must be in 1..n_samples ({n_samples}), got {n_resamples}")
    problem = fit._problem
    model = fit.model
    y_hat, unravel = ravel_pytree(model.to_unconstrained())
    dtype = problem.dtype
    mean = np.asarray(y_hat, dtype=float)
    cov_u = np.asarray(cov.covariance_unconstrained, dtype=float)
    if cov_u.shape != (mean.size, mean.size):
        raise ValueError(
            f"the covariance step has {cov_u.shape[0]} parameters, the model {mean.size}"
        )
    names = natural_names(model)
    ebe_init = problem.place(jnp.asarray(fit._ebe_matrix, dtype))
    options = (jnp.asarray(ebe_max_steps, jnp.int32), jnp.asarray(ebe_tolerance, dtype))
    batch_ofv, log_jacobian = _BatchOFV(unravel), _LogJacobian(unravel)
    batch_size = max(1, min(int(batch_size), n_samples + 1))
    evaluated: dict[str, Any] = {}

    def log_target(samples: np.ndarray) -> np.ndarray:
        # The estimates first (the reference OFV, evaluated exactly as the
        # draws), then the draws, padded with the estimates to whole batches.
        points = np.concatenate([mean[None], samples])
        n_batches = -(-points.shape[0] // batch_size)
        padding = np.repeat(mean[None], n_batches * batch_size - points.shape[0], axis=0)
        padded = np.concatenate([points, padding])
        ofvs, log_jac, failures = [], [], 0
        bar = _Progress("SIR", n_samples, progress)
        for b in range(n_batches):
            ys = jnp.asarray(padded[b * batch_size : (b + 1) * batch_size], dtype)
            values, n_bad = _call(batch_ofv, ys, model, problem, ebe_init, *options)
            ofvs.append(np.asarray(values))
            failures += int(np.sum(np.asarray(n_bad)))
            if prior_scale == "natural":
                log_jac.append(np.asarray(_call(log_jacobian, ys, model)))
            bar.update(min((b + 1) * batch_size - 1, n_samples), "OFV evaluations")
        bar.close()
        ofv_all = np.concatenate(ofvs)[: points.shape[0]]
        dofv = ofv_all[1:] - ofv_all[0]
        jacobian_term = (
            np.concatenate(log_jac)[1 : points.shape[0]]
            if prior_scale == "natural"
            else np.zeros(samples.shape[0])
        )
        evaluated.update(ofv=float(ofv_all[0]), dofv=dofv, failures=failures)
        return -0.5 * dofv + jacobian_term

    draw = importance_resample(
        log_target,
        mean,
        proposal_inflation * cov_u,
        n_samples,
        n_resamples,
        np.random.default_rng(seed),
        df=proposal_df,
    )
    samples, weights, chosen = draw.samples, draw.weights, draw.chosen
    dofv, log_weight = evaluated["dofv"], draw.log_weight
    natural = np.asarray(_call(_Natural(unravel), jnp.asarray(samples, dtype), model))
    proposal = pd.DataFrame(natural, columns=list(names))
    proposal["dofv"] = dofv
    proposal["log_weight"] = np.where(np.isfinite(log_weight), log_weight, -np.inf)
    proposal["weight"] = weights
    proposal["resampled"] = False
    proposal.loc[chosen, "resampled"] = True
    resampled = proposal.loc[chosen, [*names, "dofv"]].reset_index(names="sample")
    estimate = np.asarray(natural_vector(model), dtype=float)
    cov_se = dict(zip(cov.names, cov.se, strict=True))
    return SIRResult(
        samples=resampled,
        proposal=proposal,
        names=names,
        estimate=estimate,
        covariance_se=np.asarray([cov_se.get(n, np.nan) for n in names]),
        n_parameters=mean.size,
        effective_sample_size=float(1.0 / np.sum(weights**2)),
        n_nonfinite=int(np.sum(~np.isfinite(dofv))),
        n_ebe_failures=evaluated["failures"],
        ofv=evaluated["ofv"],
        level=level,
        prior_scale=prior_scale,
        proposal_inflation=proposal_inflation,
        proposal_df=proposal_df,
        seed=seed,
        elapsed_seconds=time.perf_counter() - started,
    )
