"""Writing control streams (pmx_jax.nonmem.write_model): the stream read back
by read_model is the same model.

The round trips compare FOCEI objective functions of the pmx model on its
dataset and of the model read back on the data file written beside the
stream, to 1e-8 absolute.  Both evaluate the same operations in the same order
(the abbreviated code is translated from the model's jaxpr, constants are
written with round-trip precision), so the closed forms agree to rounding
(measured: below 1e-13); the ODE model to 1e-8 (measured 1e-10): the solver's
step-size control also sees the sensitivities of every $PK variable the reader
passes to $DES, so its steps differ at the tolerance (rtol 1e-8) level.
Translation itself is checked without fitting: individual parameters,
predictions and variances of model and read-back model at random etas,
covariates and amounts agree to rounding.
"""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import pmx_jax as pmx
import pmx_jax.dynamics
from pmx_jax.library import Phenobarbital, Theophylline
from pmx_jax.nonmem import ExportError, read_model, write_model
from pmx_jax.nonmem._control import build, parse_control_stream
from pmx_jax.nonmem._write import format_number

OFV_TOLERANCE = 1e-8


def ofv(model, data):
    return float(pmx.ofv(model, data, "focei").ofv)


def round_trip(tmp_path, model, data, name="run1.mod", **options):
    """(OFV of the pmx model, OFV of the model read back, the stream's text)."""
    path = write_model(model, tmp_path / name, data, **options)
    read, read_data, _ = read_model(path)
    assert (read_data.n_subjects, read_data.n_observations) == (
        data.n_subjects,
        data.n_observations,
    )
    return ofv(model, data), ofv(read, read_data), path.read_text()


