"""The result of :func:`pmx_jax.sample`: draws, summary, random effects,
posterior predictive checks."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..data._dataset import Dataset
from ..likelihood import record_frame_index, subject_predictions
from ..model import natural_names, natural_vector
from ..model._model import Model
from ._diagnostics import ess_bulk, ess_tail, rhat
from ._posterior import Posterior

_QUANTILES = (0.05, 0.5, 0.95)


@eqx.filter_jit
def _natural_draws(posterior: Posterior, pop: jax.Array) -> jax.Array:
    return jax.vmap(lambda u: natural_vector(posterior.model(u)))(pop)


@eqx.filter_jit
def _random_effect_draws(posterior: Posterior, pop: jax.Array, latent: jax.Array) -> jax.Array:
    return jax.vmap(lambda u, z: posterior.random_effects(posterior.model(u), z))(pop, latent)


@eqx.filter_jit
def _predictive(posterior: Posterior, pop: jax.Array, latent: jax.Array, key: jax.Array):
    """IPRED and a simulated DV at every record of every subject, per draw."""
    source = posterior.problem.source
    layout = posterior.layout

    def one_draw(u, z, k):
        model = posterior.model(u)
        b = posterior.random_effects(model, z)

        def one_subject(data, b_i, k_i):
            eta, iov = layout.split(b_i)
            result = subject_predictions(model, data, eta, iov)
            subject = data.records
            keys = jax.random.split(k_i, subject.time.shape[0])
            dv = jax.vmap(model.record_sample)(keys, result.amounts, result.params, subject.dvid)
            return result.prediction, dv

        keys = jax.random.split(k, b.shape[0])
        return jax.vmap(one_subject)(source.subject_data(), b, keys)

    keys = jax.random.split(key, pop.shape[0])
    return jax.lax.map(lambda a: one_draw(*a), (pop, latent, keys))


class SampleResult:
    """Posterior draws of a population model (from :func:`pmx_jax.sample`).

    Attributes:
        pop: the sampler's unconstrained population draws ``(chains, draws, p)``.
        latent: the sampler's per-subject latent draws ``(chains, draws, n, n_b)``.
        diverging, num_steps, accept_prob: NUTS statistics per draw.
        timings: seconds spent in the starting fit, the warmup (with
            compilation) and the sampling.
        settings: the sampler settings, including the parametrisation chosen.
    """

    def __init__(
        self,
        *,
        posterior: Posterior,
        dataset: Dataset,
        pop: np.ndarray,
        latent: np.ndarray,
        diverging: np.ndarray,
        num_steps: np.ndarray,
        accept_prob: np.ndarray,
        timings: dict[str, float],
        settings: dict[str, Any],
    ) -> None:
        self.posterior = posterior
        self.dataset = dataset
        self.pop = pop
        self.latent = latent
        self.diverging = diverging
        self.num_steps = num_steps
        self.accept_prob = accept_prob
        self.timings = timings
        self.settings = settings
        self.names = list(natural_names(posterior.template))
        chains, draws = pop.shape[:2]
        flat = jnp.asarray(pop.reshape(chains * draws, -1))
        self._values = np.asarray(_natural_draws(posterior, flat)).reshape(chains, draws, -1)
        self._summary: pd.DataFrame | None = None

    # -- shapes --------------------------------------------------------------------
    @property
    def n_chains(self) -> int:
        return self.pop.shape[0]

    @property
    def n_draws(self) -> int:
        return self.pop.shape[1]

    @property
    def n_divergent(self) -> int:
        return int(np.sum(self.diverging))

    @property
    def model(self) -> Model:
        """The model at the posterior mean of the sampler's unconstrained
        population vector, mapped back to the parameters (close to the
        posterior median of each parameter when its posterior is symmetric on
        that scale; use :meth:`summary` for posterior means)."""
        return self.posterior.model(jnp.asarray(self.pop.mean(axis=(0, 1))))

    # -- draws and summaries -------------------------------------------------------
    def draws(self) -> pd.DataFrame:
        """One row per draw: ``chain``, ``draw`` and every estimated parameter on
        NONMEM's scale (THETA values, OMEGA variances and covariances)."""
        chains, draws, p = self._values.shape
        frame = pd.DataFrame(self._values.reshape(chains * draws, p), columns=self.names)
        frame.insert(0, "draw", np.tile(np.arange(draws), chains))
        frame.insert(0, "chain", np.repeat(np.arange(chains), draws))
        return frame

    def parameter(self, name: str) -> np.ndarray:
        """Draws of one parameter, ``(chains, draws)``."""
        if name not in self.names:
            raise KeyError(f"no parameter {name!r}; parameters are {self.names}")
        return self._values[:, :, self.names.index(name)]

    def summary(self) -> pd.DataFrame:
        """Posterior mean, SD, 5/50/95% quantiles, rank-normalised split R-hat,
        bulk and tail ESS of every estimated parameter (index: parameter)."""
        if self._summary is None:
            rows = []
            for k, name in enumerate(self.names):
                x = self._values[:, :, k]
                q = np.quantile(x, _QUANTILES)
                rows.append(
                    dict(
                        parameter=name,
                        mean=x.mean(),
                        sd=x.std(ddof=1),
                        q5=q[0],
                        q50=q[1],
                        q95=q[2],
                        rhat=rhat(x),
                        ess_bulk=ess_bulk(x),
                        ess_tail=ess_tail(x),
                    )
                )
            self._summary = pd.DataFrame(rows).set_index("parameter")
        return self._summary.copy()

    def random_effects(self) -> np.ndarray:
        """Draws of every subject's random effects ``(chains, draws, n, n_b)``
        (IIV etas, then IOV etas by occasion)."""
        c, d = self.pop.shape[:2]
        pop = jnp.asarray(self.pop.reshape(c * d, -1))
        latent = jnp.asarray(self.latent.reshape(c * d, *self.latent.shape[2:]))
        b = np.asarray(_random_effect_draws(self.posterior, pop, latent))
        return b.reshape(c, d, *b.shape[1:])

    def etas(self) -> pd.DataFrame:
        """Posterior mean and SD of each subject's IIV etas (columns
        ``<eta>`` and ``<eta>_sd``, one row per ID): the Bayesian EBEs."""
        n_eta = self.posterior.template.n_eta
        b = self.random_effects()[..., :n_eta]
        mean = b.mean(axis=(0, 1))
        sd = b.std(axis=(0, 1), ddof=1)
        names = self.posterior.template.eta_names
        frame = pd.DataFrame({"ID": list(self.dataset.ids)})
        for k, name in enumerate(names):
            frame[name] = mean[:, k]
            frame[f"{name}_sd"] = sd[:, k]
        return frame

    def posterior_predictive(self, n_draws: int = 200, *, seed: int = 0) -> pd.DataFrame:
        """Posterior predictive check on the data's own design.

        For ``n_draws`` posterior draws (random, without replacement), simulate
        every observation from the subject's own drawn random effects and the
        residual error model.  Returns one row per observation record with ID,
        TIME, DV, the simulated 5/50/95% quantiles (``sim_q5``...), the observed
        value's predictive percentile ``p_value`` (fraction of simulations below
        DV) and ``row``; the simulations themselves are in
        ``frame.attrs["simulated"]`` ``(n_draws, n_rows)``.
        """
        rng = np.random.default_rng(seed)
        total = self.n_chains * self.n_draws
        pick = rng.choice(total, size=min(n_draws, total), replace=False)
        pop = jnp.asarray(self.pop.reshape(total, -1)[pick])
        latent = jnp.asarray(self.latent.reshape(total, *self.latent.shape[2:])[pick])
        _, dv = _predictive(self.posterior, pop, latent, jax.random.PRNGKey(seed))
        dv = np.asarray(dv)
        subjects = self.posterior.problem.source.subjects
        sub, rec = record_frame_index(subjects)
        obs = np.asarray(subjects.is_obs)[sub, rec]
        sub, rec = sub[obs], rec[obs]
        rows = np.asarray(subjects.row)[sub, rec]
        positions = self.dataset.record_positions(rows)
        records = self.dataset.records
        simulated = dv[:, sub, rec]
        observed = records["dv"].to_numpy()[positions]
        q = np.quantile(simulated, _QUANTILES, axis=0)
        frame = pd.DataFrame(
            {
                "ID": records["id"].to_numpy()[positions],
                "TIME": records["time"].to_numpy()[positions],
                "DV": observed,
                "sim_q5": q[0],
                "sim_q50": q[1],
                "sim_q95": q[2],
                "p_value": np.mean(simulated < observed[None, :], axis=0),
                "row": rows,
            }
        )
        frame.attrs["simulated"] = simulated
        return frame

    def to_arviz(self):
        """An ``arviz.InferenceData`` (requires ArviZ, which pmx_jax does not
        depend on): posterior parameters by name, random effects, NUTS statistics."""
        try:
            import arviz as az
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("to_arviz() needs ArviZ: pip install arviz") from e
        posterior = {name: self._values[:, :, k] for k, name in enumerate(self.names)}
        posterior["eta"] = self.random_effects()[..., : self.posterior.template.n_eta]
        stats = dict(
            diverging=self.diverging, n_steps=self.num_steps, acceptance_rate=self.accept_prob
        )
        return az.from_dict(
            posterior=posterior,
            sample_stats=stats,
            coords={
                "ID": list(self.dataset.ids),
                "eta_name": list(self.posterior.template.eta_names),
            },
            dims={"eta": ["ID", "eta_name"]},
        )

    # -- report ---------------------------------------------------------------------
    def __str__(self) -> str:
        s = self.settings
        t = self.timings
        lines = [
            f"NUTS: {self.n_chains} chains x ({s['n_warmup']} warmup + {s['n_samples']} draws), "
            f"{s['parameterization']} random effects, start: {s['init']}",
            f"divergences {self.n_divergent}, mean tree steps {self.num_steps.mean():.1f}, "
            f"time: starting fit {t['fit']:.1f} s, NUTS {t['nuts']:.1f} s "
            f"(compilation {t['compile']:.1f} s)",
            "",
        ]
        with pd.option_context("display.width", 120, "display.precision", 4):
            lines.append(self.summary().to_string())
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"SampleResult({self.n_chains} chains x {self.n_draws} draws, "
            f"{len(self.names)} parameters, {self.n_divergent} divergences)"
        )
