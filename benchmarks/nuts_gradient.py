"""Cost of one NUTS gradient: ``pmx.sample``'s potential against a NumPyro
model written by hand for the same design, in the same run.

The design and data are ``benchmarks/nuts.py``'s: 120 subjects, 100 mg once
daily for 7 days, 39 samples each, one-compartment oral model with a full
OMEGA block on KA, CL, V, log-normal residual error and M3 censoring below
0.25 mg/L.  Both potentials are non-centred (``eta = L z``, ``z ~ N(0, I)``)
and evaluated at the same point, in float64:

- **pmx**: :class:`pmx_jax.bayes.Posterior` of ``nuts.OralMultipleDose`` on
  the dataset, as ``pmx.sample`` builds it (its default priors); the event
  engine moves each subject's amounts record by record (any NONMEM dosing
  history).
- **NumPyro**: a plain NumPyro model of this design only: concentrations by
  superposition of the seven doses' closed forms on a dense
  (subjects x samples x doses) array, ``LKJCholesky(2)`` correlation, normal /
  half-normal priors.  This is what a user fitting exactly this design
  would write.

Both log-likelihoods are checked to agree (their difference between two
points of the random effects, which cancels constants, to 1e-8).  Reported: the
compile time of ``jit(value_and_grad(potential))`` and the fastest and median
of ``--repeats`` warm calls; and, closer to how the sampler runs it, the time
per gradient inside one compiled loop of 100 dependent evaluations (no
dispatch per call; best of 5, three rounds alternating between the two).

    python benchmarks/nuts_gradient.py            # --repeats 200

Printed as a table and written to ``benchmarks/results/nuts_gradient.json``.
The target (issue: throughput): pmx within 1.5x of NumPyro's time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("PMX_JAX_CACHE_DIR", "off")  # compile times are measured cold
from _common import machine  # noqa: E402
from nuts import LLOQ, TRUE_OMEGA, TRUTH, OralMultipleDose, simulate_data  # noqa: E402

import pmx_jax as pmx  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "nuts_gradient.json"
DOSE = 100.0


def pmx_potential(data):
    """``pmx.sample``'s posterior (non-centred, default priors) and a point."""
    from pmx_jax.bayes._posterior import Posterior
    from pmx_jax.bayes._priors import population_prior
    from pmx_jax.likelihood import make_problem
    from pmx_jax.likelihood._mu import mu_referenced_thetas

    model = OralMultipleDose().with_values(**TRUTH, iiv=TRUE_OMEGA)
    problem = make_problem(model, data, "laplace")
    b0 = np.zeros((problem.n_subjects, problem.layout.size))
    mu = mu_referenced_thetas(model, problem, b0)
    posterior = Posterior(model, population_prior(model), problem, "noncentered", mu)
    pop = jnp.asarray(posterior.prior.initial(model), problem.dtype)
    return posterior, model, pop


class Design:
    """The dense arrays of the hand-written model."""

    def __init__(self, table):
        obs = table[table.EVID == 0]
        doses = table[(table.EVID == 1) & (table.ID == table.ID.iloc[0])]
        n = table.ID.nunique()
        self.time = jnp.asarray(obs.TIME.to_numpy().reshape(n, -1))
        self.log_dv = jnp.log(jnp.asarray(obs.DV.to_numpy().reshape(n, -1)))
        self.censored = jnp.asarray(obs.CENS.to_numpy().reshape(n, -1) == 1)
        self.dose_time = jnp.asarray(doses.TIME.to_numpy())
        self.n = n


def log_likelihood(design: Design, tka, tcl, tv, sd, eta):
    """Per-subject log-likelihood of log DV (M3 for censored samples)."""
    ka = jnp.exp(tka + eta[:, 0])[:, None, None]
    cl = jnp.exp(tcl + eta[:, 1])[:, None, None]
    v = jnp.exp(tv + eta[:, 2])[:, None, None]
    k = cl / v
    since = design.time[:, :, None] - design.dose_time[None, None, :]
    after = since >= 0.0
    dt = jnp.where(after, since, 0.0)
    unit = DOSE * ka / (v * (ka - k)) * (jnp.exp(-k * dt) - jnp.exp(-ka * dt))
    log_c = jnp.log(jnp.sum(jnp.where(after, unit, 0.0), axis=-1))
    z = (design.log_dv - log_c) / sd
    observed = -0.5 * z**2 - jnp.log(sd) - 0.5 * jnp.log(2.0 * jnp.pi)
    below = jax.scipy.stats.norm.logcdf((jnp.log(LLOQ) - log_c) / sd)
    return jnp.sum(jnp.where(design.censored, below, observed), axis=-1)


