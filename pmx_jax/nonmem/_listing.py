"""NONMEM's report file, the ``.lst`` listing, of a pmx fit: what a modeller
reads first after a run, and what the tools that read a NONMEM run (Pharmpy,
PsN, Pirana) take the minimisation and covariance status from.

:func:`listing` is two parts in one text file.

The first part is laid out as NONMEM 7.5 lays out its report, with the tagged
lines tools parse: the start date, the run specification or control stream
echoed, a header that names the writer (see below), the problem and data
summary (records, observations, individuals) and the initial estimates;
``#TBLN``/``#METH``; ``#TERM`` with ``0MINIMIZATION SUCCESSFUL`` or
``0MINIMIZATION TERMINATED`` and NONMEM's ETABAR, SE, N, P VAL. and shrinkage
rows (the numbers of the ``.shk`` file, :func:`shrinkage_table`: NONMEM's
definitions, standard deviations with divisor n), the number of normally
distributed observations and the OFV with and without its ``N log 2 pi``
constant; ``#TERE`` with the elapsed estimation time and, when the covariance
step succeeded, the covariance time (Pharmpy reads the covariance status from
that line); the ``#OBJV`` line as NONMEM prints it; the final estimates and
their standard errors in NONMEM's matrix layout (THETA, OMEGA, SIGMA).

The second part (``pmx_jax SUMMARY``) is for reading: status, message and
suspect reasons; data counts; OFV, -2LL, AIC and BIC; run time split into
compilation, search and covariance step; THETAs with label, SE, RSE, Wald 95%
CI (``estimate -+ 1.96 SE``) and the back-transformed value (below); the
typical individual parameters; OMEGA as variance, SD, CV%, NONMEM's shrinkage
and correlations; the residual error as NONMEM's SIGMA; ETABAR with its
p-value; the correlation matrix of the estimates with ``|r| > 0.95`` marked,
its eigenvalues and condition number; and last a line ``OFV <value>``, as
``pmx run`` prints.

Back-transformed estimates (:func:`typical_parameters`): the model's
individual parameters (its ``$PK`` block) at eta = 0, with each covariate at
its median over subjects (categorical ones at their most frequent level) and
TIME 0.  Their SE is the delta method's, ``sqrt(g' C g)`` with ``g`` the
gradient over the free THETAs and ``C`` their covariance.  The 95% CI of a
parameter that depends on one THETA only is that THETA's Wald CI with both
endpoints transformed (``ka = exp(tka)``: ``(exp(lower), exp(upper))``) when
the transform is monotone over it; otherwise ``estimate -+ 1.96 SE``.  A THETA
table row shows the individual parameter that depends on that THETA alone,
e.g. ``tka 0.464 ... ka = 1.59 (1.08, 2.35) 1/h``.

SIGMA: pmx's residual error parameters are THETAs (NONMEM's ``$SIGMA 1 FIX``
with ``Y = IPRED + W*EPS(1)``, as the ``.ext`` file describes the run).  The
THETAs a Gaussian error model takes unchanged as a standard deviation
(:func:`sigma_thetas`) are also shown as the SIGMA a NONMEM user estimates
with ``Y = F + EPS(1)`` (or ``F*EPS(1)``, ``LOG(F) + EPS(1)``): their square,
with its delta-method SE.

The header's version line reads ``1NONLINEAR MIXED EFFECTS MODEL PROGRAM
(NONMEM) VERSION 7.5+pmx.jax.<version>``, the line by which Pharmpy decides
that a report is in the tagged layout of NONMEM 7.2 and later; the local
version label ``+pmx.jax...`` and the next line say that pmx_jax wrote it and
that NONMEM did not run.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .._results import RESULTS
from .._stored import stored
from ..likelihood import LOG_2PI
from ..likelihood._prepare import used_covariates, with_time
from ..model._error import (
    Additive,
    Combined2,
    Exponential,
    Normal,
    Proportional,
)
from ..model._model import Model
from ._results import (
    METHOD_TITLES,
    _iwres,
    _objective,
    individual_estimates,
    parameter_columns,
    shrinkage_table,
)

__all__ = [
    "listing",
    "objv_line",
    "sigma_thetas",
    "typical_parameters",
    "write_listing",
]

# Two-sided 95% normal quantile (the Wald CIs of the covariance step).
_Z95 = 1.959963984540054
# |correlation| above which two estimates are flagged (as FitResult prints).
_STRONG = 0.95
# NONMEM's line of stars and its banner width.
_STARS = " " + "*" * 120
_BANNER = 80

# The fields of Gaussian error models that are standard deviations of one
# EPS in NONMEM's SIGMA form (Y = F + EPS(1), F + F*EPS(1), LOG(F) + EPS(1),
# F + W*EPS(1)).  Combined1's SDs add up (W = a + b*F): no SIGMA stands for them.
_SIGMA_FIELDS: tuple[tuple[type, tuple[str, ...]], ...] = (
    (Additive, ("sd",)),
    (Proportional, ("cv",)),
    (Combined2, ("add", "prop")),
    (Exponential, ("sd",)),
    (Normal, ("sd",)),
)


# -- the model as NONMEM sees it -----------------------------------------------------------


class _AnyParameter(dict):
    """Individual parameters for a trace of ``observe``: whatever it reads is 1."""

    def __missing__(self, key: str) -> jax.Array:
        return jnp.ones(())


def sigma_thetas(model: Model) -> dict[str, str]:
    """The THETAs that stand for NONMEM's SIGMA: those a Gaussian error model
    of the ``observe`` block takes unchanged as a standard deviation
    (``Additive(f, self.add_sd)``: ``add_sd``), by name, with where
    (``"Additive.sd"``; with several endpoints ``"Additive.sd of endpoint 1"``).

    Found from one trace of ``observe``: a THETA counts when an error model's
    SD field *is* that THETA, not a function of it (``2 * self.sd`` or a
    ``Combined1`` SD, which NONMEM's SIGMA cannot write, do not count).

    >>> import pmx_jax as pmx
    >>> sigma_thetas(pmx.library.Theophylline())
    {'add_sd': 'Additive.sd'}
    """
    names = list(model.thetas())
    if not names:
        return {}
    found: list[tuple[str, int]] = []

    def run(values):
        tracing = eqx.tree_at(lambda m: [getattr(m, n).value for n in names], model, list(values))
        amounts = jnp.ones(tracing.dynamics.n_compartments)
        keys, endpoints = tracing._observe(amounts, _AnyParameter())
        outputs = []
        found.clear()
        for k, endpoint in enumerate(endpoints):
            for kind, fields in _SIGMA_FIELDS:
                if type(endpoint) is kind:
                    for field in fields:
                        where = f"{kind.__name__}.{field}"
                        if len(endpoints) > 1:
                            where += f" of endpoint {keys[k]}"
                        found.append((where, len(outputs)))
                        outputs.append(getattr(endpoint, field))
        return outputs

    values = [np.asarray(float(t)) for t in model.thetas().values()]
    closed = jax.make_jaxpr(run)(values)
    inputs = {id(var): name for var, name in zip(closed.jaxpr.invars, names, strict=True)}
    # A THETA passed through a dtype conversion is still the THETA.
    aliases = {}
    for equation in closed.jaxpr.eqns:
        if (
            equation.primitive.name in ("convert_element_type", "copy")
            and len(equation.invars) == 1
        ):
            source = equation.invars[0]
            if id(source) in inputs:
                aliases[id(equation.outvars[0])] = inputs[id(source)]
    inputs.update(aliases)
    out: dict[str, str] = {}
    for where, index in found:
        var = closed.jaxpr.outvars[index]
        name = inputs.get(id(var))
        if name is not None and name not in out:
            out[name] = where
    return out


def _reference_covariates(dataset: Any, names: Sequence[str]) -> dict[str, float]:
    """Each covariate's median over subjects (their first record), the most
    frequent level of a categorical one, and TIME 0: where typical
    parameters are evaluated."""
    reference = {name: 0.0 for name in names}
    if dataset is None:
        return reference
    covariates = dataset.covariates
    if covariates.shape[1] == 0:
        return reference
    baseline = covariates.groupby(dataset.records["subject"].to_numpy()).first()
    for name in covariates.columns:
        values = baseline[name].dropna()
        if values.empty:
            continue
        if name in dataset.categories:
            reference[name] = float(values.mode().iloc[0])
        else:
            reference[name] = float(values.median())
    return reference


@stored("typical-parameters")
def _typical(model: Model, free: tuple[str, ...], names, vector, values):
    """The individual parameters at eta = 0 and covariates ``vector`` with the
    free THETAs ``free`` at ``values``, and their Jacobian in ``values``."""

    def typical(values):
        at = eqx.tree_at(lambda m: [getattr(m, n).value for n in free], model, list(values))
        return at.individual_parameters(jnp.zeros(at.n_eta), vector, names)

    return typical(values), jax.jacfwd(typical)(values)


def typical_parameters(fit: Any) -> pd.DataFrame:
    """The model's individual parameters at eta = 0 and the reference
    covariates (see the module notes), with delta-method SEs and 95% CIs.

    Returns one row per individual parameter that depends on a free THETA:
    ``parameter``, ``estimate``, ``se``, ``rse`` (%), ``ci_lower``,
    ``ci_upper``, ``ci_method`` (``"transformed"``: the THETA's CI endpoints
    transformed; ``"delta"``: ``estimate -+ 1.96 SE``; ``""`` without a
    covariance step), ``theta`` (the one THETA it depends on, or ``""``)
    and ``unit`` (that THETA's unit).  ``frame.attrs["covariates"]`` holds
    the covariate values used (those the model reads)."""
    model = fit.model
    dataset = getattr(fit, "dataset", None)
    covariate_names = tuple(dataset.covariate_names) if dataset is not None else ()
    names = with_time(covariate_names)
    reference = _reference_covariates(dataset, names)
    vector = np.asarray([reference[n] for n in names], dtype=float)
    thetas = model.thetas()
    free = [n for n, t in thetas.items() if not t.fixed]
    columns = ["parameter", "estimate", "se", "rse", "ci_lower", "ci_upper", "ci_method"]
    columns += ["theta", "unit"]
    if not free:
        return pd.DataFrame(columns=columns)

    def typical(values):
        return _typical(model, tuple(free), names, vector, values)

    estimate = np.asarray([float(thetas[n]) for n in free])
    values, jacobian = typical(estimate)
    cov = fit.covariance
    ok = cov is not None and cov.ok
    if ok:
        index = [list(cov.names).index(n) for n in free]
        covariance = np.asarray(cov.covariance)[np.ix_(index, index)]
        lower = dict(zip(cov.names, np.asarray(cov.ci_lower), strict=True))
        upper = dict(zip(cov.names, np.asarray(cov.ci_upper), strict=True))
    rows = []
    for name, value in values.items():
        gradient = np.asarray(jacobian[name], dtype=float)
        depends = [free[k] for k in np.flatnonzero(gradient != 0.0)]
        if not depends:
            continue
        value = float(value)
        row: dict[str, Any] = dict(parameter=name, estimate=value, ci_method="")
        row["theta"] = depends[0] if len(depends) == 1 else ""
        row["unit"] = (thetas[depends[0]].unit or "") if len(depends) == 1 else ""
        if ok:
            se = math.sqrt(max(float(gradient @ covariance @ gradient), 0.0))
            row.update(se=se, rse=100.0 * se / abs(value) if value else math.nan)
            row.update(ci_lower=value - _Z95 * se, ci_upper=value + _Z95 * se, ci_method="delta")
            if len(depends) == 1:
                k = free.index(depends[0])
                ends = []
                for end in (lower[depends[0]], upper[depends[0]]):
                    moved = estimate.copy()
                    moved[k] = end
                    ends.append(float(typical(moved)[0][name]))
                if (ends[0] - value) * (ends[1] - value) < 0 and all(map(math.isfinite, ends)):
                    row.update(ci_lower=min(ends), ci_upper=max(ends), ci_method="transformed")
        rows.append(row)
    frame = pd.DataFrame(rows, columns=columns)
    used = used_covariates(model, covariate_names) if dataset is not None else ()
    frame.attrs["covariates"] = {n: reference[n] for n in used}
    return frame


# -- number formats ---------------------------------------------------------------------


def objv_line(ofv: float) -> str:
    """NONMEM's ``#OBJV`` line: the OFV to 3 decimals in a field of 20 among stars."""
    return " #OBJV:" + "*" * 44 + f"{ofv:>13.3f}" + " " * 7 + "*" * 50


def _g(x: Any, digits: int = 5) -> str:
    """A number for the summary tables (``-`` for what is not there)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{float(x):.{digits}g}"


def _ci(low: Any, high: Any) -> str:
    if low is None or not (math.isfinite(low) and math.isfinite(high)):
        return "-"
    return f"({_g(low, 4)}, {_g(high, 4)})"


def _e(x: float) -> str:
    """NONMEM's ``1PE10.2`` matrix entries."""
    return f"{x:10.2E}"


def _banner(method: str, text: str) -> list[str]:
    """NONMEM's framed section heading."""
    inner = "*" * 20 + " " * _BANNER + "*" * 20
    return [
        _STARS,
        " " + inner,
        " " + "*" * 20 + f"{METHOD_TITLES[method].upper():^{_BANNER}}" + "*" * 20,
        " " + "*" * 20 + f"{text:^{_BANNER}}" + "*" * 20,
        " " + inner,
        _STARS,
    ]


def _row(label: str, values: Sequence[str]) -> str:
    """A row of NONMEM's ETABAR and shrinkage block: label in 15 columns,
    values in 12 (continuation lines, past 10 values, indented by 16)."""
    lines = []
    for start in range(0, max(len(values), 1), 10):
        head = f" {label}".ljust(15) if start == 0 else " " * 15
        lines.append(head + "".join(f"{v:>12}" for v in values[start : start + 10]))
    return "\n".join(lines)


def _e4(x: float) -> str:
    return f"{x:.4E}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = " ") -> list[str]:
    """Columns left-aligned to their widest cell."""
    widths = [max(len(str(r[c])) for r in [header, *rows]) for c in range(len(header))]
    out = []
    for r in [header, *rows]:
        out.append(indent + "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    return [line.rstrip() for line in out]


# -- the parts of the report -------------------------------------------------------------


def _eta_labels(fit: Any, n_b: int) -> list[str]:
    """NONMEM's ETA numbering: the IIV etas, then the IOV etas occasion by occasion."""
    model = fit.model
    labels = list(model.eta_names)
    k = 1
    while len(labels) < n_b and model.n_iov_eta:
        labels += [f"{name} (occasion {k})" for name in model.iov_eta_names]
        k += 1
    return labels[:n_b]


def _shrinkage(fit: Any, individual: tuple | None) -> tuple[pd.DataFrame, list[str]] | None:
    """The shk table (NONMEM's definitions) and the eta labels, or None
    without random effects."""
    ebes = fit.ebe_matrix
    if ebes.shape[1] == 0:
        return None
    etc = None
    if individual is None and getattr(fit, "problem", None) is not None:
        individual = individual_estimates(fit)
    if individual is not None:
        ebes, etc = individual[0], individual[1]
    if getattr(fit, "problem", None) is not None:
        omega = np.diagonal(np.asarray(fit.problem.layout.omega(fit.model)))
    else:
        omega = np.diagonal(np.asarray(fit.model.omega_matrix()))
        ebes = ebes[:, : len(omega)]
        etc = None if etc is None else etc[:, : len(omega), : len(omega)]
    iwres = _iwres(fit) if getattr(fit, "dataset", None) is not None else None
    table = shrinkage_table(ebes, omega, etc, iwres)
    return table, _eta_labels(fit, ebes.shape[1])


def _termination(fit: Any) -> list[str]:
    """The ``#TERM`` block's first lines: NONMEM's words for the outcome."""
    status = fit.status
    if status == RESULTS.successful:
        lines = ["0MINIMIZATION SUCCESSFUL"]
    elif status == RESULTS.suspect_point:
        lines = ["0MINIMIZATION SUCCESSFUL", " HOWEVER, PROBLEMS OCCURRED WITH THE MINIMIZATION."]
    elif status == RESULTS.max_iterations:
        lines = ["0MINIMIZATION TERMINATED", " DUE TO MAX. NO. OF FUNCTION EVALUATIONS EXCEEDED"]
    elif status == RESULTS.line_search_failed:
        lines = ["0MINIMIZATION TERMINATED", " DUE TO A LINE SEARCH THAT FOUND NO DECREASE"]
    else:
        lines = ["0MINIMIZATION TERMINATED", " DUE TO A NON-FINITE OBJECTIVE FUNCTION VALUE"]
    lines.append(f" pmx_jax: {fit.status.label}: {fit.message}")
    lines += [f" SUSPECT: {reason}" for reason in fit.suspect]
    lines.append(f" NO. OF FUNCTION EVALUATIONS USED: {fit.n_evaluations:8d}")
    lines.append(f" NO. OF ITERATIONS: {fit.iterations:8d}")
    return lines


def _etabar_block(shrinkage: tuple[pd.DataFrame, list[str]] | None) -> list[str]:
    if shrinkage is None:
        return []
    table, _ = shrinkage
    row = {k: table.loc[k].to_numpy() for k in table.index}
    lines = [
        "",
        " ETABAR IS THE ARITHMETIC MEAN OF THE ETA-ESTIMATES,",
        " AND THE P-VALUE IS GIVEN FOR THE NULL HYPOTHESIS THAT THE TRUE MEAN IS 0.",
        "",
        _row("ETABAR:", [_e4(x) for x in row[1]]),
        _row("SE:", [_e4(x) for x in row[2]]),
        _row("N:", [str(int(x)) for x in row[7]]),
        "",
        _row("P VAL.:", [_e4(x) for x in row[3]]),
        "",
        _row("ETASHRINKSD(%)", [_e4(x) for x in row[4]]),
        _row("ETASHRINKVR(%)", [_e4(x) for x in row[8]]),
        _row("EBVSHRINKSD(%)", [_e4(x) for x in row[6]]),
        _row("EBVSHRINKVR(%)", [_e4(x) for x in row[9]]),
        _row("EPSSHRINKSD(%)", [_e4(row[5][0])]),
        _row("EPSSHRINKVR(%)", [_e4(row[10][0])]),
    ]
    return lines


def _objective_block(fit: Any) -> list[str]:
    constant = fit.n_observations * LOG_2PI
    width = 43
    return [
        "",
        f" TOTAL DATA POINTS NORMALLY DISTRIBUTED (N): {fit.n_observations:12d}",
        " N*LOG(2PI) CONSTANT TO OBJECTIVE FUNCTION:".ljust(width) + _objective(constant) + " " * 5,
        " OBJECTIVE FUNCTION VALUE WITHOUT CONSTANT:".ljust(width) + _objective(fit.ofv) + " " * 5,
        " OBJECTIVE FUNCTION VALUE WITH CONSTANT:".ljust(width)
        + _objective(fit.ofv + constant)
        + " " * 5,
        " REPORTED OBJECTIVE FUNCTION DOES NOT CONTAIN CONSTANT",
    ]


def _nonmem_matrices(fit: Any, values: dict[str, float], title: str) -> list[str]:
    """THETA vector, OMEGA and SIGMA lower triangles in NONMEM's layout;
    ``values`` by parameter name (missing: NONMEM's dots)."""
    columns = parameter_columns(fit.model, 1, fit.n_observations + fit.n_censored > 0)
    lines = _banner(fit.method, title) + ["", ""]

    def entry(column) -> str:
        if column.kind == "sigma":
            value = values.get("SIGMA(1,1)")
        elif column.parameter is None:
            value = 0.0 if "SIGMA(1,1)" in values else None
        else:
            value = values.get(column.parameter)
        return " ........." if value is None else _e(value)

    thetas = [c for c in columns if c.kind == "theta"]
    lines += [" THETA - VECTOR OF FIXED EFFECTS PARAMETERS   *********", "", ""]
    for start in range(0, len(thetas), 12):
        chunk = thetas[start : start + 12]
        lines.append(" " * 9 + "".join(f"TH {k + 1 + start:<7d}" for k in range(len(chunk))))
        lines += [" ", " " * 7 + "".join(entry(c) for c in chunk), " "]
    for kind, heading in (
        ("omega", " OMEGA - COV MATRIX FOR RANDOM EFFECTS - ETAS  ********"),
        ("sigma", " SIGMA - COV MATRIX FOR RANDOM EFFECTS - EPSILONS  ****"),
    ):
        elements = [c for c in columns if c.kind == kind]
        if not elements:
            continue
        size = max(c.row for c in elements)
        label = "ETA" if kind == "omega" else "EPS"
        lines += ["", "", heading, "", ""]
        lines.append(" " * 9 + "".join(f"{label}{i + 1:<7d}" for i in range(size)))
        lines.append(" ")
        by_element = {(c.row, c.col): c for c in elements}
        for i in range(1, size + 1):
            lines.append(f" {label}{i}")
            lines.append("+" + " " * 6 + "".join(entry(by_element[i, j]) for j in range(1, i + 1)))
            lines.append(" ")
    return lines


def _estimate_values(fit: Any) -> dict[str, float]:
    values = {r.parameter: r.estimate for r in fit.estimates().itertuples()}
    values["SIGMA(1,1)"] = 1.0
    return values


def _se_values(fit: Any) -> dict[str, float]:
    cov = fit.covariance
    return dict(zip(cov.names, (float(s) for s in cov.se), strict=True))


def _initial_estimates(fit: Any) -> list[str]:
    """NONMEM's initial THETA table (bounds and initial estimates) and OMEGA."""
    history = fit.iteration_estimates
    initial = history.iloc[0].to_dict() if len(history) else None
    lines = ["0INITIAL ESTIMATE OF THETA:", " LOWER BOUND    INITIAL EST    UPPER BOUND"]

    def bound(x: float) -> str:
        # NONMEM writes an open side as -/+ 1E+6.
        x = max(min(x, 1.0e6), -1.0e6)
        return f"{x:12.4E}"

    for name, theta in fit.model.thetas().items():
        value = float(initial[name]) if initial is not None else float(theta)
        fix = "   FIXED" if theta.fixed else ""
        lines.append(f" {bound(theta.lower)}   {value:12.4E}   {bound(theta.upper)}{fix}")
    if fit.model.n_eta:
        lines.append("0INITIAL ESTIMATE OF OMEGA:")
        for field, block in fit.model.omega_blocks():
            matrix = np.asarray(block.matrix)
            for i, eta_i in enumerate(block.names):
                cells = []
                for j in range(i + 1):
                    key = f"{field}.{eta_i}" if i == j else f"{field}.{block.names[j]},{eta_i}"
                    value = initial.get(key, matrix[i, j]) if initial is not None else matrix[i, j]
                    cells.append(f"{float(value):12.4E}")
                fix = "   FIXED" if block.fixed else ""
                lines.append(" " + "".join(cells) + fix)
    return lines


def _header(
    fit: Any, title: str, source: str | None, data_file: str | None, started: datetime.datetime
) -> list[str]:
    from .. import __version__

    dataset = getattr(fit, "dataset", None)
    lines = [_date(started), f"$PROBLEM    {title}"]
    if source:
        lines += ["", " RUN SPECIFICATION:"] + [f"  {line}" for line in source.splitlines()]
    lines += [
        "",
        "",
        f"1NONLINEAR MIXED EFFECTS MODEL PROGRAM (NONMEM) VERSION 7.5+pmx.jax.{__version__}",
        f" WRITTEN BY pmx_jax {__version__} IN THE LAYOUT OF A NONMEM 7.5 REPORT; "
        "NONMEM DID NOT RUN.",
        " ",
        " PROBLEM NO.:         1",
        f" {title}",
        f" MODEL: {type(fit.model).__name__} ({type(fit.model).__module__})",
    ]
    if data_file:
        lines.append(f" DATA: {data_file}")
    if dataset is not None:
        lines += [
            f" NO. OF DATA RECS IN DATA SET: {dataset.n_records:8d}",
            "0LABELS FOR DATA ITEMS:",
            " " + " ".join(str(c) for c in dataset.table.columns),
        ]
    n_b = fit.ebe_matrix.shape[1]
    if n_b:
        lines.append("0LABELS FOR ETAS")
        lines += [f" ETA({k + 1})={name}" for k, name in enumerate(_eta_labels(fit, n_b))]
    lines += [
        " ",
        f" TOT. NO. OF OBS RECS: {fit.n_observations + fit.n_censored + fit.n_general:8d}",
        f" TOT. NO. OF INDIVIDUALS: {fit.n_subjects:8d}",
    ]
    if dataset is not None:
        lines.append(f" TOT. NO. OF DOSE RECS: {dataset.n_doses:8d}")
    lines.append(f"0LENGTH OF THETA: {len(fit.model.thetas()):3d}")
    lines += _initial_estimates(fit)
    covariance = "NO " if fit.covariance is not None else "YES"
    lines.append(f"0COVARIANCE STEP OMITTED:        {covariance}")
    return lines


def _date(when: datetime.datetime) -> str:
    """A date line in English, whatever the locale (``Tue Jun  3 10:09:15 UTC 2025``)."""
    days = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    when = when.astimezone(datetime.UTC)
    return (
        f"{days[when.weekday()]} {months[when.month - 1]} {when.day:2d} "
        f"{when:%H:%M:%S} UTC {when.year}"
    )


# -- the pmx summary --------------------------------------------------------------------------


def _summary(fit: Any, title: str, shrinkage, typical: pd.DataFrame) -> list[str]:
    from ..estimation._result import _strong_correlations

    cov = fit.covariance
    ok = cov is not None and cov.ok
    dataset = getattr(fit, "dataset", None)
    lines = [
        "1",
        _STARS,
        " " + "*" * 20 + f"{'pmx_jax SUMMARY OF THE RUN':^{_BANNER}}" + "*" * 20,
        _STARS,
        "",
        f" PROBLEM: {title}   MODEL: {type(fit.model).__name__}   METHOD: "
        f"{fit.method.upper()} ({METHOD_TITLES[fit.method]}; {fit.ebe_search} EBE search)",
    ]
    data = f" DATA: {fit.n_subjects} subjects"
    if dataset is not None:
        data += f", {dataset.n_records} records, {dataset.n_doses} doses"
    data += f", {fit.n_observations + fit.n_general} observations"
    if fit.n_censored:
        data += f" (+{fit.n_censored} censored)"
    lines.append(data)
    lines.append(f" MINIMISATION: {fit.status.label}: {fit.message}")
    lines += [f"   SUSPECT: {reason}" for reason in fit.suspect]
    lines += [f"   NOTE: {note}" for note in fit.notes]
    lines.append(
        f"   {fit.iterations} iterations, {fit.n_evaluations} OFV evaluations"
        + (f", {fit.restarts} restart(s) after a global EBE search" if fit.restarts else "")
    )
    lines.append(
        f" OFV {fit.ofv:.6f}   -2LL {fit.minus_two_log_likelihood:.4f}   AIC {fit.aic:.4f}   "
        f"BIC {fit.bic:.4f}   estimated parameters {fit.n_parameters}"
    )
    search = max(fit.elapsed_seconds - fit.compile_seconds, 0.0)
    timing = (
        f" RUN TIME: estimation {fit.elapsed_seconds:.2f} s = {fit.compile_seconds:.2f} s to the "
        f"first gradient (mostly compilation) + {search:.2f} s search"
    )
    if cov is not None:
        timing += f"; covariance step {cov.elapsed_seconds:.2f} s"
    lines.append(timing)
    if cov is None:
        lines.append(f" COVARIANCE STEP: {fit.covariance_note} (no standard errors)")
    elif ok:
        label = dict(sandwich="R^-1 S R^-1", r="R^-1", s="S^-1")[cov.kind]
        lines.append(f" COVARIANCE STEP: {label}; 95% CIs are estimate -+ 1.96 SE (Wald)")
    else:
        lines.append(f" COVARIANCE STEP FAILED: {cov.message}")

    # THETA
    table = fit.estimates()
    ci = {}
    if ok:
        ci = {
            name: (low, high)
            for name, low, high in zip(cov.names, cov.ci_lower, cov.ci_upper, strict=True)
        }
    by_theta: dict[str, list] = {}
    for r in typical.itertuples():
        if r.theta:
            by_theta.setdefault(r.theta, []).append(r)
    thetas = fit.model.thetas()
    rows = []
    for r in table[table.kind == "theta"].itertuples():
        theta = thetas[r.parameter]
        low, high = ci.get(r.parameter, (math.nan, math.nan))
        natural = "; ".join(
            f"{t.parameter} = {_g(t.estimate, 4)}"
            + (f" {_ci(t.ci_lower, t.ci_upper)}" if t.ci_method else "")
            for t in by_theta.get(r.parameter, [])
        )
        unit = theta.unit or ""
        if natural and unit:
            natural += f" {unit}"
            unit = ""
        rows.append(
            [
                r.parameter,
                theta.label or "",
                _g(r.estimate) + (" FIX" if r.fixed else ""),
                unit,
                _g(r.se, 3),
                _g(r.rse, 3),
                _ci(low, high),
                natural,
            ]
        )
    header = ["THETA", "label", "estimate", "unit", "SE", "RSE%", "95% CI", "back-transformed"]
    lines += ["", *_table(header, rows)]

    # typical individual parameters
    if len(typical):
        at = typical.attrs.get("covariates", {})
        where = ", ".join(f"{k} {_g(v, 4)}" for k, v in at.items())
        lines += [
            "",
            " TYPICAL INDIVIDUAL PARAMETERS (eta = 0"
            + (f"; covariates at their median: {where})" if where else ")"),
        ]
        rows = [
            [
                t.parameter,
                _g(t.estimate),
                t.unit,
                _g(t.se, 3),
                _g(t.rse, 3),
                _ci(t.ci_lower, t.ci_upper),
                {"transformed": f"{t.theta}'s CI transformed", "delta": "delta method"}.get(
                    t.ci_method, ""
                ),
            ]
            for t in typical.itertuples()
        ]
        lines += _table(["parameter", "estimate", "unit", "SE", "RSE%", "95% CI", "CI by"], rows)

    # OMEGA
    omega = table[table.kind == "omega"]
    if len(omega):
        nonmem_shrink = {}
        if shrinkage is not None:
            shk, labels = shrinkage
            for k, label in enumerate(labels):
                nonmem_shrink[label] = shk.iloc[3, k]
        variances = {r.parameter: r.estimate for r in omega.itertuples()}
        rows = []
        for r in omega.itertuples():
            low, high = ci.get(r.parameter, (math.nan, math.nan))
            field, _, etas = r.parameter.partition(".")
            if "," in etas:
                a, b = etas.split(",")
                scale = math.sqrt(variances[f"{field}.{a}"] * variances[f"{field}.{b}"])
                extra = ["", "", f"r = {_g(r.estimate / scale, 3)}", ""]
            else:
                shrink = nonmem_shrink.get(etas, math.nan)
                extra = [_g(r.sd, 4), _g(r.cv_percent, 3), "", _g(shrink, 3)]
            rows.append(
                [
                    r.parameter,
                    _g(r.estimate) + (" FIX" if r.fixed else ""),
                    *extra,
                    _g(r.se, 3),
                    _g(r.rse, 3),
                    _ci(low, high),
                ]
            )
        header = ["OMEGA", "estimate", "SD", "CV%", "correlation", "shrinkage%", "SE", "RSE%"]
        lines += ["", *_table([*header, "95% CI"], rows)]
        lines.append(
            "   CV% = 100 sqrt(exp(omega) - 1) (log-normal parameters); shrinkage: NONMEM's "
            "ETASHRINKSD, 100 (1 - sd(EBE) / sqrt(omega)), sd with divisor n"
        )

    # SIGMA
    if fit.n_observations + fit.n_censored > 0:
        lines += [
            "",
            " SIGMA(1,1) = 1 FIX: the residual error SDs are THETAs (Y = IPRED + W*EPS(1))",
        ]
        sigma = sigma_thetas(fit.model)
        rows = []
        se_of = dict(zip(cov.names, cov.se, strict=True)) if ok else {}
        for name, where in sigma.items():
            sd = float(thetas[name])
            se = se_of.get(name, math.nan)
            variance_se = 2.0 * abs(sd) * se  # delta method for sd**2
            rows.append(
                [
                    name,
                    where,
                    _g(sd),
                    _g(sd * sd),
                    _g(variance_se, 3),
                    _g(100.0 * variance_se / (sd * sd), 3),
                ]
            )
        if rows:
            header = ["THETA", "error model", "SD", "SIGMA (variance)", "SE", "RSE%"]
            lines += _table(header, rows)
        shk = shrinkage[0] if shrinkage is not None else None
        if shk is not None and fit.n_observations:
            lines.append(
                f" EPSILON SHRINKAGE: {_g(shk.iloc[4, 0], 4)}% (SD), {_g(shk.iloc[9, 0], 4)}% "
                "(variance): 100 (1 - sqrt(mean(IWRES^2)))"
            )

    # ETABAR
    if shrinkage is not None:
        shk, labels = shrinkage
        rows = [
            [label, _g(shk.iloc[0, k], 4), _g(shk.iloc[1, k], 4), str(int(shk.iloc[6, k])),
             _g(shk.iloc[2, k], 4)]
            for k, label in enumerate(labels)
        ]  # fmt: skip
        lines += ["", " ETABAR: mean EBE, H0: the true mean is 0 (z = ETABAR / SE, as NONMEM)"]
        lines += _table(["ETA", "ETABAR", "SE", "N", "p-value"], rows)

    # correlation matrix of the estimates
    if ok:
        names = list(cov.names)
        corr = np.asarray(cov.correlation)
        width = max(6, *(len(n) for n in names))
        lines += ["", " CORRELATION MATRIX OF THE ESTIMATES (* marks |r| > 0.95)"]
        lines.append(" " + " " * width + "".join(f"{n[-8:]:>9}" for n in names))
        for i, name in enumerate(names):
            cells = []
            for j in range(i + 1):
                mark = "*" if i != j and abs(corr[i, j]) > _STRONG else " "
                cells.append(f"{corr[i, j]:8.3f}{mark}")
            lines.append(f" {name:<{width}}" + "".join(cells))
        strong = _strong_correlations(cov.correlation, cov.names, _STRONG)
        if strong:
            lines.append(" |r| > 0.95 (the data hardly tell these apart):")
            lines += [f"   {a} ~ {b}: {r:+.3f}" for a, b, r in strong]
        else:
            lines.append(" no pair of estimates has |r| > 0.95")
        lines.append(
            " EIGENVALUES OF THE CORRELATION MATRIX: "
            + " ".join(f"{v:.4g}" for v in np.sort(np.asarray(cov.eigenvalues)))
        )
        condition = f"{cov.condition_number:.4g}"
        lines.append(f" CONDITION NUMBER (largest / smallest eigenvalue): {condition}")
    lines += ["", f"OFV {fit.ofv:.6f}"]
    return lines


# -- the report -------------------------------------------------------------------------------


def listing(
    fit: Any,
    *,
    title: str | None = None,
    source: str | None = None,
    data_file: str | None = None,
    started: datetime.datetime | None = None,
    individual: tuple | None = None,
) -> str:
    """NONMEM's report file of ``fit`` (a :class:`~pmx_jax.FitResult`), as
    text (see the module notes for its parts).

    Args:
        fit: the fit.
        title: the problem's title (``$PROBLEM``; default: the model's class name).
        source: the run specification or control stream, echoed at the top as
            NONMEM echoes its control stream.
        data_file: the data file's name, for the header.
        started: when the run started (default: now minus the fit's run time).
        individual: :func:`individual_estimates` of ``fit``, when already
            computed (the EBEs' conditional covariances enter the EBV shrinkage).
    """
    title = title or type(fit.model).__name__
    if started is None:
        started = datetime.datetime.now(datetime.UTC) - datetime.timedelta(
            seconds=float(fit.elapsed_seconds)
        )
    shrinkage = _shrinkage(fit, individual)
    try:
        typical = typical_parameters(fit)
    except Exception as e:  # a $PK block that cannot run at eta = 0 and median covariates
        typical = pd.DataFrame()
        typical_note = f" (typical individual parameters not computed: {e})"
    else:
        typical_note = ""
    cov = fit.covariance
    ok = cov is not None and cov.ok
    lines = _header(fit, title, source, data_file, started)
    lines += [
        "1",
        "",
        "",
        " #TBLN:      1",
        f" #METH: {METHOD_TITLES[fit.method]}",
        "",
        f" ESTIMATION: pmx_jax.fit, method={fit.method}, ebe_search={fit.ebe_search}",
        "",
        " #TERM:",
        *_termination(fit),
        *_etabar_block(shrinkage),
        *_objective_block(fit),
        "",
        " #TERE:",
        f" Elapsed estimation  time in seconds: {fit.elapsed_seconds:8.2f}",
    ]
    if ok:
        lines.append(f" Elapsed covariance  time in seconds: {cov.elapsed_seconds:8.2f}")
    elif cov is not None:
        lines.append(f" COVARIANCE STEP FAILED: {cov.message}")
    banner = _banner(fit.method, "MINIMUM VALUE OF OBJECTIVE FUNCTION")
    banner[3] = " #OBJT:" + "*" * 14 + banner[3][21:]
    lines += ["1", *banner, "", "", objv_line(fit.ofv), "1"]
    lines += _nonmem_matrices(fit, _estimate_values(fit), "FINAL PARAMETER ESTIMATE")
    if ok:
        lines += ["1", *_nonmem_matrices(fit, _se_values(fit), "STANDARD ERROR OF ESTIMATE")]
    lines += _summary(fit, title, shrinkage, typical)
    if typical_note:
        lines.insert(-2, typical_note)
    finished = started + datetime.timedelta(seconds=float(fit.elapsed_seconds))
    lines[-1:-1] = ["Stop Time:", _date(finished), ""]
    return "\n".join(lines) + "\n"


def write_listing(fit: Any, path: str | Path, **options: Any) -> Path:
    """Write :func:`listing` of ``fit`` to ``path`` (NONMEM's ``run1.lst``;
    name it as the run's ``.ext`` file, so that tools find both)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(listing(fit, **options))
    return path