def records(text, name):
    """The lines of record $<name> (up to the next record)."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"${name}"))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("$")), len(lines))
    return [ln.strip() for ln in lines[start:end]]


# -- models -------------------------------------------------------------------------


class TwoCompartmentBlock(pmx.Model):
    """ADVAN4: allometric weight effects, a BLOCK(2) OMEGA on CL and V, a fixed
    OMEGA on KA, a combined (variances added) error."""

    tka: pmx.Theta = pmx.theta(0.45)
    tcl: pmx.Theta = pmx.theta(1.0)
    tv: pmx.Theta = pmx.theta(3.0)
    tq: pmx.Theta = pmx.theta(0.5)
    tvp: pmx.Theta = pmx.theta(3.5)
    add_sd: pmx.Theta = pmx.theta(0.3, lower=0.0)
    prop_cv: pmx.Theta = pmx.theta(0.1, lower=0.0, upper=1.0)
    iiv: pmx.Omega = pmx.omega_block(("cl", "v"), [0.3, 0.05, 0.1])
    iiv_ka: pmx.Omega = pmx.omega(ka=0.6, fixed=True)
    dynamics = pmx.pk.TwoCompartmentOral()

    def individual(self, eta, cov):
        size = cov.WT / 70.0
        return dict(
            ka=jnp.exp(self.tka + eta.ka),
            cl=jnp.exp(self.tcl + eta.cl) * size**0.75,
            v=jnp.exp(self.tv + eta.v) * size,
            q=jnp.exp(self.tq) * size**0.75,
            vp=jnp.exp(self.tvp) * size,
        )

    def observe(self, amounts, p):
        return pmx.Combined2(amounts.central / p["v"], self.add_sd, self.prop_cv)


class PhenobarbitalTwoCompartmentLog(pmx.Model):
    """ADVAN3 on phenobarbital with a log-scale (exponential) error."""

    th_cl: pmx.Theta = pmx.theta(0.0047, lower=0.0)
    th_v: pmx.Theta = pmx.theta(0.9, lower=0.0)
    th_q: pmx.Theta = pmx.theta(0.01, lower=0.0)
    th_vp: pmx.Theta = pmx.theta(0.2, lower=0.0)
    th_apgar: pmx.Theta = pmx.theta(0.1, lower=-0.99)
    log_sd: pmx.Theta = pmx.theta(0.15, lower=0.0)
    iiv: pmx.Omega = pmx.omega(cl=0.03, v=0.03)
    dynamics = pmx.pk.TwoCompartment()

    def individual(self, eta, cov):
        low_apgar = cov.APGR < 5
        v = self.th_v * cov.WT * jnp.where(low_apgar, 1.0 + self.th_apgar, 1.0)
        return dict(
            cl=self.th_cl * cov.WT * jnp.exp(eta.cl),
            v=v * jnp.exp(eta.v),
            q=self.th_q * cov.WT,
            vp=self.th_vp * cov.WT,
        )

    def observe(self, amounts, p):
        return pmx.Exponential(amounts.central / p["v"], self.log_sd)


class MichaelisMenten(pmx.Model):
    """ADVAN13: first-order absorption, Michaelis-Menten elimination ($DES)."""

    tka: pmx.Theta = pmx.theta(0.45)
    tvm: pmx.Theta = pmx.theta(3.7)
    tkm: pmx.Theta = pmx.theta(2.3)
    tv: pmx.Theta = pmx.theta(3.45)
    add_sd: pmx.Theta = pmx.theta(0.7, lower=0.0)
    iiv: pmx.Omega = pmx.omega(ka=0.6, v=0.1)
    dynamics = pmx.pk.OneCompartmentOralMM()

    def individual(self, eta, cov):
        return dict(
            ka=jnp.exp(self.tka + eta.ka),
            vm=jnp.exp(self.tvm),
            km=jnp.exp(self.tkm),
            v=jnp.exp(self.tv + eta.v),
        )

    def observe(self, amounts, p):
        return pmx.Additive(amounts.central / p["v"], self.add_sd)


class SigmoidEmax(pmx.Model):
    """$PRED: a sigmoid Emax model of an exposure covariate, a sex effect
    switched by a compound condition, an additive + proportional (SDs added)
    error."""

    e0: pmx.Theta = pmx.theta(5.0, lower=0.0)
    emax: pmx.Theta = pmx.theta(10.0)
    log_ec50: pmx.Theta = pmx.theta(math.log(3.0))
    hill: pmx.Theta = pmx.theta(1.5, lower=0.5, upper=5.0)
    female: pmx.Theta = pmx.theta(0.9, lower=0.0)
    add_sd: pmx.Theta = pmx.theta(0.5, lower=0.0)
    prop_cv: pmx.Theta = pmx.theta(0.1, lower=0.0)
    iiv: pmx.Omega = pmx.omega(e0=0.1, emax=0.2)
    dynamics = pmx.pk.Pred()

    def individual(self, eta, cov):
        ec50 = jnp.exp(self.log_ec50)
        exposure = jnp.maximum(cov.CONC, 0.0) ** self.hill
        effect = (self.emax + eta.emax) * exposure / (ec50**self.hill + exposure)
        sex = jnp.where((cov.SEX == 1) & (cov.CONC > 0), self.female, 1.0)
        return dict(e0=self.e0 * jnp.exp(eta.e0) * sex, effect=effect)

    def observe(self, amounts, p):
        return pmx.Combined1(p["e0"] + p["effect"], self.add_sd, self.prop_cv)


def emax_data():
    rng = np.random.default_rng(20)
    rows = []
    for i in range(1, 13):
        sex = i % 2
        for t, conc in enumerate((0.0, 1.0, 3.0, 10.0, 30.0)):
            mean = 5.0 + 10.0 * conc**1.5 / (3.0**1.5 + conc**1.5)
            rows.append((i, float(t), conc, sex, mean * (1 + 0.1 * rng.normal()) + rng.normal()))
    return pmx.read_nonmem(pd.DataFrame(rows, columns=["ID", "TIME", "CONC", "SEX", "DV"]))


@pytest.fixture(scope="module")
def theophylline():
    return pmx.datasets.load("theophylline")


@pytest.fixture(scope="module")
def phenobarbital():
    return pmx.datasets.load("phenobarbital")


# -- round trips: the same OFV ----------------------------------------------------------------


def test_theophylline_round_trip(tmp_path, theophylline):
    reference, read_back, text = round_trip(tmp_path, Theophylline(), theophylline)
    assert abs(read_back - reference) < OFV_TOLERANCE
    assert records(text, "SUBROUTINES") == ["$SUBROUTINES ADVAN2 TRANS2"]
    assert records(text, "PK") == [
        "$PK",
        "KA = EXP(THETA(1) + ETA(1))",
        "CL = EXP(THETA(2) + ETA(2))",
        "V = EXP(THETA(3) + ETA(3))",
        "S2 = V",
    ]
    assert records(text, "ERROR")[1:4] == ["IPRED = F", "W = THETA(4)", "Y = IPRED + W*EPS(1)"]


def test_phenobarbital_round_trip(tmp_path, phenobarbital):
    reference, read_back, text = round_trip(tmp_path, Phenobarbital(), phenobarbital)
    assert abs(read_back - reference) < OFV_TOLERANCE
    # jnp.where(cov.APGR < 5, 1.0, 0.0) as an IF; the proportional SD from IPRED
    pk = records(text, "PK")
    assert "IF (APGR.LT.5.0) X1 = 1.0" in pk and "X1 = 0.0" in pk
    assert "W = THETA(4)*IPRED" in records(text, "ERROR")
    assert records(text, "INPUT") == ["$INPUT ID TIME AMT EVID MDV CMT DV WT APGR"]


@pytest.mark.slow  # about 40 s (two FOCEI programs to compile)
def test_two_compartment_block_omega_combined_error_round_trip(tmp_path, theophylline):
    model = TwoCompartmentBlock()
    reference, read_back, text = round_trip(tmp_path, model, theophylline)
    assert abs(read_back - reference) < OFV_TOLERANCE
    assert "$SUBROUTINES ADVAN4 TRANS4" in text
    pk = records(text, "PK")
    assert "V2 = EXP(THETA(3) + ETA(2))*X1" in pk and "V3 = EXP(THETA(5))*X1" in pk
    assert "W = SQRT(THETA(6)**2 + (THETA(7)*IPRED)**2)" in records(text, "ERROR")
    assert records(text, "OMEGA BLOCK") == ["$OMEGA BLOCK(2) ; iiv", "0.3 ; cl", "0.05 0.1 ; v"]


@pytest.mark.slow  # about 25 s
def test_exponential_error_writes_log_dv(tmp_path, phenobarbital):
    model = PhenobarbitalTwoCompartmentLog()
    reference, read_back, text = round_trip(tmp_path, model, phenobarbital, name="run7.mod")
    assert abs(read_back - reference) < OFV_TOLERANCE
    assert "$SUBROUTINES ADVAN3 TRANS4" in text
    assert "Y = LOG(IPRSAFE) + W*EPS(1)" in records(text, "ERROR")
    written = pd.read_csv(tmp_path / "run7.csv", na_values=".")
    observed = written["MDV"] == 0
    np.testing.assert_allclose(
        np.exp(written.loc[observed, "DV"]), phenobarbital.table["DV"][observed.to_numpy()]
    )


def test_pred_round_trip(tmp_path):
    data = emax_data()
    reference, read_back, text = round_trip(tmp_path, SigmoidEmax(), data)
    assert abs(read_back - reference) < OFV_TOLERANCE
    assert "$SUBROUTINES" not in text and "$PK" not in text
    code = records(text, "PRED")
    assert code[1:3] == ["X1 = 1.0", "IF ((SEX.EQ.1.0).AND.(CONC.GT.0.0)) X1 = THETA(5)"]
    assert "W = THETA(6) + THETA(7)*ABS(IPRED)" in code


@pytest.mark.slow  # about 60 s (two ODE FOCEI programs to compile)
def test_ode_round_trip(tmp_path, theophylline):
    model = MichaelisMenten()
    reference, read_back, text = round_trip(tmp_path, model, theophylline)
    assert abs(read_back - reference) < OFV_TOLERANCE
    assert "$SUBROUTINES ADVAN13 TOL=8" in text
    assert "$MODEL COMP=(DEPOT DEFDOSE) COMP=(CENTRAL DEFOBS)" in text
    assert records(text, "DES") == [
        "$DES",
        "X1 = KA*A(1)",
        "DADT(1) = -X1",
        "X2 = A(2)/V",
        "DADT(2) = X1 - VM*X2/(KM + X2)",
    ]


# -- the translation, without fitting ----------------------------------------------------------


class Everything(pmx.Model):
    """Every construct the translator knows, in one $PK and one $ERROR."""

    a: pmx.Theta = pmx.theta(0.3)
    b: pmx.Theta = pmx.theta(1.7, lower=0.0)
    c: pmx.Theta = pmx.theta(-0.4, fixed=True)
    sd: pmx.Theta = pmx.theta(0.2, lower=0.0)
    iiv: pmx.Omega = pmx.omega_block(("x", "y"), [0.2, 0.05, 0.1])
    dynamics = pmx.pk.OneCompartment()

    def individual(self, eta, cov):
        @jax.jit
        def helper(u):  # a nested jit is inlined
            return jnp.log1p(u**2) + jnp.expm1(-(u**2))

        shifted = jnp.stack([eta.x, eta.y, cov.WT / 70])[jnp.array([2, 0])]
        size = shifted[0] ** -2 + jnp.sqrt(jnp.abs(self.c)) * jax.lax.rsqrt(self.b)
        choice = jnp.where(~(cov.SEX > 0) | (cov.WT >= 80), jnp.sin(self.a), jnp.cos(self.a))
        clipped = jnp.clip(cov.WT, 40.0, 90.0) + jnp.sign(eta.x) * jnp.tan(self.c)
        return dict(
            cl=jnp.exp(self.a + shifted[1]) * jax.nn.sigmoid(size) + helper(eta.y),
            v=(self.b * clipped) ** 0.8 * jnp.exp2(choice) + jax.nn.relu(eta.y) + jnp.arctan(1.0),
            tvcl=jnp.float64(cov.SEX == 1) + jnp.mod(cov.WT, 7.0),
        )

    def observe(self, amounts, p):
        return pmx.Proportional(amounts.central / p["v"] * 1000.0, self.sd * p["tvcl"])


def test_translation_computes_what_the_model_computes(tmp_path):
    model = Everything()
    text = write_model(model, tmp_path / "everything.mod").read_text()
    read, _, _ = build(parse_control_stream(text))
    rng = np.random.default_rng(0)
    for _ in range(20):
        eta = rng.normal(size=2)
        weight, sex = rng.uniform(30, 100), float(rng.integers(0, 2))
        ours = model.individual_parameters(eta, [weight, sex], ("WT", "SEX"))
        theirs = read.individual_parameters(eta, [sex, weight], ("SEX", "WT"))
        for key in ("cl", "v", "tvcl"):
            np.testing.assert_allclose(theirs[key.upper()], ours[key], rtol=1e-14, err_msg=key)
        amounts = rng.uniform(0, 100, size=1)
        for method in ("record_prediction", "record_variance"):
            np.testing.assert_allclose(
                getattr(read, method)(amounts, theirs),
                getattr(model, method)(amounts, ours),
                rtol=1e-14,
            )


def test_every_library_ode_translates_exactly_or_is_refused(tmp_path):
    """The $DES of the library's ODEs gives the right-hand side pmx computes;
    those with baselines (initial amounts) are refused."""
    exported = refused = 0
    for name in dir(pmx_jax.dynamics):
        dynamics_class = getattr(pmx_jax.dynamics, name)
        if not (isinstance(dynamics_class, type) and issubclass(dynamics_class, pmx.AbstractODE)):
            continue
        if dynamics_class is pmx.AbstractODE:
            continue
        try:
            dynamics = dynamics_class()
        except TypeError:  # needs a setting (e.g. the number of transit compartments)
            continue
        keys = _parameters_read(dynamics)
        model = _model_on(dynamics, keys)
        try:
            text = write_model(model, tmp_path / f"{name}.mod").read_text()
        except ExportError as e:
            assert re.search(r"initial_amounts|no NM-TRAN counterpart", str(e)), str(e)
            refused += 1
            continue
        read, _, _ = build(parse_control_stream(text))
        p = model.individual_parameters(jnp.array([0.1]), jnp.zeros(0), ())
        p_read = read.individual_parameters(jnp.array([0.1]), jnp.zeros(0), ())
        amounts = jnp.linspace(0.5, 2.0, dynamics.n_compartments)
        # A linear $DES is read as a LinearSystem (matrix exponential) around its ODE.
        read_ode = getattr(read.dynamics, "ode", read.dynamics)
        np.testing.assert_allclose(
            read_ode.rhs(0.0, amounts, p_read), dynamics.rhs(0.0, amounts, p), rtol=1e-14
        )
        exported += 1
    assert exported >= 10 and refused >= 1


def _parameters_read(dynamics):
    class Recorder(dict):
        seen: list

        def __getitem__(self, key):
            if key not in self.seen:
                self.seen.append(key)
            return jnp.asarray(1.3)

        def get(self, key, default=None):
            return self[key]

    params = Recorder()
    params.seen = []
    dynamics.rhs(0.0, jnp.ones(dynamics.n_compartments), params)
    dynamics.initial_amounts(params)
    return params.seen


def _model_on(dynamics, keys):
    annotations = {f"t{k}": pmx.Theta for k in keys} | {"sd": pmx.Theta, "iiv": pmx.Omega}
    namespace = {f"t{k}": pmx.theta(0.2) for k in keys}
    namespace |= {"sd": pmx.theta(0.5, lower=0.0), "iiv": pmx.omega(a=0.1)}

    def individual(self, eta, cov):
        return {k: jnp.exp(getattr(self, f"t{k}") + eta.a) for k in keys}

    def observe(self, amounts, p):
        return pmx.Additive(amounts[0], self.sd)

    namespace |= dict(
        __annotations__=annotations, dynamics=dynamics, individual=individual, observe=observe
    )
    return type(pmx.Model)(f"{type(dynamics).__name__}Model", (pmx.Model,), namespace)()


# -- the records ------------------------------------------------------------------------------


def test_theta_omega_records_read_back(tmp_path):
    model = TwoCompartmentBlock().with_values(tka=1e-8, tcl=-0.25).fix("iiv")
    text = write_model(model, tmp_path / "run2.mod").read_text()
    assert "$THETA 1.0E-08 ; tka" in text
    assert "$THETA -0.25 ; tcl" in text
    assert "$THETA (0.0, 0.3) ; add_sd" in text
    assert "$THETA (0.0, 0.1, 1.0) ; prop_cv" in text
    assert records(text, "OMEGA BLOCK")[-1] == "0.05 0.1 FIX ; v"
    assert "0.6 FIX ; ka" in text
    assert "$ESTIMATION METHOD=1 INTERACTION MAXEVAL=9999" in text
    assert "$COVARIANCE UNCONDITIONAL" in text
    assert "FILE=sdtab2" in text and "FILE=patab2" in text and "FILE=cotab2" in text
    read, _, settings = build(parse_control_stream(text))
    assert settings["method"] == "focei"
    assert list(settings["theta_labels"].values()) == list(model.thetas())
    read_thetas = list(read.thetas().values())[: len(model.thetas())]  # then sigma1
    for (name, theta), read_theta in zip(model.thetas().items(), read_thetas, strict=True):
        assert float(read_theta.value) == float(theta.value), name
        assert (read_theta.lower, read_theta.upper) == (theta.lower, theta.upper), name
    blocks = [b for _, b in read.omega_blocks()]
    np.testing.assert_array_equal(blocks[0].matrix, model.iiv.matrix)
    assert blocks[0].fixed and not blocks[0].diagonal and blocks[1].fixed
    assert settings["eta_labels"] == {"eta1": "cl", "eta2": "v", "eta3": "ka"}


@pytest.mark.parametrize(
    "method, line", [("fo", "METHOD=0 "), ("foce", "METHOD=1 MAX"), ("laplace", "LAPLACIAN")]
)
def test_estimation_methods(tmp_path, method, line):
    text = write_model(Theophylline(), tmp_path / "r.mod", method=method, covariance=False)
    text = text.read_text()
    assert line in records(text, "ESTIMATION")[0] and "$COV" not in text
    assert build(parse_control_stream(text))[2]["method"] == method


def test_data_file_and_no_data(tmp_path, phenobarbital):
    table = pmx.datasets.load_table("phenobarbital")
    (tmp_path / "data").mkdir()
    table.to_csv(tmp_path / "data" / "pheno.csv", index=False, na_rep=".")
    path = write_model(Phenobarbital(), tmp_path / "run3.mod", tmp_path / "data" / "pheno.csv")
    text = path.read_text()
    assert "$INPUT ID TIME AMT WT APGR DV EVID MDV" in text
    assert "$DATA data/pheno.csv IGNORE=@" in text
    _, data, _ = read_model(path)
    assert (data.n_subjects, data.n_observations) == (59, 155)
    text = write_model(Phenobarbital(), tmp_path / "run4.mod").read_text()
    assert "$INPUT ID TIME AMT EVID MDV CMT DV APGR WT" in text
    assert "$DATA run4.csv IGNORE=@" in text
    assert not (tmp_path / "run4.csv").exists()


def test_numbers_round_trip():
    for x in (0.1, 1.0, -2.5, 1e-8, 1.5e-10, 6.02e23, 0.00469307, 1 / 3):
        text = format_number(x)
        assert "." in text and float(text) == x


# -- refusals ---------------------------------------------------------------------------------


class Base(pmx.Model):
    tcl: pmx.Theta = pmx.theta(1.0)
    tv: pmx.Theta = pmx.theta(3.0)
    sd: pmx.Theta = pmx.theta(0.5, lower=0.0)
    iiv: pmx.Omega = pmx.omega(cl=0.1)
    dynamics = pmx.pk.OneCompartment()

    def individual(self, eta, cov):
        return dict(cl=jnp.exp(self.tcl + eta.cl), v=jnp.exp(self.tv))

    def observe(self, amounts, p):
        return pmx.Additive(amounts.central / p["v"], self.sd)


class UsesErf(Base):
    def individual(self, eta, cov):
        return dict(cl=jax.scipy.special.erf(self.tcl + eta.cl), v=jnp.exp(self.tv))


class PythonIf(Base):
    def individual(self, eta, cov):
        v = jnp.exp(self.tv) * (2.0 if cov.WT > 50 else 1.0)
        return dict(cl=jnp.exp(self.tcl + eta.cl), v=v)


class PoissonCounts(Base):
    dynamics = pmx.pk.Pred()

    def individual(self, eta, cov):
        return dict(rate=jnp.exp(self.tcl + eta.cl))

    def observe(self, amounts, p):
        return pmx.Poisson(p["rate"])


class TwoEndpoints(Base):
    def observe(self, amounts, p):
        conc = amounts.central / p["v"]
        return (pmx.Additive(conc, self.sd), pmx.Proportional(conc, self.sd))


class WithIOV(Base):
    iov: pmx.Omega = pmx.omega(cl_occ=0.05, occasion=True)


class TimeDependentODE(pmx.AbstractODE):
    compartments = ("central",)

    def rhs(self, t, amounts, p):
        return jnp.stack([-p["cl"] / p["v"] * amounts[0] * jnp.exp(-t)])


class ReadsTime(Base):
    dynamics = TimeDependentODE()


class Turnover(Base):
    dynamics = pmx_jax.dynamics.IndirectResponse()


class NoCentralVolume(Base):
    def individual(self, eta, cov):
        return dict(cl=jnp.exp(self.tcl + eta.cl))


@pytest.mark.parametrize(
    "model_class, message",
    [
        (UsesErf, r"UsesErf.individual \(\$PK\) at .*test_nonmem_write.py:\d+.*'erf'"),
        (PythonIf, r"PythonIf.individual \(\$PK\): Python control flow .* use jnp.where"),
        (PoissonCounts, r"observation model Poisson has no Y = IPRED \+ W\*EPS\(1\) form"),
        (TwoEndpoints, r"TwoEndpoints.observe \(\$ERROR\): 2 endpoints"),
        (WithIOV, r"WithIOV.iov: between-occasion variability"),
        (ReadsTime, r"TimeDependentODE.rhs \(\$DES\): reads t, the time since the last event"),
        (Turnover, r"IndirectResponse starts from non-zero amounts"),
        (NoCentralVolume, r"needs the individual parameters cl, v; v not returned"),
    ],
)
def test_unexportable_models_are_refused(tmp_path, model_class, message):
    with pytest.raises(ExportError, match=message):
        write_model(model_class(), tmp_path / "r.mod")


def test_censored_records_are_refused(tmp_path):
    table = pd.DataFrame(
        {"ID": [1, 1, 1], "TIME": [0.0, 1.0, 2.0], "AMT": [100.0, 0, 0],
         "DV": [None, 2.0, 0.5], "CENS": [0, 0, 1], "WT": [70.0] * 3}
    )  # fmt: skip
    with pytest.raises(ExportError, match=r"censored \(BLQ\) records \(first: row 3\)"):
        write_model(Base(), tmp_path / "r.mod", pmx.read_nonmem(table))


def test_missing_covariate_in_data_file(tmp_path):
    (tmp_path / "d.csv").write_text("ID,TIME,AMT,DV\n1,0,100,.\n")
    with pytest.raises(ExportError, match="reads the covariate.*WT"):
        write_model(PythonIf(), tmp_path / "r.mod", tmp_path / "d.csv")


class ThreeCompartmentOral(Base):
    """ADVAN12 (written for NONMEM; read_model does not read ADVAN11/12)."""

    dynamics = pmx.pk.ThreeCompartmentOral()

    def individual(self, eta, cov):
        return dict(
            cl=jnp.exp(self.tcl + eta.cl), v=jnp.exp(self.tv), q=1.0, vp=10.0, q2=0.5,
            vp2=20.0, ka=1.2, s2=2.0,
        )  # fmt: skip

    def observe(self, amounts, p):
        return pmx.Additive(amounts.central / p["v"], self.sd * p["s2"])


def test_three_compartments_and_name_clashes(tmp_path):
    text = write_model(ThreeCompartmentOral(), tmp_path / "r.mod").read_text()
    assert "$SUBROUTINES ADVAN12 TRANS4" in text
    pk = records(text, "PK")
    assert pk[1:4] == ["CL = EXP(THETA(1) + ETA(1))", "V2 = EXP(THETA(2))", "Q3 = 1.0"]
    assert pk[4:] == ["V3 = 10.0", "Q4 = 0.5", "V4 = 20.0", "KA = 1.2", "S2_1 = 2.0", "S2 = V2"]
    assert "W = THETA(3)*S2_1" in records(text, "ERROR")


def test_parameter_named_as_a_data_item(tmp_path):
    (tmp_path / "d.csv").write_text("ID,TIME,AMT,DV,KA\n1,0,100,.,1\n")
    with pytest.raises(ExportError, match="names the parameter 'ka' KA, which is also a data item"):
        write_model(Theophylline(), tmp_path / "r.mod", tmp_path / "d.csv")
