"""NONMEM's raw result files from a pmx fit: ``.ext``, ``.phi``, ``.cov``,
``.cor``, ``.coi`` and ``.shk``, in the layout NONMEM 7.4/7.5 writes them, so
that the tools that read a NONMEM run (pharmpy, xpose, PsN, Pirana, NMdata)
read a :class:`pmx_jax.estimation.FitResult` as one.

Every file is one table: a ``TABLE NO.     1: <method>: ... Problem=1
Subproblem=0 Superproblem1=0 Iteration1=0 Superproblem2=0 Iteration2=0`` line,
a header of names each padded to 12 characters, then rows of integers in 13
columns and numbers in NONMEM's ``%13.5E`` form (``  4.69307E-03``); the OBJ
column holds 17 significant digits right-aligned in 22 columns
(``    586.27605628520962``).

Parameters are named as NONMEM numbers them:

- ``THETA1``, ``THETA2``, ... for the model's THETAs in field order
  (:meth:`Model.thetas`), residual-error THETAs and fixed ones included;
- ``SIGMA(1,1)``: pmx has no SIGMA (its residual error parameters are THETAs),
  so the files describe the control stream a NONMEM user writes for such a
  model, ``$SIGMA 1 FIX`` with ``Y = IPRED + W*EPS(1)``: one SIGMA fixed at 1
  (fixed flag 1, standard error 1E+10, SD form 1), omitted when the model has
  no normally distributed observation (non-Gaussian endpoints only, NONMEM's
  ``$SIGMA``-less likelihood models);
- ``OMEGA(i,j)`` for every ``j <= i`` of the whole OMEGA matrix, row by row,
  over NONMEM's ETA numbering: the IIV etas (``model.eta_names``), then the IOV
  etas occasion after occasion (the layout of :attr:`FitResult.ebe_matrix`).
  Elements no parameter stands for (off-diagonal elements of diagonal blocks,
  elements between blocks) are 0 and flagged fixed, as NONMEM writes them;
  the IOV blocks of occasions after the first are NONMEM's ``SAME`` copies:
  the same values, flagged fixed (only the first occasion's block is
  estimated, and only it enters the covariance files).

``.ext`` (:func:`write_ext`): one row per accepted iteration of the fit
(:attr:`FitResult.iteration_estimates`: iteration 0 at the initial estimates,
then 1 to ``fit.iterations``), then ``-1000000000`` (final estimates, OBJ the
fit's OFV), and with a successful covariance step ``-1000000001`` (standard
errors; 1E+10 for what is not estimated), ``-1000000002`` (eigenvalues of the
correlation matrix, ascending, padded with zeros) and ``-1000000003``
(condition number, smallest and largest eigenvalue); then ``-1000000004``
(OMEGA and SIGMA as standard deviations and correlations; 0 for THETAs),
``-1000000005`` (their standard errors by the delta method; with a covariance
step) and ``-1000000006`` (1 for what is fixed).  NONMEM's ``-1000000007``
(termination status) and ``-1000000008`` (final gradient) rows are not
written.  The OBJ of the last iteration is the fit's OFV: the last iteration
is the final point, where NONMEM's two numbers agree and pharmpy reads a
difference as a failed run; the search itself evaluated it with warm-started
EBEs (``iteration_estimates.ofv``), which may differ in the last digits.

``.phi`` (:func:`write_phi`): per subject ``SUBJECT_NO``, ``ID``, ``ETA(1..)``
(the EBEs, IIV then IOV etas), ``ETC(i,j)`` (the lower triangle of the
conditional covariance of the etas, see :func:`individual_estimates`) and
``OBJ`` (the subject's term of the OFV: they sum to ``fit.ofv``).

``.cov``, ``.cor``, ``.coi`` (:func:`write_covariance`): the covariance matrix
of the estimates on NONMEM's scale (THETAs natural, OMEGA elements as
variances and covariances: :attr:`CovarianceResult.covariance`, already the
delta-method transform of the unconstrained-scale matrix with its exact
Jacobian), its correlation matrix (with the standard errors on the diagonal,
as NONMEM writes it) and its inverse, over all parameter columns with zero
rows and columns for what is not estimated.  Written only when the
covariance step succeeded.

``.shk`` (:func:`write_shk`): NONMEM's shrinkage table, one row per TYPE and
one column per ETA (see :func:`shrinkage_table` for the definitions, checked
against NONMEM's own numbers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .._stored import stored
from ..estimation._engine import Engine
from ..estimation._fit import parameter_values
from ..likelihood import Prior, SubjectLikelihood, map_subjects, moments_and_jacobian
from ..likelihood._objective import (
    _censored_m2ll,
    _first_order_information,
    _interaction_objective,
)
from ..model._model import Model

__all__ = [
    "conditional_covariances",
    "individual_estimates",
    "parameter_columns",
    "shrinkage_table",
    "write_covariance",
    "write_ext",
    "write_nonmem_results",
    "write_phi",
    "write_shk",
]

# NONMEM's names of the estimation methods (the TABLE NO. line).
METHOD_TITLES = dict(
    fo="First Order",
    foce="First Order Conditional Estimation",
    focei="First Order Conditional Estimation with Interaction",
    laplace="Laplacian Conditional Estimation with Interaction",
    saem="Stochastic Approximation Expectation-Maximization",
)
_PROBLEM = "Problem=1 Subproblem=0 Superproblem1=0 Iteration1=0 Superproblem2=0 Iteration2=0"
_GOAL = "Goal Function=MINIMUM VALUE OF OBJECTIVE FUNCTION"

# The special ITERATION codes of the ext file.
FINAL = -1000000000
STANDARD_ERRORS = -1000000001
EIGENVALUES = -1000000002
CONDITION_NUMBER = -1000000003
SD_CORRELATION = -1000000004
SD_CORRELATION_SE = -1000000005
FIXED = -1000000006
# NONMEM's standard error of what is not estimated.
NOT_ESTIMATED = 1.0e10

# The rows of the shk file (NONMEM's TYPE codes).
SHRINKAGE_TYPES = {
    1: "ETABAR",
    2: "ETABAR SE",
    3: "ETABAR P value",
    4: "eta shrinkage, SD version (%)",
    5: "epsilon shrinkage, SD version (%)",
    6: "EBV shrinkage, SD version (%)",
    7: "number of subjects",
    8: "eta shrinkage, variance version (%)",
    9: "EBV shrinkage, variance version (%)",
    10: "epsilon shrinkage, variance version (%)",
    11: "relative information (%)",
}


# -- parameter columns ---------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One parameter column of NONMEM's files.

    ``label``: NONMEM's name (``THETA1``, ``SIGMA(1,1)``, ``OMEGA(2,1)``);
    ``kind``: ``"theta"``, ``"sigma"`` or ``"omega"``; ``parameter``: the pmx
    parameter whose value it holds, named as in :meth:`FitResult.estimates`
    (None for SIGMA and the OMEGA elements no parameter stands for, which are
    0); ``fixed``: NONMEM's fixed flag (fixed parameters, SIGMA, zero elements,
    the IOV blocks of later occasions); ``row``, ``col``: the 1-based matrix
    element of a SIGMA or OMEGA column."""

    label: str
    kind: str
    parameter: str | None
    fixed: bool
    row: int = 0
    col: int = 0

    @property
    def estimated(self) -> bool:
        return self.parameter is not None and not self.fixed


