"""The EBE solver (damped Newton) on objectives with known minima: convergence,
warm starts, and a status for every way it can fail (never a silent NaN)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pmx_jax.likelihood import EBEStatus, global_ebe, newton_ebe, positive_definite, prior_starts


def _batched(objective, starts, args, **options):
    return jax.jit(jax.vmap(lambda e: newton_ebe(objective, e, args, **options)))(starts)


def quadratic(eta, center):
    # -2 log density of N(center, diag(0.5, 2)), up to a constant.
    return jnp.sum((eta - center) ** 2 / jnp.array([0.5, 2.0]))


def test_quadratic_converges_in_one_newton_step():
    center = jnp.array([0.3, -1.2])
    result = _batched(quadratic, jnp.zeros((3, 2)) + jnp.arange(3.0)[:, None], center)
    np.testing.assert_allclose(result.eta, np.tile(center, (3, 1)), atol=1e-12)
    assert np.all(result.status == EBEStatus.CONVERGED)
    # warm start evaluation, the Newton step, and the check at the minimum
    assert np.all(result.n_steps <= 3)


def rosenbrock(eta, scale):
    # Non-convex: the Hessian is indefinite away from the valley.
    x, y = eta
    return scale * ((1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2)


def test_non_convex_objective_converges_from_a_saddle_region():
    starts = jnp.array([[-1.2, 1.0], [0.0, 0.0], [2.0, -1.0], [-0.5, 3.0]])
    result = _batched(rosenbrock, starts, 1.0, max_steps=300)
    assert np.all(result.status == EBEStatus.CONVERGED), result.status
    np.testing.assert_allclose(result.eta, np.ones((4, 2)), atol=1e-6)


def test_non_finite_warm_start_restarts_from_zero():
    def objective(eta, _):
        # log of a negative number beyond eta = 5: a "wild" warm start is NaN.
        return jnp.sum((eta - 0.5) ** 2) - jnp.sum(jnp.log(5.0 - eta))

    starts = jnp.array([[7.0], [jnp.nan], [1.0]])
    result = _batched(objective, starts, None)
    assert np.all(result.status == EBEStatus.CONVERGED)
    expected = result.eta[2, 0]
    # The stationarity condition 2 (eta - 0.5) + 1 / (5 - eta) = 0, to the
    # solver's tolerance (Newton decrement 1e-12: gradient about 1e-6).
    assert abs(2 * (expected - 0.5) + 1 / (5 - expected)) < 1e-6
    np.testing.assert_allclose(result.eta[:, 0], expected, atol=1e-7)


def test_objective_not_finite_anywhere_is_reported_with_finite_etas():
    def objective(eta, _):
        return jnp.sum(eta**2) + jnp.inf  # e.g. a proportional error with f = 0

    result = _batched(objective, jnp.array([[0.2, 0.1], [0.0, 0.0]]), None)
    assert np.all(result.status == EBEStatus.NONFINITE)
    assert np.all(np.isfinite(result.eta))
    np.testing.assert_array_equal(result.eta, [[0.2, 0.1], [0.0, 0.0]])


def test_iteration_limit_is_reported():
    result = _batched(rosenbrock, jnp.array([[-1.2, 1.0]]), 1.0, max_steps=3)
    assert int(result.status[0]) == EBEStatus.MAX_STEPS
    assert np.all(np.isfinite(result.eta))


def test_no_random_effects():
    result = newton_ebe(lambda eta, _: jnp.asarray(1.5), jnp.zeros(0), None)
    assert int(result.status) == EBEStatus.CONVERGED
    assert result.eta.shape == (0,)


@pytest.mark.parametrize("values", [[2.0, 1.0], [-3.0, 0.5], [0.0, 0.0]])
def test_positive_definite_modification(values):
    rotation = jnp.array([[0.6, 0.8], [-0.8, 0.6]])
    hessian = rotation @ jnp.diag(jnp.array(values)) @ rotation.T
    fixed = positive_definite(hessian)
    eig = np.linalg.eigvalsh(np.asarray(fixed))
    assert np.all(eig > 0)
    np.testing.assert_allclose(sorted(eig), sorted(np.maximum(np.abs(values), 1e-8)), atol=1e-12)


def _decay(eta, args):
    # -2 log p(y, eta) of a mono-exponential curve with two random effects:
    # nonlinear least squares plus a normal prior.
    t, y = args
    f = jnp.exp(1.0 + eta[0]) * jnp.exp(-jnp.exp(eta[1] - 1.0) * t)
    return jnp.sum((y - f) ** 2) / 0.04 + jnp.sum(eta**2) / 0.3


def _decay_scoring(eta, args):
    # Gauss-Newton: exact value and gradient, J^T J in place of the Hessian.
    t, _ = args

    def f(e):
        return jnp.exp(1.0 + e[0]) * jnp.exp(-jnp.exp(e[1] - 1.0) * t)

    jac = jax.jacfwd(f)(eta)
    value, grad = jax.value_and_grad(_decay)(eta, args)
    return value, grad, 2.0 * (jac.T @ jac / 0.04 + jnp.eye(2) / 0.3)


def test_scoring_stage_reaches_the_exact_mode_and_returns_the_exact_hessian():
    t = jnp.linspace(0.5, 12.0, 8)
    truth = jnp.array([0.4, -0.5])
    clean = jnp.exp(1.0 + truth[0]) * jnp.exp(-jnp.exp(truth[1] - 1.0) * t)
    y = clean + 0.6 * jnp.sin(3.0 * t)  # residuals: Gauss-Newton is not Newton here
    starts = jnp.array([[0.0, 0.0], [1.0, 1.0], [-0.5, 0.8]])
    exact = _batched(_decay, starts, (t, y))
    scored = _batched(_decay, starts, (t, y), scoring=_decay_scoring)
    assert np.all(exact.status == EBEStatus.CONVERGED)
    assert np.all(scored.status == EBEStatus.CONVERGED)
    np.testing.assert_allclose(scored.eta, exact.eta, atol=1e-9)
    # Stationary: the gradient at the mode vanishes.
    grads = jax.vmap(jax.grad(_decay), in_axes=(0, None))(scored.eta, (t, y))
    assert np.max(np.abs(grads)) < 1e-6
    # The Hessian handed to the implicit derivative is the exact one, not J^T J.
    hessians = jax.vmap(jax.hessian(_decay), in_axes=(0, None))(scored.eta, (t, y))
    np.testing.assert_allclose(scored.hessian, hessians, rtol=1e-5)
    gauss_newton = jax.vmap(_decay_scoring, in_axes=(0, None))(scored.eta, (t, y))[2]
    assert np.max(np.abs(gauss_newton - hessians)) > 1e-2 * np.max(np.abs(hessians))


def test_a_failed_scoring_stage_is_finished_by_the_exact_search():
    # A useless curvature (100 times too large): the scoring stage runs out of
    # steps and the exact Newton search still ends at the mode.
    t = jnp.linspace(0.5, 12.0, 8)
    y = jnp.exp(1.2) * jnp.exp(-jnp.exp(-1.3) * t)

    def poor(eta, args):
        value, grad, hess = _decay_scoring(eta, args)
        return value, grad, 100.0 * hess

    exact = _batched(_decay, jnp.zeros((1, 2)), (t, y))
    scored = _batched(_decay, jnp.zeros((1, 2)), (t, y), scoring=poor, max_steps=8)
    assert int(scored.status[0]) == EBEStatus.CONVERGED
    np.testing.assert_allclose(scored.eta, exact.eta, atol=1e-9)


# -- saddles and several modes ----------------------------------------------------------


def double_well(eta, tilt):
    # Minima near b0 = -1 and b0 = +1 (the one at -1 lower by about 2 * tilt),
    # a saddle at b0 = 0; b1 is a plain quadratic.
    b0, b1 = eta
    return (b0**2 - 1.0) ** 2 + tilt * b0 + b1**2


def test_a_stationary_saddle_is_left_along_its_negative_curvature():
    # From b0 = 0 the gradient in b0 is exactly 0 (no tilt): Newton alone would
    # stop at the saddle (0, 0), where the Hessian has eigenvalue -4.
    result = newton_ebe(double_well, jnp.array([0.0, 0.5]), 0.0, try_zero=False)
    assert int(result.status) == EBEStatus.CONVERGED
    assert abs(abs(float(result.eta[0])) - 1.0) < 1e-8
    assert abs(float(result.eta[1])) < 1e-8
    assert np.all(np.linalg.eigvalsh(np.asarray(result.hessian)) > 0)


def test_global_search_keeps_the_lowest_mode_of_all_starts():
    tilt = 0.3
    # A local search from 0.9 ends in the higher well (b0 near +1).
    local = newton_ebe(double_well, jnp.array([0.9, 0.0]), tilt, try_zero=False)
    assert float(local.eta[0]) > 0
    starts = jnp.array([[0.9, 0.0], [0.5, 1.0], [-2.0, 0.0]])
    found, index = global_ebe(double_well, starts, tilt)
    assert int(index) == 2 and float(found.eta[0]) < 0
    # The minimum of (b^2 - 1)^2 + 0.3 b: 4 b^3 - 4 b + 0.3 = 0 near -1.
    roots = np.roots([4.0, 0.0, -4.0, tilt])
    np.testing.assert_allclose(float(found.eta[0]), roots.real.min(), atol=1e-9)
    assert float(found.objective) < float(local.objective) - 0.5
    # Ties go to the earlier start: a deterministic choice.
    same, first = global_ebe(double_well, jnp.array([[-2.0, 0.0], [-1.5, 0.0]]), tilt)
    assert int(first) == 0


def test_prior_starts_lie_two_sds_along_the_principal_axes():
    omega = jnp.array([[4.0, 0.0], [0.0, 1.0]])
    starts = np.asarray(prior_starts(omega, jnp.zeros((0, 0)), 0))
    assert starts.shape == (5, 2)
    np.testing.assert_array_equal(starts[0], [0.0, 0.0])
    # each principal axis, both signs (eigenvector signs are arbitrary)
    expected = {(0.0, 2.0), (4.0, 0.0), (0.0, -2.0), (-4.0, 0.0)}
    assert {tuple(np.round(r, 12) + 0.0) for r in starts[1:]} == expected
    # IOV: one start per IOV axis moves the etas of every occasion together.
    iov = np.asarray(prior_starts(omega, jnp.array([[0.25]]), 3))
    assert iov.shape == (7, 2 + 3)
    np.testing.assert_allclose(iov[3], [0.0, 0.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(iov[6], [0.0, 0.0, -1.0, -1.0, -1.0])


# -- the trust region in prior SDs ------------------------------------------------------


def _plateau(eta, omega):
    # A huge objective at the start (softplus(5) * 1e6) whose curvature there
    # is tiny: the plain Newton step is about -150 (over 200 prior SDs), onto
    # the plateau where the data term vanishes. The mode is near -12.
    return 1e6 * jax.nn.softplus(eta[0]) + eta[0] ** 2 / omega


def test_steps_stay_within_the_trust_region_and_reach_the_mode():
    omega = 0.5
    metric = jnp.array([[1.0 / omega]])
    start = jnp.array([5.0])
    grid = np.linspace(-40.0, 10.0, 500_001)
    values = np.logaddexp(0.0, grid) * 1e6 + grid**2 / omega
    mode = grid[np.argmin(values)]
    plain_first = newton_ebe(_plateau, start, omega, try_zero=False, max_steps=2)
    # Without the trust region the first step lands far out (the failure mode).
    assert float(plain_first.eta[0]) < -100.0
    # With it, the first accepted step is at most 3 prior SDs long ...
    first = newton_ebe(_plateau, start, omega, try_zero=False, max_steps=2, metric=metric)
    assert abs(float(first.eta[0] - start[0])) <= 3.0 * np.sqrt(omega) + 1e-12
    assert float(first.eta[0]) < float(start[0])
    # ... and the search converges to the mode, with the exact Hessian there.
    found = newton_ebe(_plateau, start, omega, try_zero=False, metric=metric)
    assert int(found.status) == EBEStatus.CONVERGED
    assert abs(float(found.eta[0]) - mode) < 1e-4
    np.testing.assert_allclose(found.hessian, jax.hessian(_plateau)(found.eta, omega), rtol=1e-6)


# -- the queue of a batched search -------------------------------------------------------


def _uneven(eta, args):
    # Subjects of very different difficulty: exponential slopes of rate c,
    # one that is not finite anywhere (c = nan), one that cannot converge
    # within the step limit given below.
    c, y = args
    return jnp.sum(jnp.exp(c * eta) - c * y * eta) + 0.5 * eta @ eta


@pytest.fixture
def small_queue(monkeypatch):
    """Batched searches of more than 16 subjects go through a queue of 4 slots."""
    from pmx_jax.likelihood import _ebe

    monkeypatch.setattr(_ebe, "QUEUE_MIN", 16)
    monkeypatch.setattr(_ebe, "QUEUE_FRACTION", 4)
    jax.clear_caches()
    yield
    jax.clear_caches()


def _uneven_subjects(n=40, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.uniform(0.5, 6.0, (n, 2))
    c[3] = np.nan
    y = rng.uniform(0.1, 5.0, (n, 2))
    eta0 = rng.normal(0.0, 0.3, (n, 2))
    eta0[::6] = 4.0  # far out on the exponential slopes: many more steps
    eta0[5] = [np.inf, 0.0]  # a non-finite start: from zero
    return jnp.asarray(eta0), jnp.asarray(c), jnp.asarray(y)


def test_a_queued_batch_gives_each_subject_its_own_search(small_queue):
    eta0, c, y = _uneven_subjects()
    metric = jnp.array([[2.0, 0.3], [0.3, 1.0]])

    def search(e, cc, yy, steps):
        return newton_ebe(_uneven, e, (cc, yy), max_steps=steps, metric=metric, try_zero=False)

    steps = jnp.full(eta0.shape[0], 100).at[7].set(2)
    queued = jax.jit(jax.vmap(search))(eta0, c, y, steps)
    # One subject at a time (no vmap, so no queue).
    one = jax.jit(search)
    alone = [one(eta0[i], c[i], y[i], steps[i]) for i in range(eta0.shape[0])]
    for name in ("eta", "objective", "gradient", "hessian"):
        expected = np.stack([np.asarray(getattr(r, name)) for r in alone])
        np.testing.assert_allclose(getattr(queued, name), expected, rtol=1e-12, atol=1e-12)
    for name in ("status", "n_steps"):
        expected = np.stack([np.asarray(getattr(r, name)) for r in alone])
        np.testing.assert_array_equal(getattr(queued, name), expected)
    # The batch is uneven (what the queue is for), and every outcome is there.
    assert np.asarray(queued.n_steps).max() >= 2 * np.median(queued.n_steps)
    assert int(queued.status[3]) == EBEStatus.NONFINITE
    assert int(queued.status[7]) == EBEStatus.MAX_STEPS
    assert np.all(np.asarray(queued.status)[[0, 1, 2, 4, 5, 6]] == EBEStatus.CONVERGED)


def test_a_queued_global_search_over_starts_and_subjects(small_queue):
    # vmap over subjects of a global search (vmap over starts inside): both
    # batch axes, arguments shared by all subjects (the tilt) and not.
    eta0, c, y = _uneven_subjects(24, seed=1)
    starts = jnp.array([[0.0, 0.0], [1.5, 0.0], [-1.5, 0.0], [0.0, 1.5], [0.0, -1.5]])

    def one(cc, yy):
        return global_ebe(_uneven, starts, (cc, yy))

    found, index = jax.jit(jax.vmap(one))(c, y)
    for i in (0, 3, 11, 23):
        expected, expected_index = one(c[i], y[i])
        assert int(index[i]) == int(expected_index)
        np.testing.assert_allclose(found.eta[i], expected.eta, rtol=1e-12, atol=1e-12)


def test_the_population_objective_and_its_gradient_do_not_depend_on_the_queue(monkeypatch):
    """The FOCEI OFV, its gradient and the EBEs on theophylline (12 subjects,
    local EBE search) with the subjects' searches queued equal those of a
    plain batch (the global search's queue over starts: the test above)."""
    import pmx_jax as pmx
    from pmx_jax.likelihood import _ebe

    data = pmx.datasets.load("theophylline")
    model = pmx.library.Theophylline()

    def evaluate():
        jax.clear_caches()

        def ofv(theta):
            result = pmx.ofv(model.with_values(tcl=theta), data, "focei", ebe_search="local")
            return result.ofv, result.ebes

        (value, ebes), grad = jax.value_and_grad(ofv, has_aux=True)(jnp.asarray(1.0))
        return float(value), float(grad), np.asarray(ebes)

    plain = evaluate()
    monkeypatch.setattr(_ebe, "QUEUE_MIN", 4)
    monkeypatch.setattr(_ebe, "QUEUE_FRACTION", 4)
    traced = []
    queue = _ebe._queued_search

    def counted(*args):
        traced.append(args[2:])
        return queue(*args)

    monkeypatch.setattr(_ebe, "_queued_search", counted)
    queued = evaluate()
    # the subjects (12, padded to the bucket) in a quarter of the slots
    assert any(n >= 12 and slots == -(-n // 4) for n, slots in traced)
    jax.clear_caches()
    np.testing.assert_allclose(queued[0], plain[0], rtol=1e-12)
    np.testing.assert_allclose(queued[1], plain[1], rtol=1e-9)
    np.testing.assert_allclose(queued[2], plain[2], atol=1e-10)


# -- a search that reaches a known mode --------------------------------------------------


def test_a_search_stops_in_the_basin_of_a_known_mode():
    tilt = 0.3
    start = jnp.array([-2.0, 1.5])
    full = newton_ebe(double_well, start, tilt, try_zero=False)
    assert int(full.status) == EBEStatus.CONVERGED and float(full.eta[0]) < 0
    known = (full.eta + 1e-9, full.objective)
    merged = newton_ebe(double_well, start, tilt, try_zero=False, known=known)
    # the known mode and its objective, fewer evaluations
    assert int(merged.status) == EBEStatus.CONVERGED
    np.testing.assert_array_equal(merged.eta, known[0])
    assert float(merged.objective) == float(known[1])
    assert int(merged.n_steps) < int(full.n_steps)
    # Where the last point evaluated was: within the merge tolerance of the mode.
    assert float(merged.gradient @ jnp.linalg.solve(merged.hessian, merged.gradient)) <= 0.1
    # No known mode (an infinite objective): the full search, step for step.
    none = newton_ebe(double_well, start, tilt, try_zero=False, known=(known[0], jnp.inf))
    np.testing.assert_array_equal(none.eta, full.eta)
    assert int(none.n_steps) == int(full.n_steps)


def test_a_search_in_another_basin_ignores_the_known_mode():
    # The known mode is the lower well (b0 < 0); a search from 0.9 stays in
    # the upper well and must end at that well's own mode.
    tilt = 0.3
    lower = newton_ebe(double_well, jnp.array([-2.0, 0.0]), tilt, try_zero=False)
    upper = newton_ebe(double_well, jnp.array([0.9, 0.0]), tilt, try_zero=False)
    assert float(upper.eta[0]) > 0 > float(lower.eta[0])
    found = newton_ebe(
        double_well, jnp.array([0.9, 0.0]), tilt, try_zero=False, known=(lower.eta, lower.objective)
    )
    np.testing.assert_allclose(found.eta, upper.eta, atol=1e-12)
    assert int(found.n_steps) == int(upper.n_steps)
    # A known mode at the same place but with a much lower objective (not
    # this objective's mode): no merge either.
    fake = newton_ebe(
        double_well, jnp.array([0.9, 0.0]), tilt, try_zero=False,
        known=(upper.eta, upper.objective - 1.0),
    )  # fmt: skip
    np.testing.assert_allclose(fake.eta, upper.eta, atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_small_symmetric_eigendecomposition_matches_lapack(n):
    """The Jacobi eigensolver of the Newton steps (sizes up to 6) against
    LAPACK: eigenvalues spanning 1e-12 to 1e8 in size, either sign, with exact
    and near-exact pairs; ascending, orthonormal, and reconstructing the
    matrix, all within 3e-14 of its largest eigenvalue."""
    from pmx_jax.likelihood._ebe import symmetric_eigh

    rng = np.random.default_rng(n)
    m = 4000
    q, _ = np.linalg.qr(rng.standard_normal((m, n, n)))
    values = 10 ** rng.uniform(-12, 8, (m, n)) * rng.choice([-1.0, 1.0], (m, n))
    if n > 1:
        values[: m // 4, 1] = values[: m // 4, 0]
        values[m // 4 : m // 2, 1] = values[m // 4 : m // 2, 0] * (1 + 1e-9)
    matrices = np.einsum("mij,mj,mkj->mik", q, values, q)
    matrices = 0.5 * (matrices + np.swapaxes(matrices, 1, 2))
    found, vectors = (np.asarray(x) for x in jax.jit(jax.vmap(symmetric_eigh))(matrices))
    scale = np.abs(values).max(axis=1)
    assert np.all(np.diff(found, axis=1) >= 0)
    lapack = np.linalg.eigvalsh(matrices)
    assert np.max(np.abs(found - lapack).max(axis=1) / scale) < 3e-14
    rebuilt = np.einsum("mij,mj,mkj->mik", vectors, found, vectors)
    assert np.max(np.abs(rebuilt - matrices).max(axis=(1, 2)) / scale) < 3e-14
    identity = np.einsum("mji,mjk->mik", vectors, vectors)
    assert np.max(np.abs(identity - np.eye(n))) < 3e-14
