"""Checks of a dataset against a model, run in Python before anything is traced."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._errors import (
    InvalidDoseError,
    InvalidValueError,
    UnknownCompartmentError,
    format_id,
    where_many,
)
from ._subjects import Subjects

if TYPE_CHECKING:
    from ._dataset import Dataset


def check_compartments(
    data: Dataset | Subjects,
    n_compartments: int,
    *,
    ids: Sequence[Any] | None = None,
    model: str | None = None,
) -> None:
    """Raise :class:`UnknownCompartmentError` if a record's CMT is not 0..n_compartments.

    CMT 0 means "the model's default compartment" and is always allowed; NONMEM's
    negative CMT (turning a compartment off) and the output compartment
    (``n_compartments + 1``) are not supported.

    Args:
        data: a :class:`Dataset`, or :class:`Subjects` (padding records are skipped).
        n_compartments: number of compartments of the model's dynamics.
        ids: subject IDs for messages when ``data`` is a Subjects (``Dataset.ids``);
            otherwise subjects are named by their 0-based index.
        model: the model's name, for the message.
    """
    column = "CMT"
    if isinstance(data, Subjects):
        valid = np.asarray(data.valid)
        cmt = np.asarray(data.cmt)[valid]
        rows = np.asarray(data.row)[valid]
        subject = np.nonzero(valid)[0]
        names = (
            np.asarray(ids, dtype=object)[subject]
            if ids is not None
            else np.array([f"index {s}" for s in subject], dtype=object)
        )
    else:
        cmt = data.records["cmt"].to_numpy()
        rows = data.records["row"].to_numpy()
        names = data.records["id"].to_numpy()
        column = data.roles.get("CMT", column)
    bad = np.flatnonzero((cmt < 0) | (cmt > n_compartments))
    if not bad.size:
        return
    # An ADDL dose shares its source row: name each row once.
    _, first = np.unique(rows[bad], return_index=True)
    bad = bad[np.sort(first)]
    who = model or "the model"
    raise UnknownCompartmentError(
        f"Column {column!r} (CMT) is {int(cmt[bad[0]])} on "
        f"{where_many(rows[bad], names[bad])}, but {who} has {n_compartments} "
        f"compartment{'s' if n_compartments != 1 else ''} "
        f"(CMT 1-{n_compartments}, or 0 for the default). Renumber CMT to the model's "
        f"compartments (ID "
        f"{format_id(names[bad[0]])} first)."
    )


def check_modelled_inputs(
    data: Dataset, parameter_names: Sequence[str], *, model: str | None = None
) -> None:
    """Raise :class:`InvalidDoseError` for a RATE -1 dose into compartment k when the
    model's $PK block defines no ``R<k>`` (modelled rate), or RATE -2 without ``D<k>``
    (modelled duration).  CMT 0 doses go to compartment 1, as in the event engine.
    """
    records = data.records
    dose = records["evid"].isin((1, 4)).to_numpy()
    rate = records["rate"].to_numpy()
    cmt = np.maximum(records["cmt"].to_numpy(), 1)
    names = set(parameter_names)
    column = data.roles.get("RATE", "RATE")
    who = model or "the model"
    for code, prefix, what in ((-1, "R", "rate"), (-2, "D", "duration")):
        for k in np.unique(cmt[dose & (rate == code)]):
            if f"{prefix}{k}" in names or f"{prefix.lower()}{k}" in names:
                continue
            bad = np.flatnonzero(dose & (rate == code) & (cmt == k))
            raise InvalidDoseError(
                f"Column {column!r} (RATE) is {code} on "
                f"{where_many(records['row'].to_numpy()[bad], records['id'].to_numpy()[bad])}: "
                f"a zero-order input into compartment {k} whose {what} the model gives, but "
                f"{who}'s individual parameters have no {prefix}{k} (they are "
                f"{', '.join(sorted(names)) or 'none'}). Define {prefix}{k} in the model, or "
                f"give the infusion rate in RATE (> 0)."
            )


def check_endpoint_values(
    data: Dataset, endpoints: Sequence[Any], *, model: str | None = None
) -> None:
    """Check every observation against its endpoint's observation model
    (``endpoints[k]`` for DVID level ``k``, as ``likelihood.level_endpoints``
    gives them): raise :class:`InvalidValueError`
    for a DV the model cannot produce (a category outside the declared set, a
    negative or fractional count, a time-to-event code other than 0/1/2), for
    a censoring flag on a non-Gaussian endpoint, and for an interval-censored
    event (DV 2) with no earlier time at risk."""
    records = data.records
    observation = ((records["evid"] == 0) & (records["mdv"] == 0)).to_numpy()
    dvid = records["dvid"].to_numpy()
    dv = records["dv"].to_numpy(dtype=float)
    cens = records["cens"].to_numpy()
    rows = records["row"].to_numpy()
    ids = records["id"].to_numpy()
    time = records["event_time"].to_numpy(dtype=float)
    who = model or "the model"
    dv_column = data.roles.get("DV", "DV")
    for level, endpoint in enumerate(endpoints):
        if getattr(endpoint, "gaussian", True):
            continue
        name = type(endpoint).__name__
        on = observation & (dvid == level)
        label = "" if len(data.dvid_levels) <= 1 else f" (DVID {data.dvid_levels[level]})"
        censored = np.flatnonzero(on & (cens != 0))
        if censored.size:
            raise InvalidValueError(
                f"{where_many(rows[censored], ids[censored])}{label} is censored (CENS "
                f"{int(cens[censored[0]])}), but {who} observes this endpoint with {name}, "
                "which has no censoring limit (M3 is for Gaussian endpoints). Code the "
                "record's DV as the endpoint expects, or set CENS to 0."
            )
        check = endpoint.dv_problem()
        if check is not None:
            impossible, allowed = check
            bad = np.flatnonzero(on & impossible(dv))
            if bad.size:
                raise InvalidValueError(
                    f"Column {dv_column!r} (DV) is {dv[bad[0]]:g} on "
                    f"{where_many(rows[bad], ids[bad])}{label}, but {who} observes this "
                    f"endpoint with {name}, whose DV must be {allowed}."
                )
        if getattr(endpoint, "time_to_event", False):
            first_time = records.groupby("subject")["event_time"].transform("min").to_numpy()
            bad = np.flatnonzero(on & (dv == 2) & (time <= first_time))
            if bad.size:
                raise InvalidValueError(
                    f"{where_many(rows[bad], ids[bad])}{label} is an interval-censored event "
                    "(DV 2) at the subject's first time: the interval since the start is "
                    "empty. Give the subject a record at the start of follow-up."
                )