def parameter_columns(model: Model, n_occasions: int = 1, sigma: bool = True) -> list[Column]:
    """NONMEM's parameter columns for ``model`` (see the module notes):
    THETAs, ``SIGMA(1,1)`` (when ``sigma``), then the lower triangle of OMEGA
    over the IIV etas and ``n_occasions`` copies of the IOV etas."""
    columns = [
        Column(f"THETA{k}", "theta", name, theta.fixed)
        for k, (name, theta) in enumerate(model.thetas().items(), start=1)
    ]
    if sigma:
        columns.append(Column("SIGMA(1,1)", "sigma", None, True, 1, 1))
    blocks = model.omega_blocks()
    etas = [(f, b, i, 0) for f, b in blocks if not b.occasion for i in range(b.n_eta)]
    if model.n_iov_eta:
        etas += [
            (f, b, i, occasion)
            for occasion in range(n_occasions)
            for f, b in blocks
            if b.occasion
            for i in range(b.n_eta)
        ]
    for a, (field, block, i, occasion) in enumerate(etas):
        for b, (field_b, _, j, occasion_b) in enumerate(etas[: a + 1]):
            parameter = None
            if field == field_b and occasion == occasion_b:
                if i == j:
                    parameter = f"{field}.{block.names[i]}"
                elif not block.diagonal:
                    parameter = f"{field}.{block.names[j]},{block.names[i]}"
            fixed = parameter is None or block.fixed or occasion > 0
            columns.append(
                Column(f"OMEGA({a + 1},{b + 1})", "omega", parameter, fixed, a + 1, b + 1)
            )
    return columns