def numpyro_model(design: Design):
    import numpyro
    import numpyro.distributions as dist

    tka = numpyro.sample("tka", dist.Normal(0.0, 2.0))
    tcl = numpyro.sample("tcl", dist.Normal(1.0, 2.0))
    tv = numpyro.sample("tv", dist.Normal(3.5, 2.0))
    sd = numpyro.sample("sd", dist.HalfNormal(1.0))
    omega_sd = numpyro.sample("omega_sd", dist.HalfNormal(jnp.ones(3)))
    corr = numpyro.sample("corr", dist.LKJCholesky(3, 2.0))
    z = numpyro.sample("z", dist.Normal(jnp.zeros((design.n, 3)), 1.0).to_event(2))
    eta = z @ (omega_sd[:, None] * corr).T
    numpyro.factor("loglik", jnp.sum(log_likelihood(design, tka, tcl, tv, sd, eta)))


def timed_gradient(potential, point, repeats: int) -> dict:
    gradient = jax.jit(jax.value_and_grad(potential))
    tic = time.perf_counter()
    jax.block_until_ready(gradient(point))
    compile_s = time.perf_counter() - tic
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        jax.block_until_ready(gradient(point))
        times.append(time.perf_counter() - tic)
    return dict(
        compile_s=compile_s, best_ms=1e3 * min(times), median_ms=1e3 * float(np.median(times))
    )


def looped_gradient(potential, point, repeats: int, steps: int = 100) -> dict:
    """Per-gradient time inside one compiled loop of ``steps`` dependent
    evaluations (each moves the point a little along its gradient, as a
    leapfrog step does), as the sampler runs them: no dispatch per call."""
    value_and_grad = jax.value_and_grad(potential)

    @jax.jit
    def run(start):
        def body(_, carry):
            x, total = carry
            value, gradient = value_and_grad(x)
            x = jax.tree.map(lambda a, g: a - 1e-9 * g, x, gradient)
            return x, total + value

        return jax.lax.fori_loop(0, steps, body, (start, 0.0))[1]

    jax.block_until_ready(run(point))
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        jax.block_until_ready(run(point))
        times.append((time.perf_counter() - tic) / steps)
    return dict(best_ms=1e3 * min(times), median_ms=1e3 * float(np.median(times)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args(argv)
    from numpyro.infer.util import initialize_model

    table = simulate_data(120)
    data = pmx.read_nonmem(table)
    design = Design(table)
    posterior, model, pop = pmx_potential(data)
    rng = np.random.default_rng(1)
    z = jnp.asarray(0.5 * rng.standard_normal((design.n, 3)))

    # The same likelihood: differences between two points of the etas agree.
    chol = np.linalg.cholesky(TRUE_OMEGA)
    etas = [jnp.zeros((design.n, 3)), z @ chol.T]
    theta = [TRUTH[k] for k in ("tka", "tcl", "tv", "sd")]
    ours = [float(jnp.sum(posterior.subject_log_likelihood(model, b))) for b in etas]
    hand = [float(jnp.sum(log_likelihood(design, *theta, b))) for b in etas]
    agreement = abs((ours[1] - ours[0]) - (hand[1] - hand[0]))
    if not agreement <= 1e-8 * max(1.0, abs(ours[1] - ours[0])):  # NaN fails too
        raise AssertionError(f"the two log-likelihoods differ: {ours} vs {hand}")

    rows = {}
    rows["pmx"] = timed_gradient(posterior.potential, dict(pop=pop, eta=z), args.repeats)
    init = initialize_model(jax.random.PRNGKey(0), numpyro_model, model_args=(design,))
    point = init.param_info.z
    rows["numpyro"] = timed_gradient(init.potential_fn, point, args.repeats)
    ratio = rows["pmx"]["best_ms"] / rows["numpyro"]["best_ms"]
    # The same in a compiled loop, alternating between the two, several rounds.
    looped = {"pmx": [], "numpyro": []}
    points = {
        "pmx": (posterior.potential, dict(pop=pop, eta=z)),
        "numpyro": (init.potential_fn, point),
    }
    for _ in range(3):
        for name, (potential, at) in points.items():
            looped[name].append(looped_gradient(potential, at, repeats=5))
    for name, runs in looped.items():
        rows[name]["looped_best_ms"] = min(r["best_ms"] for r in runs)
    looped_ratio = rows["pmx"]["looped_best_ms"] / rows["numpyro"]["looped_best_ms"]

    print(f"{'potential':<10}{'compile':>10}{'best':>12}{'median':>12}{'in a loop':>12}")
    for name, row in rows.items():
        print(
            f"{name:<10}{row['compile_s']:>9.2f}s{row['best_ms']:>10.3f}ms"
            f"{row['median_ms']:>10.3f}ms{row['looped_best_ms']:>10.3f}ms"
        )
    print(
        f"pmx / NumPyro (best of single calls): {ratio:.2f}x; in a compiled loop: "
        f"{looped_ratio:.2f}x; log-likelihoods agree to {agreement:.1e}"
    )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            dict(
                machine=machine(),
                repeats=args.repeats,
                rows=rows,
                ratio=ratio,
                looped_ratio=looped_ratio,
                loglik_difference=agreement,
            ),
            indent=2,
        )
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
