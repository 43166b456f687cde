"""Dosing regimens and sampling designs built in code, for virtual trials."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Dose:
    """One dosing record (NONMEM semantics): ``amount`` into compartment ``cmt``
    at ``time``, repeated ``additional`` more times every ``interval``; a
    zero-order infusion when ``duration`` > 0; ``steady_state`` 1 or 2 as SS."""

    time: float
    amount: float
    cmt: int = 1
    duration: float = 0.0
    interval: float = 0.0
    additional: int = 0
    steady_state: int = 0

    def __post_init__(self):
        if self.amount < 0:
            raise ValueError(f"dose amount must be >= 0, got {self.amount}")
        if self.duration < 0:
            raise ValueError(f"infusion duration must be >= 0, got {self.duration}")
        if (self.additional > 0 or self.steady_state) and self.interval <= 0:
            raise ValueError("repeated or steady-state doses need interval > 0")


@dataclass(frozen=True)
class Regimen:
    """A dosing regimen plus sampling times, the design of a virtual trial.

    >>> reg = Regimen.oral(320, every=24, n=7).sample(range(0, 169, 4))
    >>> reg.n_doses, len(reg.sample_times)
    (7, 43)

    Regimens combine with ``+`` (doses and samples are merged).
    """

    doses: tuple[Dose, ...] = ()
    sample_times: tuple[float, ...] = ()
    sample_cmt: int = 0
    covariates: dict[str, float] = field(default_factory=dict)

    # -- constructors ------------------------------------------------------------------
    @classmethod
    def oral(
        cls, amount: float, *, every: float = 0.0, n: int = 1, start: float = 0.0, cmt: int = 1
    ) -> Regimen:
        """``n`` oral doses of ``amount`` every ``every`` time units into ``cmt``
        (the depot, CMT 1, of the oral models)."""
        return cls.bolus(amount, every=every, n=n, start=start, cmt=cmt)

    @classmethod
    def bolus(
        cls, amount: float, *, every: float = 0.0, n: int = 1, start: float = 0.0, cmt: int = 1
    ) -> Regimen:
        """``n`` instantaneous doses (IV bolus into ``cmt``)."""
        _check_repeats(every, n)
        return cls(doses=(Dose(start, amount, cmt, 0.0, every if n > 1 else 0.0, n - 1),))

    @classmethod
    def infusion(
        cls,
        amount: float,
        *,
        duration: float,
        every: float = 0.0,
        n: int = 1,
        start: float = 0.0,
        cmt: int = 1,
    ) -> Regimen:
        """``n`` zero-order infusions of ``amount`` over ``duration``."""
        if duration <= 0:
            raise ValueError("an infusion needs duration > 0")
        _check_repeats(every, n)
        return cls(doses=(Dose(start, amount, cmt, duration, every if n > 1 else 0.0, n - 1),))

    @classmethod
    def steady_state(
        cls, amount: float, *, every: float, duration: float = 0.0, cmt: int = 1, n: int = 1
    ) -> Regimen:
        """A dose at steady state (SS=1) at time 0, followed by ``n - 1`` more."""
        return cls(doses=(Dose(0.0, amount, cmt, duration, every, n - 1, 1),))

    # -- combinators ------------------------------------------------------------------
    def sample(self, times: Iterable[float], *, cmt: int = 0) -> Regimen:
        """Add observation times (CMT 0: the model's default endpoint)."""
        times = tuple(float(t) for t in times)
        if any(t < 0 for t in times):
            raise ValueError("sampling times must be >= 0")
        return replace(self, sample_times=tuple(sorted(self.sample_times + times)), sample_cmt=cmt)

    def with_covariates(self, **values: float) -> Regimen:
        """Covariate values of the typical subject of this design."""
        return replace(self, covariates={**self.covariates, **values})

    def __add__(self, other: Regimen) -> Regimen:
        return Regimen(
            doses=self.doses + other.doses,
            sample_times=tuple(sorted(self.sample_times + other.sample_times)),
            sample_cmt=self.sample_cmt or other.sample_cmt,
            covariates={**self.covariates, **other.covariates},
        )

    @property
    def n_doses(self) -> int:
        return sum(d.additional + 1 for d in self.doses)

    def to_table(self, id_value=1) -> pd.DataFrame:
        """One subject's NONMEM dataset (doses before samples at equal times)."""
        rows = []
        for d in self.doses:
            rate = d.amount / d.duration if d.duration > 0 else 0.0
            rows.append(
                dict(
                    ID=id_value,
                    TIME=d.time,
                    AMT=d.amount,
                    EVID=1,
                    CMT=d.cmt,
                    RATE=rate,
                    II=d.interval,
                    ADDL=d.additional,
                    SS=d.steady_state,
                    DV=np.nan,
                    MDV=1,
                )
            )
        for t in self.sample_times:
            rows.append(
                dict(
                    ID=id_value,
                    TIME=t,
                    AMT=0.0,
                    EVID=0,
                    CMT=self.sample_cmt,
                    RATE=0.0,
                    II=0.0,
                    ADDL=0,
                    SS=0,
                    DV=0.0,
                    MDV=0,
                )
            )
        table = pd.DataFrame(rows)
        if table.empty:
            raise ValueError("a regimen needs doses or sampling times")
        table = table.sort_values(["TIME", "EVID"], ascending=[True, False], kind="stable")
        for name, value in self.covariates.items():
            table[name] = value
        return table.reset_index(drop=True)


def _check_repeats(every: float, n: int) -> None:
    if n < 1:
        raise ValueError(f"number of doses must be >= 1, got {n}")
    if n > 1 and every <= 0:
        raise ValueError("repeated doses need every > 0")