def _columns(fit: Any) -> list[Column]:
    model = fit.model
    n_b = fit.ebe_matrix.shape[1]
    n_occasions = (n_b - model.n_eta) // model.n_iov_eta if model.n_iov_eta else 1
    sigma = fit.n_observations + fit.n_censored > 0
    return parameter_columns(model, n_occasions, sigma)


def _values(columns: Sequence[Column], values: dict[str, float]) -> np.ndarray:
    """The columns' values from ``values`` (named as :meth:`FitResult.estimates`)."""
    out = []
    for column in columns:
        if column.kind == "sigma":
            out.append(1.0)
        elif column.parameter is None:
            out.append(0.0)
        else:
            out.append(float(values[column.parameter]))
    return np.asarray(out)


def _sd_correlation(columns: Sequence[Column], values: np.ndarray) -> np.ndarray:
    """OMEGA and SIGMA as standard deviations (diagonal) and correlations
    (off-diagonal); 0 for THETAs."""
    diagonal = {(c.kind, c.row): values[k] for k, c in enumerate(columns) if c.row == c.col}
    out = np.zeros(len(columns))
    for k, c in enumerate(columns):
        if c.kind == "theta":
            continue
        if c.row == c.col:
            out[k] = math.sqrt(max(values[k], 0.0))
        elif values[k] != 0.0:
            out[k] = values[k] / math.sqrt(diagonal[c.kind, c.row] * diagonal[c.kind, c.col])
    return out


def _estimated_index(columns: Sequence[Column], names: Sequence[str]) -> np.ndarray:
    """For each name of the covariance step (free parameters), its column."""
    where = {c.parameter: k for k, c in enumerate(columns) if c.estimated}
    missing = [name for name in names if name not in where]
    if missing:
        raise ValueError(f"covariance step parameters without a NONMEM column: {missing}")
    return np.asarray([where[name] for name in names], dtype=int)


def _sd_correlation_se(
    columns: Sequence[Column], values: np.ndarray, covariance: np.ndarray, index: np.ndarray
) -> np.ndarray:
    """Standard errors of :func:`_sd_correlation` by the delta method (1E+10
    for what is not estimated, 0 for THETAs)."""
    full = np.zeros((len(columns), len(columns)))
    full[np.ix_(index, index)] = covariance
    diagonal = {(c.kind, c.row): k for k, c in enumerate(columns) if c.row == c.col}
    out = np.zeros(len(columns))
    for k, c in enumerate(columns):
        if c.kind == "theta":
            continue
        if not c.estimated:
            out[k] = NOT_ESTIMATED
            continue
        gradient = np.zeros(len(columns))
        if c.row == c.col:
            gradient[k] = 0.5 / math.sqrt(values[k])
        else:
            ii, jj = diagonal[c.kind, c.row], diagonal[c.kind, c.col]
            scale = math.sqrt(values[ii] * values[jj])
            r = values[k] / scale
            gradient[k] = 1.0 / scale
            gradient[ii] = -0.5 * r / values[ii]
            gradient[jj] = -0.5 * r / values[jj]
        out[k] = math.sqrt(max(float(gradient @ full @ gradient), 0.0))
    return out


# -- number formats ------------------------------------------------------------------


def _number(x: float) -> str:
    """NONMEM's ``1PE12.5`` in 13 columns: ``  4.69307E-03``."""
    x = float(x)
    if not math.isfinite(x):
        return f"{'NaN' if math.isnan(x) else ('inf' if x > 0 else '-inf'):>13}"
    return f"{x:13.5E}"


def _objective(x: float) -> str:
    """The OBJ column: 17 significant digits, right-aligned in 22 columns
    (``    586.27605628520962``; E notation outside 0.1 to 1e17)."""
    x = float(x)
    if not math.isfinite(x):
        text = "NaN" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    elif x == 0.0:
        text = "0.0000000000000000"
    elif 0.1 <= abs(x) < 1e17:
        text = f"{x:.{max(0, 16 - math.floor(math.log10(abs(x))))}f}"
    else:
        text = f"{x:.16E}"
    return f"{text:>22}" if len(text) < 22 else " " + text


