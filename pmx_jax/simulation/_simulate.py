"""Prediction (PRED/IPRED) and stochastic simulation of populations."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import PRNGKeyArray

from .._memory import check_fits
from .._sharding import pad_subjects, padded_count, shard_subjects
from .._stored import stored
from ..data._dataset import Dataset
from ..data._read import read_nonmem
from ..likelihood import Prepared, prepare, record_frame_index, subject_predictions
from ..model._model import Model
from ._events import simulate_events
from ._regimen import Regimen


def _as_dataset(source: Dataset | Regimen | pd.DataFrame) -> Dataset:
    if isinstance(source, Dataset):
        return source
    if isinstance(source, Regimen):
        return read_nonmem(source.to_table())
    if isinstance(source, pd.DataFrame):
        return read_nonmem(source)
    raise TypeError(
        f"expected a Dataset (pmx_jax.read_nonmem), a Regimen or a DataFrame, got "
        f"{type(source).__name__}"
    )


def _eta_array(model: Model, data: Dataset, etas) -> np.ndarray:
    n_sub, n_eta = data.n_subjects, model.n_eta
    if etas is None:
        return np.zeros((n_sub, n_eta))
    if isinstance(etas, pd.DataFrame):
        missing = [n for n in model.eta_names if n not in etas.columns]
        if missing:
            raise ValueError(f"etas table lacks columns {missing}; it needs {model.eta_names}")
        if "ID" in etas.columns:
            etas = etas.set_index("ID").reindex(list(data.ids))
            if etas[list(model.eta_names)].isna().any().any():
                raise ValueError("etas table has no row for some subjects of the dataset")
        return etas[list(model.eta_names)].to_numpy(dtype=float)
    etas = np.asarray(etas, dtype=float)
    if etas.shape != (n_sub, n_eta):
        raise ValueError(
            f"etas must have shape (n_subjects, n_eta) = ({n_sub}, {n_eta}) for etas "
            f"{model.eta_names}; got {etas.shape}"
        )
    return etas


@stored("predictions")
def _predict_batch(model: Model, prepared: Prepared, etas, iov_etas):
    def one(data, eta, iov):
        # PRED (etas 0) and IPRED as one vmapped pass: one trace of the engine.
        both = jax.vmap(lambda e, o: subject_predictions(model, data, e, o))(
            jnp.stack([jnp.zeros_like(eta), eta]), jnp.stack([jnp.zeros_like(iov), iov])
        )
        return both.prediction[0], both.prediction[1], jnp.all(both.ok)

    return jax.vmap(one)(prepared.subject_data(derivatives=False), etas, iov_etas)


def predict(
    model: Model,
    data: Dataset | Regimen | pd.DataFrame,
    etas: Any = None,
    *,
    iov_etas: Any = None,
) -> pd.DataFrame:
    """Population (PRED, all etas 0) and individual (IPRED) predictions at every
    record of ``data``, one row per row of the original table.

    Args:
        model: a :class:`pmx_jax.Model` with the parameter values to use.
        data: a Dataset, a Regimen or a NONMEM-style DataFrame.
        etas: individual random effects, an array ``(n_subjects, n_eta)`` in the
            order of ``model.eta_names`` or a DataFrame with those columns (and ID);
            ``None`` gives IPRED == PRED.
        iov_etas: occasion random effects ``(n_subjects, n_occasions, n_iov_eta)``.

    Returns columns ID, TIME, EVID, DV, PRED, IPRED and ``row`` (0-based table row).
    """
    data = _as_dataset(data)
    prepared = prepare(model, data)
    eta = jnp.asarray(_eta_array(model, data, etas), dtype=prepared.subjects.time.dtype)
    iov_shape = (data.n_subjects, prepared.n_occasions, model.n_iov_eta)
    iov = jnp.zeros(iov_shape, eta.dtype) if iov_etas is None else jnp.asarray(iov_etas)
    if iov.shape != iov_shape:
        raise ValueError(f"iov_etas must have shape {iov_shape}, got {iov.shape}")
    pred, ipred, ok = jax.device_get(_predict_batch(model, prepared, eta, iov))
    _raise_failed(data, ok)
    sub, rec = record_frame_index(prepared.subjects)
    records = data.records
    rows = np.asarray(prepared.subjects.row)[sub, rec]
    positions = data.record_positions(rows)
    out = pd.DataFrame(
        {
            "ID": records["id"].to_numpy()[positions],
            "TIME": records["time"].to_numpy()[positions],
            "EVID": records["evid"].to_numpy()[positions],
            "DV": records["dv"].to_numpy()[positions],
            "PRED": pred[sub, rec],
            "IPRED": ipred[sub, rec],
            "row": rows,
        }
    )
    return out


def _raise_failed(data: Dataset, ok) -> None:
    failed = np.flatnonzero(~np.asarray(ok)[: data.n_subjects])
    if failed.size:
        ids = ", ".join(str(data.ids[i]) for i in failed[:10])
        raise FloatingPointError(
            f"predictions are not finite for subject(s) ID {ids}: check their individual "
            "parameters (e.g. a non-positive volume or clearance) and doses"
        )


#: Memory of one row of :meth:`SimulationResult.to_frame` while it is built: five
#: 8-byte columns, the row and record indices and pandas' copies.
_BYTES_PER_ROW = 96


class SimulationResult(eqx.Module):
    """Simulated virtual subjects: arrays with a leading subject axis.

    ``ipred`` and ``dv`` have shape ``(n_subjects, n_records)`` (the design's
    records after ADDL expansion); ``observed`` marks the sampling records;
    ``event_time`` (time-to-event endpoints only, else None): at each record
    of such an endpoint, the simulated event's exact time (DV 1) or the
    record's time (DV 0), NaN on other records;
    ``etas`` is ``(n_subjects, n_eta)``; ``template`` maps each virtual subject to
    the dataset subject whose design it used.
    """

    ipred: np.ndarray
    dv: np.ndarray
    etas: np.ndarray
    ok: np.ndarray
    time: np.ndarray
    observed: np.ndarray
    template: np.ndarray
    eta_names: tuple[str, ...] = eqx.field(static=True)
    ids: tuple = eqx.field(static=True)
    event_time: np.ndarray | None = None

    @property
    def n_subjects(self) -> int:
        return self.dv.shape[0]

    def to_frame(
        self, *, observations_only: bool = True, subjects: slice | range | None = None
    ) -> pd.DataFrame:
        """Long table: SIM_ID (virtual subject, 1-based), ID (design subject),
        TIME, IPRED, DV.

        ``subjects`` selects virtual subjects by 0-based index (a slice or range),
        to write a large simulation in parts; a table that would not fit in the
        memory available raises :class:`pmx_jax.ResultTooLargeError` first.
        """
        every = np.arange(self.n_subjects)
        chosen = every if subjects is None else every[subjects]
        template = self.template[chosen]
        n_records = self.dv.shape[1]
        if observations_only:
            n_rows = int(self.observed.sum(axis=1)[template].sum())
        else:
            n_rows = chosen.size * n_records
        check_fits(
            n_rows * _BYTES_PER_ROW,
            f"A table of {n_rows:,} simulated rows",
            "Write it in parts with to_frame(subjects=range(start, stop)), or simulate with "
            "simulate(..., on_chunk=f) to handle each chunk as it comes.",
        )
        keep = (
            self.observed[template]
            if observations_only
            else np.ones((chosen.size, n_records), dtype=bool)
        )
        sub, rec = np.nonzero(keep)
        rows = chosen[sub]
        columns = {
            "SIM_ID": rows + 1,
            "ID": np.asarray(self.ids, dtype=object)[self.template[rows]],
            "TIME": self.time[self.template[rows], rec],
            "IPRED": self.ipred[rows, rec],
            "DV": self.dv[rows, rec],
        }
        if self.event_time is not None:
            columns["EVENT_TIME"] = self.event_time[rows, rec]
        return pd.DataFrame(columns)

    def etas_frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.etas, columns=list(self.eta_names))
        frame.insert(0, "SIM_ID", np.arange(1, self.n_subjects + 1))
        return frame


def _simulate_subject(
    model: Model, prepared: Prepared, covariate_values, covariate_mask, index, template, key
):
    """One virtual subject: etas, IOV etas, predictions and residual draws
    (and event times of time-to-event endpoints, see :mod:`._events`)."""
    data = prepared.subject(template, derivatives=False)
    subject = data.records
    if covariate_values is not None:
        cov = jnp.where(covariate_mask, covariate_values[None, :], subject.cov)
        subject = eqx.tree_at(lambda s: s.cov, subject, cov)
        data = eqx.tree_at(lambda d: d.records, data, subject)
    key = jax.random.fold_in(key, index)
    k_eta, k_iov, k_eps = jax.random.split(key, 3)
    dtype = subject.time.dtype
    omega = model.omega_matrix().astype(dtype)
    eta = _correlated_normal(k_eta, omega, ())
    iov = _correlated_normal(k_iov, model.iov_omega_matrix().astype(dtype), (prepared.n_occasions,))
    result = subject_predictions(model, data, eta, iov)
    if prepared.has_general:
        # Counts, categories, events...: one key per record for each record's draw.
        keys = jax.random.split(k_eps, subject.time.shape[0])
        dv = jax.vmap(model.record_sample)(keys, result.amounts, result.params, subject.dvid)
    else:
        # Gaussian endpoints: one vector of standard normal draws for all records
        # (the error models sample any shape); a key per record would cost two
        # threefry hashes per draw instead of half of one.
        observations = jax.vmap(model.observation)(result.amounts, result.params, subject.dvid)
        dv = observations.sample(k_eps)
    dv = jnp.where(subject.is_obs | (subject.evid == 0), dv, 0.0)
    # Only with a time-to-event endpoint: a NaN array as large as the DVs
    # would cost a tenth of a Gaussian simulation to fill and copy.
    event_time = (
        jnp.full(subject.time.shape, jnp.nan, dtype) if any(prepared.event_levels) else None
    )
    for level, is_event in enumerate(prepared.event_levels):
        if not is_event:
            continue

        def terms(amounts, params, level=level):
            _, log_hazard, cumulative = model.observation(amounts, params, level).event_terms()
            return jnp.exp(log_hazard), cumulative

        hazard, cumulative = jax.vmap(terms)(result.amounts, result.params)
        reported = subject.is_obs & (subject.dvid == level)
        simulated, when = simulate_events(
            jax.random.fold_in(k_eps, level),
            subject.time,
            cumulative.astype(dtype),
            hazard.astype(dtype),
            reported,
            (subject.evid == 3) | (subject.evid == 4),
            subject.valid & (subject.evid != 1) & (subject.evid != 4),
        )
        dv = jnp.where(reported, simulated, dv)
        event_time = jnp.where(reported, when, event_time)
    return result.prediction, dv.astype(dtype), eta, result.ok, event_time


def _correlated_normal(key, covariance, batch):
    n = covariance.shape[0]
    if n == 0:
        return jnp.zeros((*batch, 0), covariance.dtype)
    chol = jnp.linalg.cholesky(covariance)
    z = jax.random.normal(key, (*batch, n), covariance.dtype)
    return z @ chol.T


@stored("simulation")
def _simulate_chunk(model, prepared, covariate_values, covariate_mask, indices, templates, key):
    if templates is None:
        # One design subject (e.g. a Regimen): its records stay un-batched under
        # vmap, so what depends on the design alone (dose table, event order) is
        # computed once per chunk rather than once per virtual subject.
        return jax.vmap(
            lambda c, i: _simulate_subject(model, prepared, c, covariate_mask, i, 0, key)
        )(covariate_values, indices)
    return jax.vmap(
        lambda c, i, t: _simulate_subject(model, prepared, c, covariate_mask, i, t, key)
    )(covariate_values, indices, templates)


def _with_float_dtype(model: Model, dtype) -> Model:
    def cast(leaf):
        if isinstance(leaf, np.ndarray | jax.Array) and jnp.issubdtype(leaf.dtype, jnp.floating):
            return leaf.astype(dtype)
        return leaf

    return jax.tree_util.tree_map(cast, model)


def _covariate_override(prepared: Prepared, covariates, n_subjects: int):
    """Per-virtual-subject covariate values (constant in time) replacing the design's."""
    names = prepared.subjects.covariate_names
    if covariates is None or not names:
        return None
    if isinstance(covariates, pd.DataFrame):
        covariates = {c: covariates[c].to_numpy() for c in covariates.columns}
    unknown = [c for c in covariates if c not in names]
    if unknown:
        raise ValueError(f"covariates {unknown} are not used by the model; it reads {names}")
    values = np.zeros((n_subjects, len(names)))
    mask = np.zeros(len(names), dtype=bool)
    for j, name in enumerate(names):
        if name in covariates:
            column = np.broadcast_to(np.asarray(covariates[name], dtype=float), (n_subjects,))
            values[:, j] = column
            mask[j] = True
    dtype = prepared.subjects.time.dtype
    return jnp.asarray(values, dtype), jnp.asarray(mask)


