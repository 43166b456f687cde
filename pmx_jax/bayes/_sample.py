"""Full Bayesian estimation of a population model with NumPyro's NUTS.

:func:`sample` draws from the joint posterior of the population parameters
(THETA, OMEGA, and SIGMA as THETAs) and every subject's random effects, for the
same model object that :func:`pmx_jax.fit` estimates, with the same likelihood
kernel (BLQ by M3, IOV).

Chains start, by default, at a FOCEI fit's estimates and EBEs with a little
jitter.  Random starts can leave a chain in the other mode of an oral model
(absorption and elimination rate constants exchanged, "flip-flop"), where it
stays; starting from the maximum-likelihood mode keeps every chain in the mode
the data support, and saves most of the warmup.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import MCMC, NUTS

from ..data._dataset import Dataset
from ..estimation import FitResult
from ..likelihood import make_problem
from ..model._model import Model
from ._posterior import PARAMETERIZATIONS, Posterior, mu_referenced_thetas
from ._priors import population_prior
from ._result import SampleResult

# Seconds of compilation reported by JAX (tracing, lowering, XLA) since import.
_COMPILE_SECONDS = [0.0]
_COMPILE_EVENTS = (
    "/jax/core/compile/backend_compile_duration",
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
)


def _count_compile(event: str, seconds: float, **_: Any) -> None:
    if event in _COMPILE_EVENTS:
        _COMPILE_SECONDS[0] += seconds


jax.monitoring.register_event_duration_secs_listener(_count_compile)

# EBE shrinkage below which the centred parametrisation is chosen by "auto":
# the data then determine each subject's parameters (see ._posterior).
_CENTERED_MAX_SHRINKAGE = 0.2


def _default_chain_method(n_chains: int) -> str:
    devices = jax.local_devices()
    if len(devices) > 1 and len(devices) >= n_chains:
        return "parallel"
    # On a CPU the chains run one after another faster than vectorised (the
    # tree depths of the chains differ, and a vectorised step waits for the
    # deepest); an accelerator has the width to spare.
    return "sequential" if jax.default_backend() == "cpu" else "vectorized"


def _choose_parameterization(
    requested: str, fit: FitResult | None, mu: tuple[str | None, ...], model: Model
) -> str:
    if requested != "auto":
        if requested not in PARAMETERIZATIONS:
            raise ValueError(
                f"parameterization must be 'auto' or one of {PARAMETERIZATIONS}, got {requested!r}"
            )
        return requested
    if fit is None or model.n_iov_eta or not model.n_eta:
        return "noncentered"
    shrinkage = np.asarray(fit.eta_shrinkage, dtype=float)
    if all(m is not None for m in mu) and np.all(shrinkage < _CENTERED_MAX_SHRINKAGE):
        return "centered"
    return "noncentered"


def sample(
    model: Model,
    data: Dataset,
    *,
    n_chains: int = 4,
    n_warmup: int = 500,
    n_samples: int = 1000,
    seed: int = 0,
    init: str | FitResult | None = "fit",
    priors: Mapping[str, Any] | None = None,
    parameterization: str = "auto",
    dense_mass: bool = True,
    target_accept: float = 0.8,
    max_tree_depth: int = 10,
    jitter: float = 0.1,
    chain_method: str | None = None,
    progress: bool | None = None,
    chunk_size: int | None = None,
    time_phases: bool = False,
) -> SampleResult:
    """Sample the posterior of ``model``'s parameters and random effects on ``data``.

    Args:
        model: the population model; its values are the initial estimates (and
            the centre of the default THETA priors); fixed parameters stay fixed.
            Priors are taken from ``pmx.theta(..., prior=...)`` (a NumPyro
            distribution of the natural-scale value) and ``pmx.omega(...,
            prior=pmx.bayes.OmegaPrior(...))``; see :mod:`pmx_jax.bayes._priors`
            for the defaults.
        data: the dataset.
        n_chains, n_warmup, n_samples: NUTS chains, warmup (adaptation)
            iterations and kept draws per chain.
        seed: the random seed (chains, jitter); results are reproducible.
        init: ``"fit"`` (default) starts every chain at a FOCEI fit's estimates
            and EBEs (fitted here; Laplace for models with non-Gaussian
            endpoints), a :class:`~pmx_jax.FitResult` starts there, ``None``
            at the model's values with zero etas.  Each chain then gets
            ``jitter``: normal noise of that SD on the unconstrained population
            vector and on the standardised random effects.
        priors: overrides by parameter name (a NumPyro distribution for a
            THETA, an :class:`OmegaPrior` for an OMEGA block).
        parameterization: ``"centered"``, ``"noncentered"`` or ``"auto"``
            (centred when the starting fit's EBE shrinkage is below 20% for every
            eta and every eta is mu-referenced; non-centred otherwise).
        dense_mass: adapt a dense mass matrix for the population parameters
            (the random effects get a diagonal one).
        target_accept, max_tree_depth: NUTS settings.
        chain_method: NumPyro's ``"sequential"``, ``"vectorized"`` or
            ``"parallel"``; default sequential on a CPU, parallel over several
            devices, vectorised on one accelerator.
        progress: NumPyro's progress bar (default: when the terminal is interactive).
        chunk_size: subjects evaluated at once (memory bound, as in ``fit``).
        time_phases: run the warmup and the sampling as two NumPyro phases, to
            time them separately (``timings["warmup"]``, ``["sampling"]``); the
            sampler then compiles twice.  By default one phase runs both
            (``timings["nuts"]``; ``timings["compile"]`` is the compilation
            time JAX reports during it).

    Returns:
        a :class:`SampleResult`: draws by NONMEM parameter name, summary with
        R-hat and ESS, individual random effects, posterior predictive checks.
    """
    if n_chains < 1 or n_warmup < 0 or n_samples < 1:
        raise ValueError("n_chains and n_samples must be >= 1 and n_warmup >= 0")
    if not 0.0 < target_accept < 1.0:
        raise ValueError(f"target_accept must be in (0, 1), got {target_accept}")
    if progress is None:
        progress = sys.stderr.isatty()
    start_time = time.perf_counter()
    problem = make_problem(model, data, "laplace", chunk_size=chunk_size)
    fit: FitResult | None = None
    if isinstance(init, FitResult):
        fit = init
    elif init == "fit":
        from ..estimation import fit as fit_model

        # FOCEI, or Laplace where an endpoint is not Gaussian (FOCEI refuses it).
        method = "laplace" if problem.prepared.has_general else "focei"
        fit = fit_model(model, data, method, covariance=None, progress=False)
    elif init is not None:
        raise ValueError(f"init must be 'fit', a FitResult or None, got {init!r}")
    fit_seconds = time.perf_counter() - start_time
    if fit is not None and not np.isfinite(fit.ofv):
        raise FloatingPointError(
            f"the starting fit failed ({fit.message}); fix the initial estimates or "
            "pass init=None to start from the model's values"
        )
    if fit is not None and not fit.converged:
        warnings.warn(
            f"the starting fit did not converge ({fit.message}); chains start from its "
            "last estimates",
            stacklevel=2,
        )
    start_model = fit.model if fit is not None else model

    b0 = np.zeros((problem.n_subjects, problem.layout.size))
    if fit is not None:
        if fit.ebe_matrix.shape != b0.shape or tuple(fit.ids) != tuple(data.ids):
            raise ValueError(
                "the starting fit was made on other data than `data` (subjects or "
                "random effects differ)"
            )
        b0 = fit.ebe_matrix
    mu = mu_referenced_thetas(start_model, problem, b0)
    chosen = _choose_parameterization(parameterization, fit, mu, start_model)
    prior = population_prior(model, priors)
    posterior = Posterior(model, prior, problem, chosen, mu)

    pop0 = jnp.asarray(prior.initial(start_model), problem.dtype)
    latent0 = posterior.latent(start_model, b0)
    scale0 = jnp.sqrt(jnp.diagonal(problem.layout.omega(start_model)))
    latent_scale = scale0 if chosen == "centered" else jnp.ones_like(scale0)
    key = jax.random.PRNGKey(seed)
    key, k_pop, k_eta = jax.random.split(key, 3)
    init_params = {
        "pop": pop0 + jitter * jax.random.normal(k_pop, (n_chains, *pop0.shape), pop0.dtype),
        "eta": latent0
        + jitter * latent_scale * jax.random.normal(k_eta, (n_chains, *latent0.shape), pop0.dtype),
    }
    first_chain = jax.tree_util.tree_map(lambda x: x[0], init_params)
    if n_chains == 1:
        init_params = first_chain  # NumPyro takes one chain's values without a chain axis
    check = jax.jit(lambda p: posterior.log_density(p))(first_chain)
    if not np.isfinite(float(check)):
        raise FloatingPointError(
            "the log posterior is not finite at the starting values; check the initial "
            "estimates (or fit the model first and pass init=fit_result)"
        )

    kernel = NUTS(
        potential_fn=lambda params: posterior.potential(params),
        dense_mass=[("pop",)] if dense_mass and prior.size else False,
        target_accept_prob=target_accept,
        max_tree_depth=max_tree_depth,
    )
    mcmc = MCMC(
        kernel,
        num_warmup=n_warmup,
        num_samples=n_samples,
        num_chains=n_chains,
        chain_method=chain_method or _default_chain_method(n_chains),
        progress_bar=bool(progress),
    )
    extra = ("diverging", "num_steps", "accept_prob")
    compile_before = _COMPILE_SECONDS[0]
    t0 = time.perf_counter()
    if time_phases:
        mcmc.warmup(key, init_params=init_params, extra_fields=extra, collect_warmup=False)
        warmup_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        mcmc.run(mcmc.post_warmup_state.rng_key, extra_fields=extra)
        sampling_seconds = time.perf_counter() - t1
    else:
        mcmc.run(key, init_params=init_params, extra_fields=extra)
        warmup_seconds = sampling_seconds = float("nan")
    nuts_seconds = time.perf_counter() - t0
    compile_seconds = _COMPILE_SECONDS[0] - compile_before
    draws = mcmc.get_samples(group_by_chain=True)
    stats = mcmc.get_extra_fields(group_by_chain=True)
    return SampleResult(
        posterior=posterior,
        dataset=data,
        pop=np.asarray(draws["pop"]),
        latent=np.asarray(draws["eta"]),
        diverging=np.asarray(stats["diverging"]),
        num_steps=np.asarray(stats["num_steps"]),
        accept_prob=np.asarray(stats["accept_prob"]),
        timings=dict(
            fit=fit_seconds,
            nuts=nuts_seconds,
            compile=compile_seconds,
            warmup=warmup_seconds,
            sampling=sampling_seconds,
        ),
        settings=dict(
            n_chains=n_chains,
            n_warmup=n_warmup,
            n_samples=n_samples,
            seed=seed,
            parameterization=chosen,
            mu_referenced=dict(zip(start_model.eta_names, mu, strict=True)),
            dense_mass=dense_mass,
            target_accept=target_accept,
            max_tree_depth=max_tree_depth,
            jitter=jitter,
            init="fit" if fit is not None else "model",
        ),
    )
