"""The result of a population fit: what NONMEM's .lst/.ext/.phi files or
nlmixr2's fit object report (OFV, AIC/BIC, THETA/OMEGA estimates with CV%,
shrinkage, EBEs, convergence), as a small Python object.

The covariance step is not part of the estimation step: standard errors are
reported as "not computed" (NaN) until one is run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd

from .._results import RESULTS
from ..likelihood import LOG_2PI, EBEStatus
from ..model._model import Model


class FitResult:
    """A fitted population model and its summary statistics (an immutable
    value: :meth:`compute_covariance` returns a new result).

    Attributes:
        model: the model at the final estimates (``print(result.model)``).
        method: ``"fo"``, ``"foce"``, ``"focei"``, ``"laplace"`` or ``"saem"``.
        ofv: NONMEM's objective function value (``-2 log L - N log 2 pi``),
            evaluated afresh at the final estimates with the fit's EBE search:
            ``pmx.ofv(result.model, data, result.method,
            ebe_search=result.ebe_search).ofv``; for SAEM, by importance
            sampling: ``pmx.importance_ofv(result,
            seed=result.stochastic.seed).ofv``, with its Monte-Carlo SE in
            ``result.stochastic.ofv_se``.
        ebe_search: ``"global"`` (default) or ``"local"``, as in :func:`pmx.fit`.
        n_subjects, n_observations: subjects, and normally distributed
            observations (N of the OFV constant; BLQ records under M3 excluded).
        n_censored: censored (M3) observations.
        n_general: observations of non-Gaussian endpoints (counts, categories,
            binary, time to event): their part of the OFV is ``-2 log L``
            itself, with no ``log 2 pi`` constant to add.
        iterations: accepted quasi-Newton iterations; ``n_evaluations``: OFV
            evaluations (line-search trials and global EBE checks included).
        status: a :class:`pmx_jax.RESULTS` member: ``successful`` (converged:
            the gradient or OFV-change test was met, no fresh EBE start lowers
            the OFV, and nothing below makes the point suspect),
            ``suspect_point`` (the search stopped but see ``suspect``),
            ``max_iterations``, ``line_search_failed`` or ``nonfinite_ofv``.
        converged: ``status == RESULTS.successful``.
        message: why the minimisation stopped.
        suspect: the reasons the final point is suspect (empty when it is not):
            predictions that underflowed, every eta shrunk to ~100%, a
            parameter at a bound, a singular R matrix, a parameter the OFV does
            not depend on.
        restarts: how often the minimisation continued after a global EBE
            search at its end point found lower modes (see ``trace``).
        ebe_status: per-subject EBE status codes (:class:`EBEStatus`).
        gradient_max: largest absolute OFV gradient component at the end (on the
            unconstrained scale).
        trace: one row per OFV evaluation (``event``: ``initial``, ``iteration``,
            ``check`` for the global EBE search at an end point, ``final``).
        iteration_estimates: one row per accepted iteration (``iteration`` 0:
            the initial estimates, then 1 to ``iterations``): its ``ofv``
            (iteration 0: the OFV of :func:`pmx.ofv` there; then as the search
            evaluated it, EBEs warm-started) and every THETA and OMEGA element
            on the natural scale, fixed ones included, in columns named as the
            ``parameter`` column of :meth:`estimates` (NONMEM's ext-file
            iterations; empty for a result not made by :func:`pmx.fit`).
        elapsed_seconds, compile_seconds: wall time of the whole fit, and of its
            first OFV evaluations (mostly compilation).
        covariance: the covariance step (:class:`CovarianceResult`) or None,
            with ``covariance_note`` saying why not.
        starts: with ``pmx.fit(..., starts=k)``, one row per start (its
            initial estimates, initial and final OFV, status); None otherwise.
        notes: what a reader of the estimates should know that is not a
            failure (e.g. subjects whose Laplace curvature was floored).
        stochastic: for a SAEM fit, its Monte-Carlo side
            (:class:`pmx_jax.estimation.SAEMDetails`: the OFV's Monte-Carlo
            standard error, conditional means, the parameter trajectories,
            the Monte-Carlo score at the end); None otherwise.
        minibatch: with ``pmx.fit(..., minibatch=...)``, one row per
            stochastic-gradient step before the quasi-Newton fit (``epoch``,
            ``step``, ``ofv_estimate``, ``gradient_max``, ``usable``,
            ``seconds``); None otherwise.
    """

    def __init__(
        self,
        *,
        model: Model,
        method: str,
        ofv: float,
        n_subjects: int,
        n_observations: int,
        n_censored: int,
        iterations: int,
        n_general: int = 0,
        n_evaluations: int,
        status: RESULTS,
        message: str,
        ebe_matrix: np.ndarray,
        ebe_status: np.ndarray,
        ids: tuple,
        gradient_max: float,
        elapsed_seconds: float,
        compile_seconds: float,
        suspect: tuple[str, ...] = (),
        restarts: int = 0,
        trace: pd.DataFrame | None = None,
        iteration_estimates: pd.DataFrame | None = None,
        dataset: Any = None,
        problem: Any = None,
        covariance: Any = None,
        covariance_note: str = "not computed",
        starts: pd.DataFrame | None = None,
        notes: tuple[str, ...] = (),
        ebe_search: str = "global",
        stochastic: Any = None,
        minibatch: pd.DataFrame | None = None,
    ) -> None:
        fields = dict(
            model=model,
            method=method,
            ofv=float(ofv),
            n_subjects=n_subjects,
            n_observations=n_observations,
            n_censored=n_censored,
            n_general=n_general,
            iterations=iterations,
            n_evaluations=n_evaluations,
            status=RESULTS(status),
            message=message,
            suspect=tuple(suspect),
            restarts=restarts,
            ebe_status=np.asarray(ebe_status),
            ids=tuple(ids),
            gradient_max=gradient_max,
            elapsed_seconds=elapsed_seconds,
            compile_seconds=compile_seconds,
            trace=trace if trace is not None else pd.DataFrame(),
            iteration_estimates=(
                iteration_estimates if iteration_estimates is not None else pd.DataFrame()
            ),
            covariance=covariance,
            covariance_note=covariance_note,
            starts=starts,
            notes=tuple(notes),
            ebe_search=ebe_search,
            stochastic=stochastic,
            minibatch=minibatch,
            _ebe_matrix=np.asarray(ebe_matrix),
            _dataset=dataset,
            _problem=problem,
            _table=[None],  # the per-record table, computed once on demand
        )
        for array in (fields["ebe_status"], fields["_ebe_matrix"]):
            array.setflags(write=False)
        self.__dict__.update(fields)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(
            f"FitResult is immutable (cannot set {name!r}); "
            "use compute_covariance() or replace() for a new result"
        )

    def replace(self, **changes: Any) -> FitResult:
        """A copy of this result with some constructor fields changed."""
        fields = {k.lstrip("_"): v for k, v in self.__dict__.items() if k != "_table"}
        unknown = set(changes) - set(fields)
        if unknown:
            raise TypeError(f"FitResult has no field(s) {sorted(unknown)}")
        fields.update(changes)
        return FitResult(**fields)

    @property
    def converged(self) -> bool:
        """Whether the fit converged to a point that nothing makes suspect."""
        return self.status == RESULTS.successful

    @property
    def dataset(self):
        """The :class:`~pmx_jax.Dataset` the model was fitted to (None when the
        fit was given prepared data)."""
        return self._dataset

    @property
    def problem(self):
        """The laid-out data of the fit (:class:`pmx_jax.estimation.Problem`):
        pass it to ``ofv``/``fit``/``covariance_step`` to reuse its layout and
        compiled functions."""
        return self._problem

    @property
    def ebe_matrix(self) -> np.ndarray:
        """EBEs as one array ``(n_subjects, n_b)``: IIV etas, then IOV etas by
        occasion (the layout of :class:`pmx_jax.estimation.OFVResult`)."""
        return self._ebe_matrix.copy()

    def table(self) -> pd.DataFrame:
        """Per-record predictions and residuals (NONMEM's ``$TABLE``): one row
        per row of the dataset, with ID, TIME, EVID, DV, PRED, IPRED, CPRED,
        RES, IRES, WRES, CWRES, IWRES and ``row`` (0-based row of the original
        table).  Weighted residuals are NaN on dose and censored records.  See
        :mod:`pmx_jax.estimation._residuals` for the definitions (CWRES as
        NONMEM and Xpose; WRES with the interaction term for FOCEI/Laplace)."""
        if self._table[0] is None:
            from ._residuals import residual_table

            if self._dataset is None or self._problem is None:
                raise ValueError(
                    "this FitResult keeps no dataset (the fit was given prepared data): "
                    "use pmx_jax.estimation.residual_table(model, dataset, prepared, ebes, method)"
                )
            self._table[0] = residual_table(
                self.model, self._dataset, self._problem.source, self._ebe_matrix, self.method
            )
        return self._table[0].copy()

    def compute_covariance(self, kind: str = "sandwich", **options: Any) -> FitResult:
        """This result with a covariance step (:func:`pmx_jax.estimation.covariance_step`)
        at the final estimates: a new :class:`FitResult` whose ``covariance``
        holds it (the status is re-assessed: a singular R matrix makes the point
        suspect)."""
        from ._covariance import covariance_step
        from ._suspect import with_covariance

        return with_covariance(self, covariance_step(self, kind=kind, **options))

    # -- likelihood-based statistics -------------------------------------------
    @property
    def n_parameters(self) -> int:
        """Estimated parameters: free THETAs (SIGMA-like THETAs included) and free
        OMEGA elements (variances, and covariances of full blocks)."""
        shapes = jax.eval_shape(self.model.to_unconstrained)  # sizes only: nothing to run
        return int(sum(math.prod(u.shape) for u in shapes.values()))

    @property
    def minus_two_log_likelihood(self) -> float:
        """``-2 log L`` with its constant: ``OFV + N log(2 pi)``."""
        return self.ofv + self.n_observations * LOG_2PI

    @property
    def aic(self) -> float:
        return self.minus_two_log_likelihood + 2.0 * self.n_parameters

    @property
    def bic(self) -> float:
        """BIC with the number of observations as sample size (as nlmixr2)."""
        return self.minus_two_log_likelihood + self.n_parameters * math.log(
            max(self.n_observations + self.n_general, 1)
        )

    # -- random effects ---------------------------------------------------------
    @property
    def ebes(self) -> pd.DataFrame:
        """Empirical Bayes estimates (NONMEM's phi-file ETAs): one row per subject,
        columns ``ID`` and the IIV eta names."""
        names = self.model.eta_names
        frame = pd.DataFrame(self._ebe_matrix[:, : len(names)], columns=list(names))
        frame.insert(0, "ID", list(self.ids))
        return frame

    @property
    def eta_shrinkage(self) -> pd.Series:
        """NONMEM's SD eta shrinkage, ``1 - sd(EBE) / sqrt(omega)`` per IIV eta
        (fraction; sd over subjects with ``n - 1``)."""
        names = self.model.eta_names
        eta = self._ebe_matrix[:, : len(names)]
        omega = np.diagonal(np.asarray(self.model.omega_matrix()))
        ddof = 1 if eta.shape[0] > 1 else 0
        shrink = 1.0 - np.std(eta, axis=0, ddof=ddof) / np.sqrt(omega)
        return pd.Series(shrink, index=list(names), name="eta_shrinkage")

    def etabar(self) -> pd.DataFrame:
        """NONMEM's ETABAR test, one row per IIV eta: ``etabar`` (the mean
        EBE), ``se`` (``sd / sqrt(n)``, sd with divisor n), ``n`` (subjects)
        and ``p_value``, two-sided, of the hypothesis that the true mean is 0.
        The reference distribution is the normal (NONMEM's P VAL.: its pheno
        report is reproduced by the normal, not by Student's t), the rows of
        :func:`pmx_jax.nonmem._results.shrinkage_table`."""
        from ..nonmem._results import shrinkage_table

        names = list(self.model.eta_names)
        omega = np.diagonal(np.asarray(self.model.omega_matrix()))
        table = shrinkage_table(self._ebe_matrix[:, : len(names)], omega)
        return pd.DataFrame(
            {
                "etabar": table.loc[1].to_numpy(),
                "se": table.loc[2].to_numpy(),
                "n": table.loc[7].to_numpy().astype(int),
                "p_value": table.loc[3].to_numpy(),
            },
            index=pd.Index(names, name="eta"),
        )

    # -- estimates table ----------------------------------------------------------
    def estimates(self) -> pd.DataFrame:
        """Parameter estimates (NONMEM's final estimates), one row per THETA and
        per OMEGA element.

        Columns: ``parameter``, ``kind`` (theta/omega), ``estimate`` (natural
        scale; OMEGA as a variance or covariance), ``fixed``, ``se`` and ``rse``
        (NaN: the covariance step is not run), and for OMEGA variances ``sd``,
        ``cv_percent`` = ``100 sqrt(exp(omega) - 1)`` (log-normal etas) and
        ``shrinkage_percent``.
        """
        rows: list[dict[str, Any]] = []
        for name, theta in self.model.thetas().items():
            rows.append(
                dict(parameter=name, kind="theta", estimate=float(theta), fixed=theta.fixed)
            )
        shrink = self.eta_shrinkage
        for field, block in self.model.omega_blocks():
            matrix = np.asarray(block.matrix)
            for i, eta_i in enumerate(block.names):
                for j in range(i + 1):
                    if i != j and block.diagonal:
                        continue
                    row = dict(kind="omega", estimate=float(matrix[i, j]), fixed=block.fixed)
                    if i == j:
                        var = float(matrix[i, i])
                        row.update(
                            parameter=f"{field}.{eta_i}",
                            sd=math.sqrt(var),
                            cv_percent=100.0 * math.sqrt(math.expm1(var)),
                        )
                        if not block.occasion:
                            row["shrinkage_percent"] = 100.0 * float(shrink[eta_i])
                    else:
                        row["parameter"] = f"{field}.{block.names[j]},{eta_i}"
                    rows.append(row)
        columns = ["parameter", "kind", "estimate", "fixed", "se", "rse"]
        columns += ["sd", "cv_percent", "shrinkage_percent"]
        frame = pd.DataFrame(rows).reindex(columns=columns)
        frame[["se", "rse"]] = np.nan
        cov = self.covariance
        if cov is not None:
            se = dict(zip(cov.names, cov.se, strict=True))
            frame["se"] = [se.get(p, np.nan) for p in frame["parameter"]]
            frame["rse"] = 100.0 * frame["se"] / frame["estimate"].abs()
        return frame

    # -- export -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Everything a report needs, as JSON-compatible Python values."""

        def clean(records):
            return [
                {
                    k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                    for k, v in r.items()
                }
                for r in records
            ]

        ebes = self.ebes
        ebes["ID"] = [i if isinstance(i, int | float | str) else str(i) for i in ebes["ID"]]
        return dict(
            model=type(self.model).__name__,
            method=self.method,
            ebe_search=self.ebe_search,
            ofv=self.ofv,
            minus_two_log_likelihood=self.minus_two_log_likelihood,
            aic=self.aic,
            bic=self.bic,
            n_subjects=self.n_subjects,
            n_observations=self.n_observations,
            n_general=self.n_general,
            n_parameters=self.n_parameters,
            iterations=self.iterations,
            converged=self.converged,
            status=self.status.name,
            message=self.message,
            suspect=[str(reason) for reason in self.suspect],
            notes=list(self.notes),
            restarts=self.restarts,
            covariance_step=(
                self.covariance_note
                if self.covariance is None
                else (self.covariance.kind if self.covariance.ok else self.covariance.message)
            ),
            condition_number=(
                None
                if self.covariance is None or not self.covariance.ok
                else self.covariance.condition_number
            ),
            estimates=clean(self.estimates().to_dict(orient="records")),
            eta_shrinkage=self.eta_shrinkage.to_dict(),
            ebes=clean(ebes.to_dict(orient="records")),
            ebe_status=[RESULTS(int(s)).label for s in self.ebe_status],
            elapsed_seconds=self.elapsed_seconds,
        )

    def to_json(self, path: str | Path | None = None) -> str:
        """The result as JSON text; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text)
        return text

    # -- report ---------------------------------------------------------------
    def __str__(self) -> str:
        status = {
            RESULTS.successful: "converged",
            RESULTS.suspect_point: "CONVERGED AT A SUSPECT POINT",
        }.get(self.status, "NOT CONVERGED")
        n_bad = int(np.sum(self.ebe_status != EBEStatus.CONVERGED))
        restarts = (
            f", {self.restarts} restart(s) after a global EBE search lowered the OFV"
            if self.restarts
            else ""
        )
        search = "" if self.ebe_search == "global" else " (local EBE search from b = 0)"
        lines = [
            f"{type(self.model).__name__} -- {self.method.upper()} fit{search}: {status}",
            f"  {self.message}",
        ]
        lines += [f"  SUSPECT: {reason}" for reason in self.suspect]
        lines += [f"  NOTE: {note}" for note in self.notes]
        if self.status not in (RESULTS.successful, RESULTS.suspect_point):
            lines.append(f"  ({self.status.message})")
        lines += [
            f"  {self.iterations} iterations, {self.n_evaluations} OFV evaluations, "
            f"{self.elapsed_seconds:.1f} s ({self.compile_seconds:.1f} s to the first "
            f"gradient, mostly compilation){restarts}",
            "",
            f"  OFV {self.ofv:.4f}   -2LL {self.minus_two_log_likelihood:.4f}   "
            f"AIC {self.aic:.4f}   BIC {self.bic:.4f}",
            f"  subjects {self.n_subjects}   observations "
            f"{self.n_observations + self.n_general}"
            + (f" (+{self.n_censored} censored)" if self.n_censored else "")
            + f"   estimated parameters {self.n_parameters}",
        ]
        if n_bad:
            codes, counts = np.unique(self.ebe_status[self.ebe_status != 0], return_counts=True)
            what = ", ".join(
                f"{n} {RESULTS(int(c)).label}" for c, n in zip(codes, counts, strict=True)
            )
            lines.append(f"  WARNING: EBE search did not converge for {n_bad} subject(s): {what}")
        table = self.estimates()

        def se(r):
            return "-" if np.isnan(r.se) else f"{r.se:.3g} ({r.rse:.1f}%)"

        lines += ["", "  THETA               estimate   SE (RSE)"]
        for r in table[table.kind == "theta"].itertuples():
            fix = "  FIX" if r.fixed else ""
            lines.append(f"  {r.parameter:<16} {r.estimate:>11.5g}   {se(r)}{fix}")
        lines += ["", "  OMEGA               variance       CV%  shrinkage   SE (RSE)"]
        for r in table[table.kind == "omega"].itertuples():
            fix = "  FIX" if r.fixed else ""
            cv = "" if np.isnan(r.cv_percent) else f"{r.cv_percent:9.1f}"
            sh = "" if np.isnan(r.shrinkage_percent) else f"{r.shrinkage_percent:9.1f}%"
            lines.append(f"  {r.parameter:<16} {r.estimate:>11.5g} {cv:>9} {sh:>10}   {se(r)}{fix}")
        cov = self.covariance
        if cov is None:
            lines += ["", f"  Covariance step: {self.covariance_note} (no standard errors)."]
        elif cov.ok:
            label = dict(sandwich="R^-1 S R^-1", r="R^-1", s="S^-1")[cov.kind]
            lines += [
                "",
                f"  Covariance step: {label}, condition number {cov.condition_number:.4g} "
                f"(correlation matrix), {cov.elapsed_seconds:.1f} s",
                "  eigenvalues of the correlation matrix: "
                + " ".join(f"{v:.3g}" for v in cov.eigenvalues),
            ]
            strong = _strong_correlations(cov.correlation, cov.names)
            if strong:
                lines.append("  |correlation| > 0.95 (the data hardly tell these apart):")
                lines += [f"    {a} ~ {b}: {r:+.3f}" for a, b, r in strong]
        else:
            lines += ["", f"  Covariance step FAILED: {cov.message}"]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.__str__()

    def _repr_html_(self) -> str:
        """The fit as notebooks show it: status, OFV and information
        criteria, then the estimates table with SEs and shrinkage."""
        import html

        status = "converged" if self.converged else html.escape(self.status.label)
        estimates = self.estimates().set_index("parameter")
        shrinkage = self.eta_shrinkage
        estimates["shrinkage"] = [
            f"{100 * shrinkage[name.split('.', 1)[1]]:.1f}%"
            if kind == "omega" and name.split(".", 1)[-1] in shrinkage.index
            else ""
            for name, kind in zip(estimates.index, estimates["kind"], strict=True)
        ]
        table = estimates.drop(columns=["kind"]).to_html(
            float_format=lambda x: f"{x:.5g}", na_rep="-", border=0, classes="pmx-estimates"
        )
        header = (
            f"<b>{html.escape(type(self.model).__name__)}</b>: "
            f"{self.method.upper()} fit, {status}; {self.iterations} iterations, "
            f"{self.elapsed_seconds:.1f} s ({self.compile_seconds:.1f} s compiling)<br>"
            f"OFV {self.ofv:.4f} &nbsp; -2LL {self.minus_two_log_likelihood:.4f} &nbsp; "
            f"AIC {self.aic:.4f} &nbsp; BIC {self.bic:.4f}<br>"
            f"{self.n_subjects} subjects, {self.n_observations + self.n_general} observations"
        )
        notes = "".join(f"<br><i>{html.escape(str(n))}</i>" for n in self.suspect)
        return f"<div class='pmx-fit'>{header}{notes}{table}</div>"


def _strong_correlations(
    correlation: np.ndarray, names: tuple[str, ...], threshold: float = 0.95
) -> list[tuple[str, str, float]]:
    """Pairs of estimates whose correlation exceeds ``threshold`` in size."""
    corr = np.asarray(correlation)
    return [
        (names[j], names[i], float(corr[i, j]))
        for i in range(len(names))
        for j in range(i)
        if abs(corr[i, j]) > threshold
    ]
