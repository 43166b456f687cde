"""Named views of eta, covariate and amount vectors."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import pytest  # noqa: E402

import pmx_jax.model as pmx  # noqa: E402
from pmx_jax.model._errors import missing_covariate_error_class  # noqa: E402


def test_eta_view():
    eta = pmx.EtaView(jnp.array([0.1, -0.2]), ("cl", "v"))
    assert float(eta.cl) == 0.1 and float(eta["v"]) == -0.2 and float(eta[1]) == -0.2
    assert "cl" in eta and list(eta) == ["cl", "v"] and len(eta) == 2
    assert set(eta.as_dict()) == {"cl", "v"}
    with pytest.raises(pmx.UnknownEtaError, match=r"'ka'.*\('cl', 'v'\)"):
        _ = eta.ka
    with pytest.raises(AttributeError):
        eta["ka"]
    with pytest.raises(AttributeError):
        eta.cl = 1.0
    assert not hasattr(eta, "ka")


def test_covariate_view_and_missing_covariate():
    cov = pmx.CovariateView(jnp.array([70.0, 1.0]), ("WT", "SEX"))
    assert float(cov.WT) == 70.0 and float(cov.wt) == 70.0  # case-insensitive fallback
    with pytest.raises(missing_covariate_error_class(), match=r"'CRCL'.*\('WT', 'SEX'\).*columns="):
        _ = cov.CRCL
    assert issubclass(missing_covariate_error_class(), ValueError)


def test_amounts_view():
    amounts = pmx.AmountsView(jnp.array([5.0, 2.0]), ("depot", "central"))
    assert float(amounts.central) == 2.0 and float(amounts[0]) == 5.0
    with pytest.raises(pmx.CompartmentNameError, match=r"'peripheral'.*\('depot', 'central'\)"):
        _ = amounts.peripheral


def test_views_reject_mismatched_vectors():
    with pytest.raises(ValueError, match="2 names"):
        pmx.EtaView(jnp.zeros(3), ("cl", "v"))


def test_views_work_traced():
    @jax.jit
    def f(etas, covs):
        eta = pmx.EtaView(etas, ("cl", "v"))
        cov = pmx.CovariateView(covs, ("WT",))
        return jnp.exp(eta.cl) * (cov.WT / 70.0) ** 0.75 + eta.v

    xs = jax.vmap(f, in_axes=(0, None))(jnp.array([[0.0, 1.0], [0.1, 0.0]]), jnp.array([70.0]))
    assert xs.shape == (2,) and float(xs[0]) == pytest.approx(2.0)
    g = jax.grad(f)(jnp.array([0.0, 1.0]), jnp.array([140.0]))
    assert float(g[0]) == pytest.approx(2.0**0.75) and float(g[1]) == 1.0
