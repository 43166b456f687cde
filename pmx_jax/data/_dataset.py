"""The validated dataset: the table as read, its records with NONMEM roles, and the
batching into the padded :class:`Subjects` pytree."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import numpy as np
import pandas as pd

from ._batch import build_subjects
from ._errors import MissingCovariateError, format_id
from ._subjects import Subjects


class Dataset:
    """A NONMEM-style dataset, validated; made by :func:`~pmx_jax.data.read_nonmem`.

    Attributes:
        table: the table exactly as read (for reports and output tables).
        records: one row per table row, NONMEM roles as lowercase columns after
            derivation and defaults (``id subject row time event_time evid mdv amt cmt
            rate ii addl ss dv dvid occ cens limit bound``); ``row`` is the 0-based
            position in ``table``; ``event_time`` equals TIME except after a reset
            record where TIME restarts (it then continues, as ``Subjects.time``
            does); ``dvid``/``occ`` index ``dvid_levels``/``occ_levels``; ``limit``
            is the censoring limit and ``bound`` the other end of the censoring
            interval (LIMIT column).
        roles: role -> column name in ``table`` (e.g. ``{"DV": "conc"}``).
        dvid_levels, occ_levels: the endpoint and occasion values that index 0, 1, ...
            stand for.
        categories: categorical covariate -> its levels (code i is ``levels[i]``).
        notes: what was derived, recoded or ignored while reading, in words.
    """

    def __init__(
        self,
        *,
        table: pd.DataFrame,
        records: pd.DataFrame,
        covariates: pd.DataFrame,
        roles: dict[str, str],
        ids: np.ndarray,
        dvid_levels: tuple,
        occ_levels: tuple,
        categories: dict[str, tuple],
        notes: list[str],
    ) -> None:
        self.table = table
        self.records = records
        self._covariates = covariates
        self.roles = dict(roles)
        self._ids = ids
        self.dvid_levels = tuple(dvid_levels)
        self.occ_levels = tuple(occ_levels)
        self.categories = dict(categories)
        self.notes = list(notes)

    # ----------------------------------------------------------------- counts
    @property
    def ids(self) -> tuple:
        """Subject IDs in order of appearance (subject index i is ``ids[i]``)."""
        return tuple(v.item() if isinstance(v, np.generic) else v for v in self._ids)

    @property
    def n_subjects(self) -> int:
        return len(self._ids)

    @property
    def n_records(self) -> int:
        """Records in the table (before ADDL expansion)."""
        return len(self.records)

    @property
    def _is_obs(self) -> np.ndarray:
        return ((self.records["evid"] == 0) & (self.records["mdv"] == 0)).to_numpy()

    @property
    def n_observations(self) -> int:
        """Observations that enter the likelihood (EVID 0, MDV 0)."""
        return int(self._is_obs.sum())

    @property
    def n_doses(self) -> int:
        """Dose records in the table (EVID 1 or 4), not counting doses implied by ADDL."""
        return int(self.records["evid"].isin((1, 4)).sum())

    @property
    def n_addl_doses(self) -> int:
        """Doses implied by ADDL (added by :meth:`subjects`)."""
        return int(self.records["addl"].sum())

    @property
    def covariate_names(self) -> tuple[str, ...]:
        return tuple(self._covariates.columns)

    @property
    def covariates(self) -> pd.DataFrame:
        """Covariates per record as used by the model: categories coded, carried forward."""
        return self._covariates

    # ------------------------------------------------------------- covariates
    def check_covariates(self, names: Iterable[str]) -> tuple[str, ...]:
        """The dataset's spelling of covariates a model needs (matched case-insensitively).

        Raises :class:`MissingCovariateError` listing the absent names and the
        covariates the dataset has.
        """
        by_upper = {name.upper(): name for name in self.covariate_names}
        names = list(names)
        absent = [n for n in names if n.upper() not in by_upper]
        if absent:
            roles = sorted({n for n in absent if n.upper() in {r.upper() for r in self.roles}})
            hint = (
                f" ({', '.join(roles)} {'is a' if len(roles) == 1 else 'are'} NONMEM data item(s), "
                f"not covariates)"
                if roles
                else ""
            )
            raise MissingCovariateError(
                f"The model needs covariate(s) {', '.join(absent)}, which the dataset does not "
                f"have{hint}. Its covariates are {', '.join(self.covariate_names) or '(none)'}; "
                f"add the column(s) to the data, or read them with "
                f"read_nonmem(..., covariates=[...])."
            )
        return tuple(by_upper[n.upper()] for n in names)

    def _check_complete(self, columns: Sequence[str], names: Sequence[str]) -> None:
        for column, name in zip(columns, names, strict=True):
            empty = self._covariates[column].isna().to_numpy()
            if empty.any():
                rows = self.records["row"].to_numpy()[empty]
                subjects = pd.unique(self.records["subject"].to_numpy()[empty])
                shown = ", ".join(format_id(self._ids[s]) for s in subjects[:5])
                more = f" and {subjects.size - 5} more" if subjects.size > 5 else ""
                raise MissingCovariateError(
                    f"Covariate {name!r} (column {column!r}) is missing on every record of ID "
                    f"{shown}{more} (first such record: row {rows[0] + 1}), so it cannot be "
                    f"carried forward. Fill in a value for those subjects, or drop them with "
                    f"Dataset.subset(...)."
                )

    # ------------------------------------------------------------ the pytree
    def subjects(
        self,
        covariates: Sequence[str] | None = None,
        *,
        dtype: Any = None,
        pad_to: int | Callable[[int], int] | None = None,
    ) -> Subjects:
        """The padded per-subject arrays every numerical layer consumes.

        Args:
            covariates: the covariates the model uses, in the order of the last axis
                of ``Subjects.cov`` (matched case-insensitively; names kept as given).
                Default: every covariate of the dataset, where a covariate missing for
                a whole subject stays NaN.
            dtype: float dtype of real-valued fields; default float64 when jax's x64
                mode is on (float32 otherwise).  float32 suits large simulations.
            pad_to: record count to pad every subject to (default: the longest subject
                after ADDL expansion); a fixed value avoids recompiling across datasets,
                as does a rule from the longest subject's count to the padded one
                (``pmx_jax._shapes.records_bucket``).

        ADDL doses are expanded here (see :mod:`pmx_jax.data._batch` for their order).
        """
        if covariates is None:
            columns = self.covariate_names
            names = columns
        else:
            names = tuple(covariates)
            columns = self.check_covariates(names)
            self._check_complete(columns, names)
        float_dtype = _float_dtype(dtype)
        values = self._covariates[list(columns)].to_numpy(dtype=np.float64)
        return build_subjects(self.records, values, names, self.n_subjects, float_dtype, pad_to)

    # ------------------------------------------------------------- selection
    def subset(self, ids: Iterable[Any]) -> Dataset:
        """A Dataset of some subjects (kept in the dataset's order).

        ``row`` still counts records of the table as first read (the subset's ``table``
        keeps its index labels), and DVID/OCC levels and category codes are kept, so
        results of a subset line up with those of the full dataset.
        """
        wanted = list(ids)
        index = pd.Index(self._ids).get_indexer(pd.Index(wanted))
        if (index < 0).any():
            unknown = [format_id(w) for w, i in zip(wanted, index, strict=True) if i < 0]
            raise KeyError(f"No subject with ID {', '.join(unknown)} in the dataset.")
        keep_subjects = np.unique(index)
        keep = np.isin(self.records["subject"].to_numpy(), keep_subjects)
        records = self.records.loc[keep].reset_index(drop=True)
        records["subject"] = np.searchsorted(keep_subjects, records["subject"].to_numpy())
        return Dataset(
            # table and records are aligned row by row.
            table=self.table.iloc[np.flatnonzero(keep)],
            records=records,
            covariates=self._covariates.loc[keep].reset_index(drop=True),
            roles=self.roles,
            ids=self._ids[keep_subjects],
            dvid_levels=self.dvid_levels,
            occ_levels=self.occ_levels,
            categories=self.categories,
            notes=[*self.notes, f"subset of {keep_subjects.size} of {self.n_subjects} subjects"],
        )

    def record_positions(self, rows: Any) -> np.ndarray:
        """Positions in ``records`` of table rows numbered as ``Subjects.row``
        (the numbering of the table as first read, which a subset keeps)."""
        rows = np.asarray(rows)
        positions = pd.Index(self.records["row"].to_numpy()).get_indexer(rows.ravel())
        if (positions < 0).any():
            raise KeyError(
                f"rows {rows.ravel()[positions < 0][:5].tolist()} are not in the dataset"
            )
        return positions.reshape(rows.shape)

    def observation_table(self) -> pd.DataFrame:
        """Observations that enter the likelihood, in the order of ``Subjects.is_obs``.

        Columns: ID, TIME, DV, DVID (level), CENS, row (0-based position in ``table``).
        """
        obs = self.records.loc[self._is_obs]
        return pd.DataFrame(
            {
                "ID": obs["id"].to_numpy(),
                "TIME": obs["time"].to_numpy(),
                "DV": obs["dv"].to_numpy(),
                "DVID": np.asarray(self.dvid_levels, dtype=object)[obs["dvid"].to_numpy()],
                "CENS": obs["cens"].to_numpy(),
                "row": obs["row"].to_numpy(),
            }
        )

    def check_compartments(self, n_compartments: int, *, model: str | None = None) -> None:
        """Raise :class:`UnknownCompartmentError` if a CMT is outside 0..n_compartments."""
        from ._checks import check_compartments

        check_compartments(self, n_compartments, model=model)

    # ---------------------------------------------------------------- display
    def summary(self) -> str:
        """What a pharmacometrician checks first: counts, roles, covariates, notes."""
        evid = self.records["evid"]
        per_subject = self.records.groupby("subject")["evid"].size()
        lines = [
            f"Dataset: {self.n_subjects} subjects, {self.n_records} records "
            f"({per_subject.min()}-{per_subject.max()} per subject)",
            f"  observations: {self.n_observations} (EVID 0, MDV 0)"
            + (
                f", {int((self.records['cens'] != 0).sum())} censored"
                if self.records["cens"].any()
                else ""
            ),
            f"  doses: {self.n_doses}"
            + (f" (+{self.n_addl_doses} from ADDL)" if self.n_addl_doses else "")
            + (f"; other records: {int((evid == 2).sum())}" if (evid == 2).any() else "")
            + (f"; resets: {int(evid.isin((3, 4)).sum())}" if evid.isin((3, 4)).any() else ""),
            "  roles: "
            + ", ".join(
                role if column == role else f"{role}={column}"
                for role, column in self.roles.items()
            ),
        ]
        if len(self.dvid_levels) > 1 or "DVID" in self.roles:
            lines.append(f"  endpoints (DVID): {', '.join(map(str, self.dvid_levels))}")
        if "OCC" in self.roles:
            lines.append(f"  occasions (OCC): {', '.join(map(str, self.occ_levels))}")
        covs = [
            f"{name} (categorical: {'/'.join(map(str, self.categories[name]))})"
            if name in self.categories
            else f"{name} (numeric)"
            for name in self.covariate_names
        ]
        lines.append(f"  covariates: {', '.join(covs) if covs else '(none)'}")
        if self.notes:
            lines.append("  notes:")
            lines.extend(f"    - {note}" for note in self.notes)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()


def _float_dtype(dtype: Any) -> np.dtype:
    """The float dtype for Subjects: float64 under x64, and a clear error if unavailable."""
    if dtype is None:
        return np.dtype(jax.dtypes.canonicalize_dtype(np.float64))
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        raise TypeError(f"dtype must be a float type, not {dtype}.")
    if jax.dtypes.canonicalize_dtype(dtype) != dtype:
        raise ValueError(
            f"dtype={dtype} needs jax's 64-bit mode: jax.config.update('jax_enable_x64', True) "
            f"before building Subjects."
        )
    return dtype