def _default_chunk(n_records: int) -> int:
    """Subjects per compiled batch: 65536 on accelerators; on a CPU about 2^20
    records (a power of two, 128 to 2048), so that a batch's arrays stay in
    cache while each step of the event loop has enough subjects to outweigh
    its fixed cost.  Measured (benchmarks/simulate.py and 10,000 subjects of
    a 12-record design, 2-core CPU): 701 records (757 event points) ran best
    with 1024 (0.17 s, against 0.19 s with 512 and 0.25 s with 2048); 12
    records with 2048."""
    if jax.default_backend() != "cpu":
        return 65536
    return 1 << int(np.clip(np.log2(max(2**20 // max(n_records, 1), 1)), 7, 11))


def simulate(
    model: Model,
    design: Dataset | Regimen | pd.DataFrame,
    *,
    key: PRNGKeyArray,
    n_subjects: int | None = None,
    covariates: Mapping[str, Any] | pd.DataFrame | None = None,
    chunk_size: int | None = None,
    dtype: Any = None,
    on_chunk: Callable[[int, tuple[np.ndarray, ...]], None] | None = None,
) -> SimulationResult | None:
    """Simulate virtual subjects: etas ~ N(0, Omega), occasion etas, residual error.

    Args:
        model: the model with the parameter values to simulate from.
        design: a Dataset (each virtual subject reuses the records of dataset
            subject ``i mod n``), a :class:`Regimen`, or a NONMEM DataFrame.
        key: a ``jax.random`` key; results depend only on it and the subject's
            index (not on ``chunk_size`` or the number of devices).
        n_subjects: virtual subjects (default: the dataset's subjects).
        covariates: per-virtual-subject covariate values (a DataFrame or a dict of
            arrays of length ``n_subjects`` or scalars), constant over time, e.g.
            drawn from a covariate distribution of the target population.
        chunk_size: subjects per compiled batch; memory is proportional to it, not to
            ``n_subjects`` (default on a CPU: a power of two from 128 to 2048,
            about 2^20 records per batch, which keeps intermediates in cache;
            65536 on accelerators).  Each chunk is
            split over all local devices.
        dtype: float dtype (float32 halves memory and is faster on GPUs).
        on_chunk: if given, called as
            ``on_chunk(first_index, (ipred, dv, etas, ok, event_time))``
            for each chunk (``event_time`` None without a time-to-event
            endpoint) and nothing is accumulated (the function returns None):
            the way to summarise 10^6+ subjects without holding them all.
    """
    data = _as_dataset(design)
    # The design's DVs are not simulated from: placeholders need not be
    # values the endpoints can produce.
    prepared = prepare(model, data, dtype=dtype, check_values=False)
    # THETA/OMEGA values are float64 under x64: compute in the design's dtype so
    # that dtype=float32 really simulates in float32 (and the event scan's carry
    # keeps one dtype).
    model = _with_float_dtype(model, prepared.subjects.time.dtype)
    n_template = data.n_subjects
    n_subjects = n_template if n_subjects is None else int(n_subjects)
    if n_subjects < 1:
        raise ValueError("n_subjects must be >= 1")
    n_records = prepared.subjects.time.shape[1]
    if chunk_size is None:
        chunk_size = _default_chunk(n_records)
    chunk = padded_count(min(chunk_size, n_subjects))
    if on_chunk is None:
        itemsize = np.dtype(prepared.subjects.time.dtype).itemsize
        check_fits(
            n_subjects * (2 * n_records + model.n_eta) * itemsize,
            f"Keeping {n_subjects:,} simulated subjects x {n_records} records (IPRED and DV)",
            "Pass simulate(..., on_chunk=f) to receive each chunk as it is simulated and keep "
            "only what you need (summaries, or rows written to a file), simulate fewer "
            "subjects at a time (the results depend only on the key and the subject index), "
            "or use dtype='float32' to halve the memory.",
        )
    override = _covariate_override(prepared, covariates, n_subjects)
    outputs: tuple[np.ndarray, ...] | None = None
    for first in range(0, n_subjects, chunk):
        count = min(chunk, n_subjects - first)
        indices = np.arange(first, first + chunk)
        templates = None if n_template == 1 else jnp.asarray(indices % n_template)
        values = mask = None
        if override is not None:
            values, mask = override
            values = pad_subjects(values[first : first + count], chunk)
        values, indices, templates = shard_subjects((values, jnp.asarray(indices), templates))
        out = _simulate_chunk(model, prepared, values, mask, indices, templates, key)
        result = tuple(None if x is None else np.asarray(x)[:count] for x in jax.device_get(out))
        if on_chunk is not None:
            on_chunk(first, result)
            continue
        if outputs is None:
            # Filled chunk by chunk: concatenating at the end would copy the
            # (n_subjects, n_records) arrays once more.
            outputs = tuple(
                None if x is None else np.empty((n_subjects, *x.shape[1:]), x.dtype) for x in result
            )
        for whole, part in zip(outputs, result, strict=True):
            if whole is not None:
                whole[first : first + count] = part
    if on_chunk is not None:
        return None
    assert outputs is not None
    ipred, dv, eta, ok, event_time = outputs
    subjects = prepared.subjects
    return SimulationResult(
        ipred=ipred,
        dv=dv,
        etas=eta,
        ok=ok,
        time=np.asarray(subjects.time),
        observed=np.asarray(subjects.is_obs),
        template=np.arange(n_subjects) % n_template,
        eta_names=model.eta_names,
        ids=data.ids,
        event_time=event_time,
    )