def _header(names: Sequence[str]) -> str:
    """A header line: each name after a space, padded to 12 characters."""
    return "".join(f" {name:<12}" for name in names).rstrip()


def ext_line(iteration: int, values: Sequence[float], obj: float) -> str:
    """One row of the ext file."""
    return f"{iteration:13d}" + "".join(map(_number, values)) + _objective(obj)


def phi_line(subject_no: int, subject: Any, values: Sequence[float], obj: float) -> str:
    """One row of the phi file (``values``: the ETAs then the ETC lower triangle)."""
    return (
        f"{subject_no:13d}" + _identifier(subject) + "".join(map(_number, values)) + _objective(obj)
    )


def matrix_line(label: str, values: Sequence[float]) -> str:
    """One row of the cov, cor or coi file."""
    return f" {label:<12}" + "".join(map(_number, values))


def _title(method: str, goal: bool = False) -> str:
    # NONMEM's SAEM ext file names its goal so: the values are the iterations'
    # parameters, its OBJ column the SAEM objective (not an OFV).
    goal_text = "Goal Function=FINAL VALUE OF LIKELIHOOD FUNCTION" if method == "saem" else _GOAL
    parts = [f"TABLE NO.     1: {METHOD_TITLES[method]}"] + ([goal_text] if goal else [])
    parts += [_PROBLEM]
    return ": ".join(parts)


def _identifier(value: Any) -> str:
    """A subject ID in 13 columns (an integer where it is one, as NONMEM)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return f"{str(value):>13}"
    if number.is_integer() and abs(number) < 1e12:
        return f"{int(number):13d}"
    return _number(number)


def _write(path: Path, lines: list[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


# -- ext -----------------------------------------------------------------------------


def ext_rows(fit: Any) -> tuple[list[Column], list[tuple[int, np.ndarray, float]]]:
    """The ext file's columns and rows ``(ITERATION, parameter values, OBJ)``."""
    columns = _columns(fit)
    final = _values(columns, parameter_values(fit.model))
    rows: list[tuple[int, np.ndarray, float]] = []
    history = fit.iteration_estimates
    for record in history.to_dict(orient="records"):
        rows.append((int(record["iteration"]), _values(columns, record), float(record["ofv"])))
    if rows:
        # The last iteration is the final point: its OBJ is the fit's OFV.
        rows[-1] = (rows[-1][0], rows[-1][1], fit.ofv)
    else:  # a result without iterations: the final point alone
        rows.append((int(fit.iterations), final, fit.ofv))
    rows.append((FINAL, final, fit.ofv))
    n = len(columns)
    cov = fit.covariance
    ok = cov is not None and cov.ok
    if ok:
        index = _estimated_index(columns, cov.names)
        se = np.full(n, NOT_ESTIMATED)
        se[index] = cov.se
        rows.append((STANDARD_ERRORS, se, 0.0))
        eigenvalues = np.zeros(n)
        eigenvalues[: len(cov.eigenvalues)] = np.sort(cov.eigenvalues)
        rows.append((EIGENVALUES, eigenvalues, 0.0))
        condition = np.zeros(n)
        # Condition number, smallest and largest eigenvalue, in as many
        # columns as the run has (a model with fewer than 3 parameters).
        summary = [cov.condition_number, eigenvalues[0], eigenvalues[len(cov.eigenvalues) - 1]]
        condition[: min(3, n)] = summary[: min(3, n)]
        rows.append((CONDITION_NUMBER, condition, 0.0))
    rows.append((SD_CORRELATION, _sd_correlation(columns, final), 0.0))
    if ok:
        rows.append(
            (SD_CORRELATION_SE, _sd_correlation_se(columns, final, cov.covariance, index), 0.0)
        )
    rows.append((FIXED, np.asarray([float(c.fixed) for c in columns]), 0.0))
    return columns, rows


