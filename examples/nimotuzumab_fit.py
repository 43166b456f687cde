"""Nonlinear antibody kinetics on the nimotuzumab data: linear clearance,
quasi-steady-state TMDD, and the Michaelis-Menten limit the TMDD fit goes to.

``nimoData.csv`` (nlmixr2data; not bundled: pass its path, or set
``PMX_REFDATA`` to its folder): 12 patients, ten weekly infusions of 50 to
400 mg, 321 log serum concentrations.  Three FOCEI fits:

- ``pmx.library.NimotuzumabLinear``: two compartments, linear CL.
- ``pmx.library.NimotuzumabMM``: two compartments, Michaelis-Menten
  elimination only (VM, KM; IIV on V and KM).
- with ``--qss-iterations N``: ``N`` iterations of ``pmx.library.Nimotuzumab``
  (QSS TMDD), printing CL, KSS and kint as it goes.  It does not converge on
  these data: CL runs to zero while KSS and kint grow together, which is the
  Michaelis-Menten model above with ``VM = ksyn V``, ``KM = kdeg KSS / kint``.
  Each iteration takes about 30 s on a 2-core CPU.

    python examples/nimotuzumab_fit.py                       # about 2 min
    python examples/nimotuzumab_fit.py --qss-iterations 20   # + about 10 min
"""

import argparse
import math
import os
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import pmx_jax as pmx  # noqa: E402

DEFAULT = Path(
    os.environ.get("PMX_REFDATA", Path(__file__).resolve().parents[2] / "shared" / "refdata")
)


def qss_progress(info, model):
    """fit(callback=...): the parameters that drift, at each accepted step."""
    if info["accepted"]:
        cl, kss, kint = (math.exp(float(getattr(model, n))) for n in ("tcl", "tkss", "tkint"))
        print(
            f"  QSS iteration {info['iteration']:>3}  OFV {info['ofv']:10.4f}  CL {cl:.2e} L/h"
            f"  KSS {kss:7.2f} mg/L  kint {kint:.3f} /h  kint/KSS {kint / kss:.4f}",
            flush=True,
        )


def main(path: Path, qss_iterations: int = 0) -> dict:
    """Fit the models to ``path``, print the Michaelis-Menten fit and a
    comparison table; return the FitResults by name."""
    data = pmx.read_nonmem(path)
    fits = {
        "linear": pmx.fit(pmx.library.NimotuzumabLinear(), data, "focei", covariance=None),
        "michaelis-menten": pmx.fit(pmx.library.NimotuzumabMM(), data, "focei"),
    }
    if qss_iterations:
        fits["qss (not converged)"] = pmx.fit(
            pmx.library.Nimotuzumab(),
            data,
            "focei",
            covariance=None,
            max_iterations=qss_iterations,
            callback=qss_progress,
        )
    mm = fits["michaelis-menten"]
    print(mm)
    vm, km = math.exp(float(mm.model.tvm)), math.exp(float(mm.model.tkm))
    print(
        f"\nVM {vm:.3g} mg/h, KM {km:.3g} mg/L: clearance VM/KM = {vm / km:.3g} L/h at low "
        f"concentrations, {vm / (km + 500):.3g} L/h at 500 mg/L (linear fit: "
        f"{math.exp(float(fits['linear'].model.tcl)):.3g} L/h)\n"
    )
    print(pmx.diagnostics.compare(*fits.values(), names=list(fits)).to_string(index=False))
    return fits


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT / "nimoData.csv")
    parser.add_argument("--qss-iterations", type=int, default=0)
    args = parser.parse_args()
    if not args.data.exists():
        parser.error(f"{args.data} not found: pass the path of nimoData.csv or set PMX_REFDATA")
    main(args.data, args.qss_iterations)
