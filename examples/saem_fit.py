"""SAEM and the OFV by importance sampling, next to FOCEI, on phenobarbital.

NONMEM users fit models FOCEI cannot handle well by ``METHOD=SAEM`` followed
by ``METHOD=IMP EONLY=1``; here the same on the bundled neonatal
phenobarbital data (59 subjects, 155 concentrations; covariates WT and
APGAR):

- ``pmx.fit(model, data, "saem")``: stochastic approximation EM; standard
  errors by Louis' principle; the OFV by importance sampling, with its
  Monte-Carlo standard error (the SAEM objective is not an OFV);
- ``pmx.importance_ofv(focei_fit)``: the exact -2 log-likelihood at FOCEI's
  estimates, so both fits are compared on the same scale;
- the parameter trajectories (``fit.stochastic.plot()``), saved next to
  this file as ``saem_trajectories.png``.

    python examples/saem_fit.py
"""

from pathlib import Path

import pmx_jax as pmx


def main(plot: bool = True):
    data = pmx.datasets.load("phenobarbital")
    model = pmx.library.Phenobarbital()

    saem = pmx.fit(model, data, "saem", seed=1)
    print(saem)
    details = saem.stochastic
    print(f"\nmu-referenced (closed-form M-step): {details.mu_referenced}")
    print(f"chains per subject: {details.chains}; iterations {details.iterations}")

    focei = pmx.fit(model, data, "focei")
    at_focei = pmx.importance_ofv(focei, seed=1)
    print(
        f"\nFOCEI OFV (its linearised objective): {focei.ofv:.3f}\n"
        f"exact -2LL - N log 2 pi at the FOCEI estimates: {at_focei.ofv:.3f} "
        f"(Monte-Carlo SE {at_focei.se:.3f})\n"
        f"exact -2LL - N log 2 pi at the SAEM estimates:  {saem.ofv:.3f} "
        f"(Monte-Carlo SE {details.ofv_se:.3f})"
    )
    focei_table = focei.estimates().set_index("parameter")
    saem_table = saem.estimates().set_index("parameter")
    print(f"\n{'parameter':<12} {'FOCEI':>12} {'SAEM':>12} {'SAEM SE':>10}")
    for name in saem_table.index:
        print(
            f"{name:<12} {focei_table.loc[name, 'estimate']:>12.5g} "
            f"{saem_table.loc[name, 'estimate']:>12.5g} {saem_table.loc[name, 'se']:>10.3g}"
        )
    if plot:
        path = Path(__file__).with_name("saem_trajectories.png")
        details.plot(path)
        print(f"\ntrajectories: {path}")
    return saem, focei, at_focei


if __name__ == "__main__":
    main()