def write_ext(fit: Any, path: str | Path) -> Path:
    """NONMEM's ``.ext`` file of ``fit`` (see the module notes)."""
    columns, rows = ext_rows(fit)
    lines = [
        _title(fit.method, goal=True),
        _header(["ITERATION"] + [c.label for c in columns] + ["OBJ"]),
    ]
    lines += [ext_line(iteration, values, obj) for iteration, values, obj in rows]
    return _write(path, lines)


# -- phi -----------------------------------------------------------------------------


@stored("conditional-covariances")
def _conditional_covariances(model: Model, problem: Any, ebes: jax.Array, method: str):
    """The conditional covariance of every subject's random effects at its
    EBE, laid out as ``problem``: the inverse of half the Hessian of the
    individual objective by which ``method`` approximates the OFV."""
    layout = problem.layout
    prior = Prior.of(layout.omega(model).astype(problem.dtype))
    censoring, general = problem.has_censoring, problem.prepared.has_general
    # FO: its POSTHOC EBEs are FOCEI's.
    first_order, interaction = method != "laplace", method != "foce"

    def one(data, b):
        subject = SubjectLikelihood(model, data, layout, censoring, general)
        if first_order:
            terms, g_mean, g_var = moments_and_jacobian(subject, b)
            variance = terms.variance if interaction else subject.terms(0.0 * b).variance
            information, _ = _first_order_information(
                prior, terms, g_mean, g_var, variance, interaction
            )
            if censoring:
                information = information + 0.5 * jax.hessian(
                    lambda b: _censored_m2ll(subject.terms(b))
                )(b)
        else:
            information = 0.5 * jax.hessian(_interaction_objective)(b, (subject, prior))
        information = 0.5 * (information + information.T)
        return jnp.linalg.inv(information)

    return map_subjects(problem, one, ebes)


def conditional_covariances(model: Model, problem: Any, ebes: Any, method: str) -> np.ndarray:
    """NONMEM's ETC: the conditional covariance of each subject's random
    effects ``(n_sub, n_b, n_b)`` at its EBE (``ebes``, ``(n_sub, n_b)``, dataset
    order), on ``problem`` (:func:`pmx_jax.estimation.make_problem`; see
    :func:`individual_estimates` for the definition by ``method``)."""
    if problem.layout.size == 0:
        return np.zeros((problem.n_subjects, 0, 0))
    laid_out = problem.place(jnp.asarray(ebes, problem.dtype))
    etc = _conditional_covariances(model, problem.program(), laid_out, method)
    return np.asarray(problem.take(etc))


