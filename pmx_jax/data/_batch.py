"""From validated records to the padded :class:`Subjects` pytree.

Two steps, both vectorised over all records:

1. **ADDL expansion.**  A dose with ``ADDL = n`` and ``II = ii`` at time ``t``
   becomes n + 1 dose records: itself and copies at ``t + k * ii`` (k = 1..n)
   with the same AMT, RATE and CMT, ``SS = 0`` (NONMEM: additional doses are
   never steady-state doses), ``is_addl = True`` and ``row`` = the source row.
   A generated dose is placed after every record of the subject with an earlier
   time and before every record at the same or a later time, so an observation
   at exactly an additional dose's time sees that dose (as it sees an explicit
   dose record placed before it).  Original records keep their order.
   Covariates and occasion of a generated dose are those of its source dose
   record: NONMEM gives additional doses the dose modifiers (F, ALAG, rate,
   duration) computed at the record that carried ADDL (reference case nmtest,
   scenario 102, where LAGT changes after the dose record).
2. **Padding.**  Every subject is padded to the largest number of records (or
   ``pad_to``) with records that do nothing: ``valid = False``, EVID 2, AMT 0,
   the subject's last time, no observation, ``row = -1``, and the last record's
   covariates and occasion.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np
import pandas as pd

from ._subjects import Subjects

_FIELDS = (
    "subject",
    "row",
    "event_time",
    "evid",
    "mdv",
    "amt",
    "cmt",
    "rate",
    "ii",
    "addl",
    "ss",
    "dv",
    "dvid",
    "occ",
    "cens",
    "limit",
    "bound",
)


def expand_addl(
    records: pd.DataFrame, covariates: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """All records after ADDL expansion, in event order: (field arrays, covariates)."""
    n = len(records)
    col = {name: records[name].to_numpy() for name in _FIELDS}
    addl = col["addl"]
    source = np.flatnonzero(addl > 0)
    counts = addl[source]
    total = int(counts.sum())
    gen_src = np.repeat(source, counts)
    # k = 1..ADDL within each source dose.
    k = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts) + 1
    gen_time = col["event_time"][gen_src] + k * col["ii"][gen_src]

    subject = np.concatenate([col["subject"], col["subject"][gen_src]])
    time = np.concatenate([col["event_time"], gen_time])
    original = np.r_[np.ones(n, dtype=bool), np.zeros(total, dtype=bool)]
    sequence = np.arange(n + total)

    # Covariates/occasion of a generated dose: those of its source dose record.
    gen_from = gen_src

    def extend(name: str, generated: np.ndarray) -> np.ndarray:
        return np.concatenate([col[name], generated])

    zeros = np.zeros(total)
    fields = {
        "subject": subject,
        "time": time,
        "evid": extend("evid", np.ones(total, dtype=np.int64)),
        "mdv": extend("mdv", np.ones(total, dtype=np.int64)),
        "amt": extend("amt", col["amt"][gen_src]),
        "cmt": extend("cmt", col["cmt"][gen_src]),
        "rate": extend("rate", col["rate"][gen_src]),
        "ii": extend("ii", zeros),
        "ss": extend("ss", np.zeros(total, dtype=np.int64)),
        "dv": extend("dv", np.full(total, np.nan)),
        "dvid": extend("dvid", np.zeros(total, dtype=np.int64)),
        "occ": extend("occ", col["occ"][gen_from]),
        "cens": extend("cens", np.zeros(total, dtype=np.int64)),
        "limit": extend("limit", np.full(total, np.nan)),
        "bound": extend("bound", np.full(total, np.nan)),
        "row": extend("row", col["row"][gen_src]),
        "is_addl": ~original,
    }
    covariates = np.concatenate([covariates, covariates[gen_from]], axis=0)
    if not total:
        return fields, covariates

    # Event order: generated doses before original records at the same time.
    order = np.lexsort((sequence, original, time, subject))
    return {name: values[order] for name, values in fields.items()}, covariates[order]


def build_subjects(
    records: pd.DataFrame,
    covariates: np.ndarray,
    covariate_names: tuple[str, ...],
    n_subjects: int,
    dtype: np.dtype,
    pad_to: int | Callable[[int], int] | None,
) -> Subjects:
    """Expand ADDL, pad every subject to a common length and convert to jax arrays.

    ``pad_to``: the record count (default: the longest subject), or a rule
    giving it from the longest subject's (e.g. :func:`pmx_jax._shapes.records_bucket`)."""
    fields, covariates = expand_addl(records, covariates)
    subject = fields.pop("subject")
    counts = np.bincount(subject, minlength=n_subjects)
    longest = int(counts.max())
    if callable(pad_to):
        pad_to = pad_to(longest)
    n_records = longest if pad_to is None else int(pad_to)
    if n_records < longest:
        raise ValueError(
            f"pad_to={pad_to} is shorter than the longest subject ({longest} records after ADDL "
            f"expansion); use pad_to >= {longest} or leave it None."
        )
    starts = np.cumsum(counts) - counts
    position = np.arange(subject.size) - starts[subject]
    last = starts + counts - 1

    def pad(values: np.ndarray, fill, carry_last: bool = False) -> np.ndarray:
        shape = (n_subjects, n_records) + values.shape[1:]
        if carry_last:
            out = np.broadcast_to(values[last][:, None], shape).copy()
        else:
            out = np.full(shape, fill, dtype=values.dtype)
        out[subject, position] = values
        return out

    evid = fields["evid"]
    is_obs = (evid == 0) & (fields["mdv"] == 0)
    cens = np.where(is_obs, fields["cens"], 0)
    float_ = dtype
    int_ = jax.dtypes.canonicalize_dtype(np.int64)

    # device_put rather than jnp.asarray: a plain transfer, no per-shape compilation.
    def as_float(values: np.ndarray) -> jax.Array:
        return jax.device_put(values.astype(float_))

    def as_int(values: np.ndarray) -> jax.Array:
        return jax.device_put(values.astype(int_))

    def as_bool(values: np.ndarray) -> jax.Array:
        return jax.device_put(values.astype(bool))

    return Subjects(
        time=as_float(pad(fields["time"], 0.0, carry_last=True)),
        evid=as_int(pad(evid, 2)),
        amt=as_float(pad(fields["amt"], 0.0)),
        cmt=as_int(pad(fields["cmt"], 0)),
        rate=as_float(pad(fields["rate"], 0.0)),
        # II only matters to steady-state doses once ADDL is expanded.
        ii=as_float(pad(np.where(fields["ss"] > 0, fields["ii"], 0.0), 0.0)),
        ss=as_int(pad(fields["ss"], 0)),
        dv=as_float(pad(np.where(is_obs, fields["dv"], 0.0), 0.0)),
        is_obs=as_bool(pad(is_obs, False)),
        cens=as_int(pad(cens, 0)),
        limit=as_float(pad(np.where(cens != 0, fields["limit"], 0.0), 0.0)),
        bound=as_float(pad(_bound(cens, fields["bound"]), 0.0)),
        dvid=as_int(pad(fields["dvid"], 0)),
        occ=as_int(pad(fields["occ"], 0, carry_last=True)),
        cov=as_float(pad(covariates, 0.0, carry_last=True)),
        row=as_int(pad(fields["row"], -1)),
        is_addl=as_bool(pad(fields["is_addl"], False)),
        valid=as_bool(pad(np.ones(subject.size, dtype=bool), False)),
        covariate_names=tuple(covariate_names),
    )


def _bound(cens: np.ndarray, given: np.ndarray) -> np.ndarray:
    """The far end of each censoring interval: the LIMIT column where given,
    else -inf below an LLOQ (M3) and +inf above a ULOQ; 0 off censored records."""
    default = np.where(cens == 1, -np.inf, np.inf)
    return np.where(cens != 0, np.where(np.isnan(given), default, given), 0.0)
