"""Reading NONMEM control streams (pmx_jax.nonmem._control.read_model): records,
$INPUT/$DATA, $THETA/$OMEGA/$SIGMA, ADVAN1-4, abbreviated code, and the
objective function of the models read against the same models written in pmx
(to 1e-6) and NONMEM's run000 (REFERENCE_CASES R4)."""

import math
import textwrap

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import pmx_jax as pmx
from pmx_jax.library import Phenobarbital, Theophylline
from pmx_jax.nonmem._abbreviated import ControlStreamError, Line, parse_program
from pmx_jax.nonmem._control import parse_control_stream, read_model


def write(tmp_path, text, name="run.ctl"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def theo_csv(tmp_path):
    """theophylline.csv with an unquoted header (NONMEM reads by position)."""
    table = pmx.datasets.load_table("theophylline")
    path = tmp_path / "theo.csv"
    table.to_csv(path, index=False, na_rep=".")
    return path


THEO = """
    $PROBLEM theophylline ; a comment
    $INPUT ID TIME DV AMT EVID MDV CMT WT
    $DATA theo.csv IGNORE=@
    $SUBROUTINES ADVAN2 TRANS2
    $PK
      KA = EXP(THETA(1) + ETA(1))
      CL = EXP(THETA(2) + ETA(2))
      V  = EXP(THETA(3) + ETA(3))
      S2 = V
    $ERROR
      IPRED = F
      Y = IPRED + THETA(4)*EPS(1)
    $THETA 0.45 ; log ka
    $THETA 1.0  ; log cl
    $THETA 3.45 ; log v
    $THETA (0, 0.7) ; add sd
    $OMEGA 0.6 0.3 0.1
    $SIGMA 1 FIX
    $EST METHOD=COND INTER MAXEVAL=500
"""


def ofv(model, data, method="focei"):
    return float(pmx.ofv(model, data, method).ofv)


# -- records and code -------------------------------------------------------------


def test_records_comments_and_abbreviations():
    records = parse_control_stream("$PROB x ; c\n$inp ID TIME DV\n$EST METH=1 ; c2\n  INTER\n")
    assert [r.name for r in records] == ["PROBLEM", "INPUT", "ESTIMATION"]
    assert records[2].lines[0].comment == "c2"
    assert "INTER" in records[2].text()
    with pytest.raises(ControlStreamError, match="line 1: unknown record"):
        parse_control_stream("$FOO bar")


def _run(code, **env):
    lines = [Line(i + 1, t) for i, t in enumerate(textwrap.dedent(code).strip().splitlines())]
    program = parse_program(lines, "$PK")
    return program.run({k: jnp.asarray(v) for k, v in env.items()}, {})


def test_abbreviated_if_blocks_and_operators():
    code = """
        B = 5
        IF (X.GT.2.AND.X.LE.10) THEN
          AA = 1
          B = 2
        ELSE IF (X.EQ.1 .OR. X .LT. -3) THEN
          AA = 2
        ELSE
          AA = 3
        ENDIF
        IF (X.NE.1) C = X**2 + 1.D0
        D = LOG10(100.0) + SQRT(ABS(-4.)) + EXP(0)
    """
    for x, a, b, c in ((5, 1, 2, 26), (1, 2, 5, 0), (-5, 2, 5, 26), (0, 3, 5, 1)):
        env = _run(code, X=float(x))
        assert float(env["AA"]) == a and float(env["B"]) == b and float(env["C"]) == c, x
        assert float(env["D"]) == pytest.approx(5.0)


def test_abbreviated_nested_if_and_not():
    env = _run(
        """
        IF (.NOT.(X.GT.0)) THEN
          Y = -1
        ELSE
          IF (X.GT.5) THEN
            Y = 10
          ELSE
            Y = 1
          END IF
        ENDIF
        """,
        X=7.0,
    )
    assert float(env["Y"]) == 10.0


@pytest.mark.parametrize(
    "code, message",
    [
        ("CALL SUPP(1,1)", "line 1: unsupported statement"),
        ("X = GAMLN(2)", "unsupported function GAMLN"),
        ("IF (X.GT.1) THEN\nY=1", "IF block without ENDIF"),
        ("DO WHILE (X.GT.1)", "unsupported statement"),
        ("X = THETA(N)", "literal integer"),
    ],
)
def test_abbreviated_refusals(code, message):
    lines = [Line(i + 1, t) for i, t in enumerate(code.splitlines())]
    with pytest.raises(ControlStreamError, match=message):
        parse_program(lines, "$PK")


# -- $INPUT / $DATA ------------------------------------------------------------------


def test_data_ignore_accept_drop_rename(tmp_path):
    (tmp_path / "d.csv").write_text(
        "C comment line\n"
        "1,0,100,.,1,70,9\n"
        "1,1,0,5.0,0,70,9\n"
        "1,2,0,4.0,0,70,1\n"
        "2,0,100,.,1,80,9\n"
        "2,1,0,6.0,0,80,9\n"
        "3,0,100,.,1,90,9\n"
        "3,1,0,7.0,0,90,9\n"
    )
    base = """
        $INPUT ID TIME AMT CONC=DV EVID BW=WT FLAG=DROP
        $DATA d.csv {options}
        $PRED
          Y = THETA(1)*WT + EPS(1)
        $THETA 1
        $SIGMA 1
    """
    _, data, _ = read_model(write(tmp_path, base.format(options="IGNORE=C")))
    assert data.n_subjects == 3 and data.n_observations == 4
    # BW=WT: neither is reserved, the column is BW and WT an alias in the code
    assert data.covariate_names == ("BW",)
    _, data, _ = read_model(write(tmp_path, base.format(options="IGNORE=C IGNORE=(FLAG.EQ.1)")))
    assert data.n_observations == 3
    # an IGNORE list replaces the default '#' but '@'/'C' rules still apply to the header
    _, data, _ = read_model(
        write(tmp_path, base.format(options="IGNORE=@ IGNORE=(ID.EQ.2, TIME.GT.1.5)"))
    )
    assert data.n_subjects == 2 and data.n_observations == 2
    _, data, _ = read_model(write(tmp_path, base.format(options="IGNORE=@ ACCEPT=(ID.GE.3)")))
    assert data.n_subjects == 1 and data.n_observations == 1
    with pytest.raises(ControlStreamError, match="unsupported \\$DATA option"):
        read_model(write(tmp_path, base.format(options="IGNORE=C RECORDS=10")))


def test_data_argument_overrides_data_record(tmp_path, theo_csv):
    path = write(tmp_path, THEO.replace("theo.csv", "missing.csv"))
    _, data, _ = read_model(path, data=theo_csv)
    assert (data.n_subjects, data.n_observations) == (12, 132)


# -- parameters -----------------------------------------------------------------------


def test_theta_omega_sigma_records(tmp_path, theo_csv):
    text = THEO.split("$THETA")[0] + textwrap.dedent("""
        $THETA (0, 0.45, 5) ; ka
        $THETA (-INF, 1.0) (-1000000, 3.45, 1000000) 0.7 FIX
        $OMEGA BLOCK(2) 0.6 0.01 0.3
        $OMEGA 0.1 FIX
        $SIGMA 1 FIX
        $EST METHOD=1 INTER MAXEVAL=500
    """)  # fmt: skip
    model, _, settings = read_model(write(tmp_path, text), data=theo_csv)
    t = model.thetas()
    assert (t["theta1"].lower, t["theta1"].upper) == (0.0, 5.0)
    assert math.isinf(t["theta2"].lower) and math.isinf(t["theta3"].upper)
    assert t["theta4"].fixed and float(t["theta4"].value) == 0.7
    assert t["sigma1"].fixed
    assert settings["theta_labels"]["theta1"] == "ka"
    blocks = dict(model.omega_blocks())
    assert blocks["omega1"].names == ("eta1", "eta2") and not blocks["omega1"].diagonal
    np.testing.assert_allclose(blocks["omega1"].matrix, [[0.6, 0.01], [0.01, 0.3]])
    assert blocks["omega2"].fixed and blocks["omega2"].names == ("eta3",)
    assert settings["method"] == "focei" and settings["maxeval"] == 500


@pytest.mark.parametrize(
    "replace, message",
    [
        (("$OMEGA 0.6 0.3 0.1", "$OMEGA BLOCK(3) SAME"), "SAME is not supported"),
        (("$OMEGA 0.6 0.3 0.1", "$OMEGA SD 0.6 0.3 0.1"), "SD is not supported"),
        (("ADVAN2 TRANS2", "ADVAN5"), "ADVAN5 TRANS1 is not supported"),
        (("ADVAN2 TRANS2", "ADVAN13 TOL=6"), r"ADVAN13 needs \$MODEL"),
        (("$SIGMA 1 FIX", "$SIGMA BLOCK(2) 1 0 1"), "BLOCK SIGMA"),
        (("$SIGMA 1 FIX", "$SIGMA 1 FIX\n$DES\nDADT(1)=0"), r"\$DES .*needs ADVAN6/13"),
        (("$SIGMA 1 FIX", "$SIGMA 1 FIX\n$MIX\nP(1)=1"), r"\$MIX .*not supported"),
        (("METHOD=COND", "METHOD=BAYES"), "METHOD=BAYES is not supported"),
        (("METHOD=COND INTER MAXEVAL=500", "METHOD=IMP"), "METHOD=IMP is supported only as"),
        (("METHOD=COND INTER MAXEVAL=500", "METHOD=SAEM ATOL=3"), "SAEM option ATOL"),
        (("  S2 = V", "  S2 = V\n  CALL PASS(MODE)"), r"\$PK line \d+: unsupported statement"),
        (("THETA(4)*EPS(1)", "THETA(5)*EPS(1)"), r"THETA\(5\) but there are 4"),
        (("  V  =", "  VV ="), "needs CL, V, KA; V not assigned"),
        (("  S2 = V", "  S2 = V\n  IF (TIME.GT.5) CL = CL*2"), r"data item\(s\) TIME"),
        (("IPRED + THETA", "IPRED*AMT + THETA"), r"\$ERROR line \d+: Y depends on .* AMT"),
    ],
)
def test_refusals_name_the_record(tmp_path, theo_csv, replace, message):
    with pytest.raises(ControlStreamError, match=message):
        read_model(write(tmp_path, THEO.replace(*replace)), data=theo_csv)


def test_saem_and_importance_sampling_steps(tmp_path, theo_csv):
    text = THEO.replace(
        "$EST METHOD=COND INTER MAXEVAL=500",
        "$EST METHOD=SAEM INTER NBURN=300 NITER=200 ISAMPLE=3 SEED=7 PRINT=50\n"
        "    $EST METHOD=IMP EONLY=1 ISAMPLE=2000 NITER=5",
    )
    _, _, settings = read_model(write(tmp_path, text), data=theo_csv)
    assert settings["method"] == "saem"
    assert settings["fit_options"] == dict(
        iterations=(300, 200), chains=3, seed=7, imp_samples=2000
    )
    # NONMEM's defaults: NBURN=2000, NITER=1000.
    text = THEO.replace("$EST METHOD=COND INTER MAXEVAL=500", "$EST METHOD=SAEM")
    _, _, settings = read_model(write(tmp_path, text), data=theo_csv)
    assert settings["fit_options"] == dict(iterations=(2000, 1000))


# -- objective functions against models written in pmx -------------------------------------


def test_pred_model_equals_pmx_pred_model(tmp_path):
    class PredModel(pmx.Model):
        slope: pmx.Theta = pmx.theta(0.1)
        sd: pmx.Theta = pmx.theta(1.0, lower=0.0)
        iiv: pmx.Omega = pmx.omega(a=0.2)
        dynamics = pmx.pk.Pred()

        def individual(self, eta, cov):
            return dict(mean=self.slope * cov.WT * jnp.exp(eta.a))

        def observe(self, amounts, p):
            return pmx.Additive(p["mean"], self.sd)

    rows = [(i, t, 60.0 + 5 * i, 5.0 + i + 0.3 * t) for i in range(1, 7) for t in range(4)]
    table = pd.DataFrame(rows, columns=["ID", "TIME", "WT", "DV"])
    table.to_csv(tmp_path / "pred.csv", index=False)
    text = """
        $INPUT ID TIME WT DV
        $DATA pred.csv IGNORE=@
        $PRED
          IF (WT.GT.0) THEN
            MU = THETA(1)*WT*EXP(ETA(1))
          ENDIF
          Y = MU + THETA(2)*EPS(1)
        $THETA 0.1 (0, 1)
        $OMEGA 0.2
        $SIGMA 1 FIX
        $EST METHOD=1 LAPLACE
    """
    model, data, settings = read_model(write(tmp_path, text))
    assert settings["method"] == "laplace"
    reference = ofv(PredModel(), pmx.read_nonmem(table))
    assert ofv(model, data) == pytest.approx(reference, abs=1e-6)


def test_theophylline_ofv_equals_library_model(tmp_path, theo_csv):
    model, data, settings = read_model(write(tmp_path, THEO), data=theo_csv)
    assert (data.n_subjects, data.n_observations) == (12, 132)
    assert settings["method"] == "focei"
    reference = ofv(Theophylline(), pmx.datasets.load("theophylline"))
    assert ofv(model, data) == pytest.approx(reference, abs=1e-6)


@pytest.mark.slow  # FOCE: a second objective to compile for each model (17 s)
def test_theophylline_foce_ofv_equals_library_model(tmp_path, theo_csv):
    model, data, _ = read_model(write(tmp_path, THEO), data=theo_csv)
    assert ofv(model, data, "foce") == pytest.approx(
        ofv(Theophylline(), pmx.datasets.load("theophylline"), "foce"), abs=1e-6
    )


def test_theophylline_sigma_variance_and_trans1(tmp_path, theo_csv):
    """$SIGMA as a variance (SD 0.7), ADVAN2 TRANS1 with K = CL/V."""
    text = (
        THEO.replace("$SUBROUTINES ADVAN2 TRANS2", "$SUBROUTINES ADVAN2 TRANS1")
        .replace("  S2 = V", "  S2 = V\n  K = CL/V")
        .replace("Y = IPRED + THETA(4)*EPS(1)", "Y = IPRED + EPS(1)")
        .replace("$THETA (0, 0.7) ; add sd", "")
        .replace("$SIGMA 1 FIX", "$SIGMA 0.49")
    )
    model, data, _ = read_model(write(tmp_path, text), data=theo_csv)
    assert not model.thetas()["sigma1"].fixed
    reference = ofv(Theophylline(), pmx.datasets.load("theophylline"))
    assert ofv(model, data) == pytest.approx(reference, abs=1e-6)


def test_phenobarbital_if_and_proportional_error(tmp_path):
    table = pmx.datasets.load_table("phenobarbital")
    table.to_csv(tmp_path / "pheno.csv", index=False, na_rep=".")
    text = """
        $PROBLEM pheno
        $INPUT ID TIME AMT WT APGR DV EVID MDV
        $DATA pheno.csv IGNORE=@
        $SUBROUTINES ADVAN1 TRANS2
        $PK
          TVCL = THETA(1)*WT
          TVV = THETA(2)*WT
          IF (APGR.LT.5) TVV = TVV*(1 + THETA(3))
          CL = TVCL*EXP(ETA(1))
          V = TVV*EXP(ETA(2))
          S1 = V
        $ERROR
          W = F
          Y = F + W*EPS(1)
          IPRED = F
          IRES = DV - IPRED
        $THETA (0, 0.00469307) (0, 1.00916) (-0.99, 0.1)
        $OMEGA DIAGONAL(2) 0.0309626 0.031128
        $SIGMA 0.01
        $EST METHOD=1 INTERACTION
    """
    model, data, _ = read_model(write(tmp_path, text))
    reference = ofv(Phenobarbital(), pmx.read_nonmem(table))
    assert ofv(model, data) == pytest.approx(reference, abs=1e-6)


@pytest.mark.slow  # about 26 s (ODE / two compiled programs)
def test_advan13_des_equals_closed_form_library_model(tmp_path, theo_csv):
    text = THEO.replace("$SUBROUTINES ADVAN2 TRANS2", "$SUBROUTINES ADVAN13 TOL=9").replace(
        "$ERROR",
        "$MODEL COMP=(DEPOT, DEFDOSE) COMP=(CENTRAL, DEFOBS)\n"
        "$DES\n  DADT(1) = -KA*A(1)\n  DADT(2) = KA*A(1) - CL/V*A(2)\n$ERROR",
    )
    model, data, _ = read_model(write(tmp_path, text), data=theo_csv)
    assert model.dynamics.compartments == ("depot", "central")
    reference = ofv(Theophylline(), pmx.datasets.load("theophylline"))
    assert ofv(model, data) == pytest.approx(reference, abs=1e-6)


@pytest.mark.slow  # about 26 s (ODE / two compiled programs)
def test_two_compartment_oral_trans4_and_trans1(tmp_path, theo_csv):
    class TwoCpt(pmx.Model):
        tka: pmx.Theta = pmx.theta(0.45)
        tcl: pmx.Theta = pmx.theta(1.0)
        tv: pmx.Theta = pmx.theta(3.0)
        tq: pmx.Theta = pmx.theta(0.5)
        tvp: pmx.Theta = pmx.theta(3.5)
        add_sd: pmx.Theta = pmx.theta(0.7, lower=0.0)
        iiv: pmx.Omega = pmx.omega(ka=0.6, cl=0.3, v=0.1)
        dynamics = pmx.pk.TwoCompartmentOral()

        def individual(self, eta, cov):
            return dict(
                ka=jnp.exp(self.tka + eta.ka),
                cl=jnp.exp(self.tcl + eta.cl),
                v=jnp.exp(self.tv + eta.v),
                q=jnp.exp(self.tq),
                vp=jnp.exp(self.tvp),
            )

        def observe(self, amounts, p):
            return pmx.Additive(amounts.central / p["v"], self.add_sd)

    trans4 = """
        $INPUT ID TIME DV AMT EVID MDV CMT WT
        $DATA theo.csv IGNORE=@
        $SUBROUTINES ADVAN4 TRANS4
        $PK
          KA = EXP(THETA(1) + ETA(1))
          CL = EXP(THETA(2) + ETA(2))
          V2 = EXP(THETA(3) + ETA(3))
          Q = EXP(THETA(4))
          V3 = EXP(THETA(5))
          S2 = V2
        $ERROR
          Y = F + THETA(6)*EPS(1)
        $THETA 0.45 1.0 3.0 0.5 3.5 (0, 0.7)
        $OMEGA 0.6 0.3 0.1
        $SIGMA 1 FIX
    """
    reference = ofv(TwoCpt(), pmx.datasets.load("theophylline"))
    model, data, _ = read_model(write(tmp_path, trans4), data=theo_csv)
    assert ofv(model, data) == pytest.approx(reference, abs=1e-6)
    trans1 = trans4.replace("TRANS4", "TRANS1").replace(
        "  S2 = V2", "  S2 = V2\n  K = CL/V2\n  K23 = Q/V2\n  K32 = Q/V3"
    )
    model, data, _ = read_model(write(tmp_path, trans1), data=theo_csv)
    assert ofv(model, data) == pytest.approx(reference, abs=1e-6)


# -- NONMEM's run000 (REFERENCE_CASES R4) ------------------------------------------------


def _run000(refdata):
    return read_model(
        refdata / "nonmem_models" / "run000.ctl", data=refdata / "warfarin_PKS_nonmem.csv"
    )


def test_run000_initial_ofv_matches_nonmem(refdata):
    model, data, settings = _run000(refdata)
    assert (data.n_subjects, data.n_observations) == (32, 251)
    assert settings["method"] == "focei" and settings["maxeval"] == 9999
    assert settings["covariance"] == "UNCONDITIONAL"
    assert ofv(model, data) == pytest.approx(558.48502, abs=1e-3)


def test_run000_focei_fit_matches_nonmem(refdata):
    model, data, settings = _run000(refdata)
    result = pmx.fit(model, data, settings["method"], covariance=None)
    assert result.converged, result.message
    assert abs(result.ofv - 423.32729) < 0.01
    fitted = {k: float(v.value) for k, v in result.model.thetas().items()}
    for name, ref in dict(theta1=-0.569395, theta2=-2.00723, theta3=2.05853).items():
        assert abs(fitted[name] - ref) < 0.01, name
    for name, ref in dict(theta4=0.117047, theta5=0.722484).items():
        assert abs(fitted[name]) == pytest.approx(ref, rel=0.01), name
    omega = np.diagonal(np.asarray(result.model.omega_matrix()))
    np.testing.assert_allclose(omega, [0.474983, 0.0790298, 0.0482784], rtol=0.01)


@pytest.mark.slow
def test_runode032_advan13_initial_ofv_matches_nonmem(refdata):
    """ADVAN13 with $MODEL/$DES (REFERENCE_CASES R5 at NONMEM's initial
    estimates, OFV 20783.393).  Its $DES is linear in the amounts: solved by
    the matrix exponential (about 50 s with compilation; 4 minutes through
    the ODE solver)."""
    model, data, settings = read_model(
        refdata / "nonmem_models" / "runODE032.ctl", data=refdata / "Bolus_2CPT.csv"
    )
    assert settings["des_linear"]
    assert model.dynamics.compartments == ("central", "peri")
    assert (data.n_subjects, data.n_observations) == (120, 2280)
    assert ofv(model, data) == pytest.approx(20783.393, abs=1e-3)


@pytest.mark.slow
def test_runode032_focei_fit_matches_nonmem(refdata):
    """The control stream as it is, fitted (REFERENCE_CASES R5): NONMEM 7.4.3's
    OFV 20167.641 to 0.01, estimates to 1%."""
    model, data, settings = read_model(
        refdata / "nonmem_models" / "runODE032.ctl", data=refdata / "Bolus_2CPT.csv"
    )
    result = pmx.fit(model, data, settings["method"], covariance=None)
    assert result.converged, result.message
    assert abs(result.ofv - 20167.641) < 0.01
    fitted = {k: float(v.value) for k, v in result.model.thetas().items()}
    reference = dict(theta1=1.37034, theta2=4.19815, theta3=1.38003, theta4=3.87657)
    for name, ref in reference.items():
        assert fitted[name] == pytest.approx(ref, rel=0.01), name
    assert fitted["theta5"] == pytest.approx(0.196446, rel=0.01)
    omega = np.diagonal(np.asarray(result.model.omega_matrix()))
    np.testing.assert_allclose(omega, [0.101251, 0.0993872, 0.101303, 0.0730498], rtol=0.01)


def test_pmx_run_fits_a_control_stream_and_prints_the_ofv(tmp_path, theo_csv, capsys):
    # The command line: the stream's $DATA file sits next to it; the fit ends
    # with NONMEM's `OFV <value>` line and writes the run's NONMEM files.
    # FOCEI of the library model on these data: nlmixr2's OFV 116.8038
    # (REFERENCE_CASES R2; tests/test_fit_theophylline.py asserts it to 0.01).
    from pmx_jax._cli import main

    control = write(tmp_path, THEO + "    $COV\n")  # $COV: the covariance step runs
    assert main(["run", str(control), "--output", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("OFV ")
    assert float(lines[-1].split()[1]) == pytest.approx(116.8038, abs=0.01)
    written = {path.name for path in (tmp_path / "out").iterdir()}
    assert {"run_fit.json", "run.ext", "run.phi", "run.cov", "run.shk", "sdtab1"} <= written


@pytest.mark.slow
def test_pmx_run_saem_then_importance_sampling(tmp_path, theo_csv, capsys):
    # $EST METHOD=SAEM + METHOD=IMP EONLY=1, as NONMEM users write it: the
    # last line is the importance-sampling OFV.
    from pmx_jax._cli import main

    text = THEO.replace(
        "$EST METHOD=COND INTER MAXEVAL=500",
        "$EST METHOD=SAEM NBURN=150 NITER=100 SEED=5\n    $EST METHOD=IMP EONLY=1 ISAMPLE=500",
    )
    control = write(tmp_path, text)
    assert main(["run", str(control), "--output", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    ofv = float(lines[-1].split()[1])
    # The exact -2LL of theophylline at its maximum: 118.1 (SE ~0.1 with
    # 500 draws); FOCEI's approximation is 116.80.
    assert abs(ofv - 118.13) < 0.6
    ext = (tmp_path / "out" / "run.ext").read_text()
    assert "Stochastic Approximation Expectation-Maximization" in ext.splitlines()[0]