def individual_estimates(
    fit: Any, max_steps: int = 100, tolerance: float = 1e-12
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per subject (dataset order): the EBEs ``(n_sub, n_b)``, their
    conditional covariance (NONMEM's ETC, ``(n_sub, n_b, n_b)``) and the
    subject's term of the OFV (NONMEM's phi-file OBJ, ``(n_sub,)``; they sum
    to ``fit.ofv``).

    The OBJ terms are one evaluation of the fit's own objective (its compiled
    program) with each subject's EBE search started at the fit's EBEs, which
    are its modes.  The ETC is the inverse of half the Hessian of the
    individual objective ``-2 log p(y_i, eta)`` at the EBE, the Hessian by
    which the method approximates the OFV: FOCEI's first-order information
    ``Omega^-1 + G^T W G + 1/2 G_v^T W^2 G_v`` (FOCE: without the ``G_v`` term,
    the residual variance at ``eta = 0``; FO: that of FOCEI at the POSTHOC
    EBEs), the exact Hessian for Laplace.  That is NONMEM's ETC: on
    phenobarbital at NONMEM's final estimates it reproduces NONMEM's phi file
    to 5e-6 relative (``tests/test_nonmem_results.py``)."""
    problem = fit.problem
    if problem is None:
        raise ValueError("this FitResult keeps no data (fit.problem is None)")
    ebes = fit.ebe_matrix
    laid_out = problem.place(jnp.asarray(ebes, problem.dtype))
    engine = Engine(fit.model, problem, max_steps, tolerance)
    evaluation = engine.at(engine.y0, laid_out, try_zero=False)
    per_subject = np.asarray(problem.take(evaluation.result.per_subject))
    return ebes, conditional_covariances(fit.model, problem, ebes, fit.method), per_subject


def _lower(matrix: np.ndarray) -> np.ndarray:
    rows, cols = np.tril_indices(matrix.shape[-1])
    return matrix[..., rows, cols]


def write_phi(fit: Any, path: str | Path, individual: tuple | None = None) -> Path:
    """NONMEM's ``.phi`` file of ``fit``; ``individual``: the result of
    :func:`individual_estimates` when already computed."""
    ebes, etc, obj = individual if individual is not None else individual_estimates(fit)
    n_b = ebes.shape[1]
    names = ["SUBJECT_NO", "ID"] + [f"ETA({i})" for i in range(1, n_b + 1)]
    names += [f"ETC({i},{j})" for i in range(1, n_b + 1) for j in range(1, i + 1)]
    lines = [_title(fit.method), _header(names + ["OBJ"])]
    lower = _lower(etc)
    for k, subject in enumerate(fit.ids):
        lines.append(phi_line(k + 1, subject, np.concatenate([ebes[k], lower[k]]), obj[k]))
    return _write(path, lines)


# -- cov, cor, coi -------------------------------------------------------------------


def covariance_matrices(fit: Any) -> tuple[list[Column], dict[str, np.ndarray]] | None:
    """The ``cov``, ``cor`` and ``coi`` matrices over all parameter columns
    (zero rows and columns for what is not estimated; ``cor`` with the
    standard errors on its diagonal), or None without a successful
    covariance step."""
    cov = fit.covariance
    if cov is None or not cov.ok:
        return None
    columns = _columns(fit)
    index = _estimated_index(columns, cov.names)
    free = np.asarray(cov.covariance)
    se = np.sqrt(np.diagonal(free))
    correlation = free / np.outer(se, se)
    np.fill_diagonal(correlation, se)
    matrices = {}
    for kind, block in (("cov", free), ("cor", correlation), ("coi", np.linalg.inv(free))):
        full = np.zeros((len(columns), len(columns)))
        full[np.ix_(index, index)] = 0.5 * (block + block.T)
        matrices[kind] = full
    return columns, matrices


def write_covariance(fit: Any, folder: str | Path, stem: str) -> list[Path]:
    """NONMEM's ``stem.cov``, ``stem.cor`` and ``stem.coi`` (none without a
    successful covariance step)."""
    made = covariance_matrices(fit)
    if made is None:
        return []
    columns, matrices = made
    labels = [c.label for c in columns]
    paths = []
    for kind, matrix in matrices.items():
        lines = [_title(fit.method), _header(["NAME"] + labels)]
        lines += [matrix_line(label, row) for label, row in zip(labels, matrix, strict=True)]
        paths.append(_write(Path(folder) / f"{stem}.{kind}", lines))
    return paths


# -- shk -----------------------------------------------------------------------------


def shrinkage_table(
    etas: np.ndarray,
    omega: np.ndarray,
    etc: np.ndarray | None = None,
    iwres: np.ndarray | None = None,
) -> pd.DataFrame:
    """NONMEM's shrinkage table (the shk file): one row per TYPE
    (:data:`SHRINKAGE_TYPES`), one column per eta.

    ``etas``: the EBEs ``(n_sub, n_eta)``; ``omega``: their prior variances
    ``(n_eta,)``; ``etc``: their conditional covariances ``(n_sub, n_eta,
    n_eta)``; ``iwres``: the individual weighted residuals of the normally
    distributed observations.  NONMEM's definitions (ETASTYPE=0, all subjects),
    which reproduce the numbers of its report file on phenobarbital
    (``tests/test_nonmem_results.py``):

    1. ETABAR, the mean of the EBEs; 2. its SE, ``sd / sqrt(n)`` (``sd`` with
       divisor ``n``); 3. the two-sided p-value of ``ETABAR / SE`` (normal);
    4. eta shrinkage ``100 (1 - sd / sqrt(omega))``; 8. its variance form
       ``100 (1 - sd^2 / omega)``;
    6. EBV shrinkage ``100 (1 - sqrt(1 - mean(ETC_kk) / omega))``; 9. its
       variance form ``100 mean(ETC_kk) / omega``;
    5. epsilon shrinkage ``100 (1 - sqrt(mean(IWRES^2)))``; 10. its variance
       form ``100 (1 - mean(IWRES^2))``, both in the first column (one EPS);
    7. the number of subjects;
    11. NONMEM's relative information, whose definition is not documented:
       written as 0, as NONMEM writes what it does not compute.

    An eta whose variance is 0 gets NONMEM's zeros (p-value 1); rows 6 and 9
    are 0 without ``etc``, rows 5 and 10 without ``iwres``."""
    etas = np.asarray(etas, dtype=float)
    n, n_eta = etas.shape
    omega = np.asarray(omega, dtype=float)
    table = np.zeros((len(SHRINKAGE_TYPES), n_eta))
    positive = omega > 0.0
    safe = np.where(positive, omega, 1.0)
    mean = etas.mean(axis=0)
    sd = etas.std(axis=0)  # divisor n, as NONMEM
    se = sd / math.sqrt(n) if n else np.zeros(n_eta)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0.0, mean / np.where(se > 0.0, se, 1.0), 0.0)
    table[0] = mean
    table[1] = se
    table[2] = [math.erfc(abs(value) / math.sqrt(2.0)) for value in z]  # 2 P(Z > |z|)
    table[3] = 100.0 * (1.0 - sd / np.sqrt(safe))
    table[7] = 100.0 * (1.0 - sd**2 / safe)
    if etc is not None and n:
        ebv = np.mean(np.diagonal(np.asarray(etc, dtype=float), axis1=1, axis2=2), axis=0) / safe
        table[5] = 100.0 * (1.0 - np.sqrt(np.clip(1.0 - ebv, 0.0, None)))
        table[8] = 100.0 * ebv
    table[6] = n
    table[:, ~positive] = 0.0
    table[2, ~positive] = 1.0
    table[6, ~positive] = n
    if iwres is not None and n_eta:
        iwres = np.asarray(iwres, dtype=float)
        iwres = iwres[np.isfinite(iwres)]
        if iwres.size:
            square = float(np.mean(iwres**2))
            table[4, 0] = 100.0 * (1.0 - math.sqrt(square))
            table[9, 0] = 100.0 * (1.0 - square)
    return pd.DataFrame(
        table,
        index=pd.Index(list(SHRINKAGE_TYPES), name="TYPE"),
        columns=[f"ETA({i})" for i in range(1, n_eta + 1)],
    )


def _iwres(fit: Any) -> np.ndarray | None:
    """IWRES of the fit's normally distributed observations (None without a
    dataset or without such observations)."""
    if fit.dataset is None or fit.n_observations == 0:
        return None
    table = fit.table()
    iwres = table.loc[table["EVID"] == 0, "IWRES"].to_numpy(dtype=float)
    return iwres[np.isfinite(iwres)]


def write_shk(fit: Any, path: str | Path, individual: tuple | None = None) -> Path:
    """NONMEM's ``.shk`` file of ``fit`` (:func:`shrinkage_table`);
    ``individual``: the result of :func:`individual_estimates` when already
    computed."""
    ebes, etc, _ = individual if individual is not None else individual_estimates(fit)
    omega = np.diagonal(np.asarray(fit.problem.layout.omega(fit.model)))
    table = shrinkage_table(ebes, omega, etc, _iwres(fit))
    header = "TYPE".ljust(14) + "".join(f"{name:<13}" for name in ["SUBPOP", *table.columns])
    lines = [_title(fit.method), header.rstrip()]
    for kind, row in table.iterrows():
        lines.append(f"{kind:13d}{1:13d}" + "".join(map(_number, row.to_numpy())))
    return _write(path, lines)


# -- all of them ---------------------------------------------------------------------


def write_nonmem_results(fit: Any, folder: str | Path, stem: str) -> list[Path]:
    """Writes ``stem.ext``, ``stem.phi``, ``stem.cov``/``.cor``/``.coi`` (with a
    successful covariance step) and ``stem.shk`` of ``fit`` (a
    :class:`FitResult` of :func:`pmx.fit`) in ``folder``, in NONMEM's formats
    (see the module notes); returns their paths.

    Example:
        >>> # fit = pmx.fit(pmx.library.Theophylline(), data, "focei")
        >>> # write_nonmem_results(fit, "runs", "run1")  # runs/run1.ext, ...
    """
    folder = Path(folder)
    individual = individual_estimates(fit)
    paths = [write_ext(fit, folder / f"{stem}.ext")]
    paths.append(write_phi(fit, folder / f"{stem}.phi", individual))
    paths += write_covariance(fit, folder, stem)
    paths.append(write_shk(fit, folder / f"{stem}.shk", individual))
    return paths
