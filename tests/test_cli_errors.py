"""Malformed run specifications and command lines end as named errors (issue 15).

Each case either calls :func:`pmx_jax._config.load_config` and expects a
:class:`ConfigError` whose message names the file, the section and the key, or
runs ``pmx`` and expects exit code 2 with one ``pmx: error:`` line on stderr
(never a traceback).  No model is fitted here.
"""

import importlib.metadata
import inspect
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pmx_jax._cli as cli
from pmx_jax import datasets
from pmx_jax._cli import main
from pmx_jax._config import ConfigError, load_config
from pmx_jax.data import DatasetWarning, read_nonmem
from pmx_jax.estimation import fit
from pmx_jax.model import OmegaNotPositiveDefiniteError, ThetaBoundsError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
THEO_CSV = ROOT / "pmx_jax" / "datasets" / "theophylline.csv"
PHENO_CSV = ROOT / "pmx_jax" / "datasets" / "phenobarbital.csv"
MODEL = '[model]\nuse = "pmx_jax.library:Theophylline"\n'
DATA = '[data]\ndataset = "theophylline"\n'
REGIMEN = "[regimen]\ndose = 320\nsample_times = [1, 2, 4]\n"


def spec(tmp_path: Path, text: str, name: str = "run.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def config_error(tmp_path: Path, text: str) -> str:
    """The message of the ConfigError that reading ``text`` raises."""
    path = spec(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message  # every message names the file
    return message


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_clean_error(code: int, err: str) -> str:
    assert code == 2
    assert err.startswith("pmx: error: ") and "Traceback" not in err
    return err


# -- [data] --------------------------------------------------------------------------------


def test_data_path_that_does_not_exist(tmp_path, capsys):
    path = spec(tmp_path, MODEL + '[data]\npath = "theo.csv"\n')
    (tmp_path / "theo_sd.csv").write_text("ID,TIME,DV\n")
    code, out, err = run(["fit", path, "--output", tmp_path / "out"], capsys)
    err = assert_clean_error(code, err)
    assert str(path) in err and "[data] path = 'theo.csv'" in err
    assert str(tmp_path / "theo.csv") in err  # where it looked
    assert "did you mean 'theo_sd.csv'" in err
    assert "fitting" not in out


def test_data_path_that_is_a_folder(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    path = spec(tmp_path, MODEL + '[data]\npath = "data"\n')
    code, _, err = run(["simulate", path], capsys)
    err = assert_clean_error(code, err)
    assert "[data] path = 'data'" in err and "folder" in err


def test_misspelled_bundled_dataset(tmp_path, capsys):
    path = spec(tmp_path, MODEL + '[data]\ndataset = "theophyline"\n')
    code, _, err = run(["fit", path], capsys)
    err = assert_clean_error(code, err)
    assert "[data] dataset = 'theophyline'" in err
    assert "did you mean 'theophylline'?" in err
    assert all(name in err for name in datasets.names())


def test_bundled_dataset_aliases_still_work(tmp_path):
    config = load_config(spec(tmp_path, MODEL + '[data]\ndataset = "theo"\n'))
    assert config.data.n_subjects == 12


def test_data_with_both_dataset_and_path(tmp_path):
    message = config_error(tmp_path, MODEL + '[data]\ndataset = "theo"\npath = "x.csv"\n')
    assert "both dataset and path" in message


# -- [fit] ---------------------------------------------------------------------------------


def test_typo_in_a_fit_key(tmp_path, capsys):
    path = spec(tmp_path, MODEL + DATA + "[fit]\nmax_iteration = 20\n")
    code, out, err = run(["fit", path, "--output", tmp_path / "out"], capsys)
    err = assert_clean_error(code, err)
    assert "'max_iteration' (did you mean 'max_iterations'?) in [fit]" in err
    assert "gradient_tolerance" in err and "covariance" in err
    # what a TOML file cannot give, or the command sets itself, is not offered
    assert "callback" not in err and "progress" not in err and "ebe_init" not in err
    assert "fitting" not in out


def test_fit_keys_are_those_of_fit():
    """The valid [fit] keys follow fit()'s signature, so a new option works at once."""
    from pmx_jax._config import _signature_options

    parameters = inspect.signature(fit).parameters
    offered = set(_signature_options(fit, skip=("progress",)))
    excluded = {"model", "data", "progress", "callback", "ebe_init", "options"}  # options: SAEM's
    assert offered == set(parameters) - excluded


@pytest.mark.parametrize(
    ("line", "named"),
    [
        ('method = "fooce"', "[fit] method = 'fooce' must be one of 'fo', 'foce', 'focei'"),
        ('max_iterations = "500"', "[fit] max_iterations = '500' must be a whole number"),
        ("gradient_tolerance = true", "[fit] gradient_tolerance = True must be a number"),
        ('covariance = "sandwhich"', "did you mean 'sandwich'?"),
        ('ebe_search = "globl"', "[fit] ebe_search = 'globl' must be one of 'global', 'local'"),
    ],
)
def test_fit_values_of_the_wrong_type(tmp_path, line, named):
    assert named in config_error(tmp_path, MODEL + DATA + f"[fit]\n{line}\n")


def test_fit_values_that_are_read(tmp_path):
    text = MODEL + DATA + '[fit]\nmethod = "foce"\ngradient_tolerance = 1\ncovariance = false\n'
    options = load_config(spec(tmp_path, text)).fit
    assert options == {"method": "foce", "gradient_tolerance": 1.0, "covariance": None}
    assert isinstance(options["gradient_tolerance"], float)


# -- numbers written as text ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (REGIMEN.replace("dose = 320", 'dose = "320mg"'), "[regimen] dose = '320mg' is text"),
        (REGIMEN + 'every = "24 h"\nn = 7\n', "[regimen] every = '24 h' is text"),
        (REGIMEN + "every = 24\nn = 7.5\n", "[regimen] n = 7.5 must be a whole number"),
        (REGIMEN + 'n = "7"\n', "[regimen] n = '7' is text"),
        (
            REGIMEN + 'route = "infusion"\nduration = "1h"\n',
            "[regimen] duration = '1h' is text",
        ),
        (
            REGIMEN.replace("[1, 2, 4]", '[1, "2", 4]'),
            "[regimen] sample_times[1] = '2' is text",
        ),
        (
            REGIMEN.replace("[1, 2, 4]", '{ start = 0, stop = "24", step = 1 }'),
            "[regimen] sample_times.stop = '24' is text",
        ),
        (REGIMEN + '[regimen.covariates]\nWT = "70 kg"\n', "[regimen.covariates] WT = '70 kg'"),
        ('[model.theta]\ntka = "0.45"\n', "[model.theta] tka = '0.45' is text"),
        ("[model.omega]\ncl = [0.1]\n", "[model.omega] cl = [0.1] must be a number"),
        ('[model.bounds]\ntcl = ["-5", 5]\n', "[model.bounds] tcl[0] = '-5' is text"),
    ],
)
def test_numbers_given_as_text(tmp_path, text, named):
    message = config_error(tmp_path, MODEL + text)
    assert named in message


def test_dose_as_text_from_the_command_line(tmp_path, capsys):
    path = spec(tmp_path, MODEL + REGIMEN.replace("dose = 320", 'dose = "320mg"'))
    code, out, err = run(["simulate", path, "--n-subjects", 5], capsys)
    err = assert_clean_error(code, err)
    assert "dose = '320mg' is text" in err and "e.g. dose = 320" in err
    assert out == ""


def test_regimen_checks(tmp_path):
    assert "needs 'dose'" in config_error(tmp_path, MODEL + "[regimen]\nsample_times = [1]\n")
    assert "route = 'infusion' needs 'duration'" in config_error(
        tmp_path, MODEL + REGIMEN + 'route = "infusion"\n'
    )
    assert "duration is for route = 'infusion'" in config_error(
        tmp_path, MODEL + REGIMEN + "duration = 2\n"
    )
    assert "[regimen]: repeated doses need every > 0" in config_error(
        tmp_path, MODEL + REGIMEN + "n = 3\n"
    )


# -- output folders ----------------------------------------------------------------------


def test_output_under_a_file_is_refused_before_the_run(tmp_path, capsys):
    blocker = tmp_path / "results.txt"
    blocker.write_text("")
    target = blocker / "run1"
    code, out, err = run(["fit", CONFIGS / "theophylline.toml", "--output", target], capsys)
    err = assert_clean_error(code, err)
    assert str(target) in err and "--output" in err
    assert "fitting" not in out  # refused before the fit started


def test_output_that_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "results.txt"
    blocker.write_text("")
    args = ["simulate", CONFIGS / "theophylline_simulation.toml", "--n-subjects", 5]
    code, out, err = run([*args, "--output", blocker], capsys)
    err = assert_clean_error(code, err)
    assert f"output folder {blocker} (--output) is a file" in err
    assert "simulated" not in out


def test_output_dir_key_under_a_file(tmp_path, capsys):
    blocker = tmp_path / "results.txt"
    blocker.write_text("")
    path = spec(tmp_path, f'output_dir = "{blocker / "sub"}"\n' + MODEL + DATA)
    code, _, err = run(["fit", path], capsys)
    err = assert_clean_error(code, err)
    assert f"output_dir of {path}" in err and str(blocker / "sub") in err


def test_output_folder_that_cannot_be_written(tmp_path, capsys, monkeypatch):
    """As a read-only folder behaves for a user who is not root (the test below)."""

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("pmx_jax._config.tempfile.TemporaryFile", read_only)
    args = ["simulate", CONFIGS / "theophylline_simulation.toml", "--output", tmp_path]
    code, out, err = run(args, capsys)
    err = assert_clean_error(code, err)
    assert f"cannot write to the output folder {tmp_path} (--output): Permission denied" in err
    assert "simulated" not in out


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_output_folder(tmp_path, capsys):
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        code, _, err = run(["fit", CONFIGS / "theophylline.toml", "--output", folder], capsys)
    finally:
        folder.chmod(0o700)
    err = assert_clean_error(code, err)
    assert f"cannot write to the output folder {folder}" in err


# -- unknown keys, in every section ------------------------------------------------------


SIMULATED_WT = '[simulate.covariates.WT]\ndistribution = "lognormal"\nmedian = 70\nsd_log = 0.2\n'
GRID = "{ start = 0, stop = 4, stp = 1 }"

# (text of the file, the unknown key as named, where it was found, a valid key listed)
UNKNOWN_KEYS = [
    ('nmae = "x"\n' + MODEL, "'nmae' (did you mean 'name'?)", "the top level", "output_dir"),
    (MODEL + '[data]\ndatset = "theo"\n', "'datset' (did you mean 'dataset'?)", "[data]", "path"),
    (
        MODEL + DATA + '[data.options]\ncovariate = ["WT"]\n',
        "'covariate' (did you mean 'covariates'?)",
        "[data.options]",
        "columns",
    ),
    (MODEL + 'fixed = ["tka"]\n', "'fixed' (did you mean 'fix'?)", "[model]", "bounds"),
    (MODEL + "[model.theta]\ntkx = 1.0\n", "'tkx' (did you mean 'tka'?)", "[model.theta]", "tv"),
    (MODEL + "[model.omega]\nclx = 0.1\n", "'clx' (did you mean 'cl'?)", "[model.omega]", "iiv"),
    (
        MODEL + "[model.bounds]\ntvv = [0, 9]\n",
        "'tvv' (did you mean 'tv'?)",
        "[model.bounds]",
        "tcl",
    ),
    (MODEL + REGIMEN + "dosse = 1\n", "'dosse' (did you mean 'dose'?)", "[regimen]", "route"),
    (
        MODEL + REGIMEN.replace("[1, 2, 4]", GRID),
        "'stp' (did you mean 'stop'?)",
        "[regimen] sample_times",
        "step",
    ),
    (
        MODEL + REGIMEN + "[simulate]\nnsubjects = 5\n",
        "'nsubjects' (did you mean 'n_subjects'?)",
        "[simulate]",
        "n_subjects",
    ),
    (
        MODEL + REGIMEN + SIMULATED_WT + "sdlog = 3\n",
        "'sdlog' (did you mean 'sd_log'?)",
        "[simulate.covariates.WT]",
        "median",
    ),
    (MODEL + DATA + '[fit]\nmetod = "foce"\n', "'metod' (did you mean 'method'?)", "[fit]", "seed"),
]


@pytest.mark.parametrize(("text", "bad", "label", "valid"), UNKNOWN_KEYS)
def test_unknown_keys_are_named_with_the_valid_ones(tmp_path, text, bad, label, valid):
    message = config_error(tmp_path, text)
    assert f"unknown key {bad} in {label}; valid keys:" in message
    assert valid in message.split("valid keys:")[1]


def test_sigma_section_points_to_theta(tmp_path):
    message = config_error(tmp_path, MODEL + "[model.sigma]\nadd = 0.5\n")
    assert "unknown key 'sigma' in [model]" in message and "[model.theta]" in message


def test_data_options_follow_read_nonmem(tmp_path, monkeypatch):
    """[data.options] keys come from read_nonmem's signature at run time: a keyword
    argument added there is accepted (and passed on) without a change to the CLI."""
    seen = {}

    def reader(source, *, columns=None, weighting: str = "none", cutoff: float = 0.0):
        seen.update(weighting=weighting, cutoff=cutoff)
        return read_nonmem(source, columns=columns)

    monkeypatch.setattr("pmx_jax._config.read_nonmem", reader)
    text = MODEL + f'[data]\npath = "{THEO_CSV}"\n[data.options]\nweighting = "unit"\ncutoff = 1\n'
    load_config(spec(tmp_path, text))
    assert seen == {"weighting": "unit", "cutoff": 1.0}
    message = config_error(tmp_path, text.replace("cutoff = 1", "cutof = 1"))
    assert "'cutof' (did you mean 'cutoff'?) in [data.options]" in message
    assert "weighting" in message and "encoding" not in message
    message = config_error(tmp_path, text.replace("cutoff = 1", 'cutoff = "1"'))
    assert "[data.options] cutoff = '1' must be a number" in message


def test_data_options_are_passed_and_typed(tmp_path):
    text = MODEL + f'[data]\npath = "{THEO_CSV}"\n[data.options]\ncovariates = []\n'
    assert load_config(spec(tmp_path, text)).data.covariate_names == ()
    message = config_error(tmp_path, text.replace("covariates = []", 'covariates = "WT"'))
    assert "[data.options] covariates = 'WT' must be a list of text" in message


def test_simulate_settings_are_checked(tmp_path):
    base = MODEL + REGIMEN + "[simulate.covariates.WT]\n"
    assert "distribution = 'uniform' must be one of normal" in config_error(
        tmp_path, base + 'distribution = "uniform"\n'
    )
    assert "a normal distribution needs sd" in config_error(
        tmp_path, base + 'distribution = "normal"\nmean = 70\n'
    )
    assert "[simulate] n_subjects = 0 must be > 0" in config_error(
        tmp_path, MODEL + REGIMEN + "[simulate]\nn_subjects = 0\n"
    )


def test_simulated_covariates_from_a_config(tmp_path, capsys):
    text = MODEL + REGIMEN + SIMULATED_WT
    code, out, _ = run(
        ["simulate", spec(tmp_path, text), "--n-subjects", 5, "--output", tmp_path], capsys
    )
    assert code == 0 and "simulated 5 subjects" in out


def test_simulation_without_a_design(tmp_path, capsys):
    code, _, err = run(["simulate", spec(tmp_path, MODEL)], capsys)
    assert "needs a [data] or a [regimen] section" in assert_clean_error(code, err)


# -- OMEGA, FIX and bounds take effect --------------------------------------------------


def test_omega_fix_and_bounds_take_effect(tmp_path):
    text = MODEL + (
        'fix = ["tka", "iiv"]\n'
        "[model.theta]\ntcl = 1.2\nadd_sd = 0.5\n"
        "[model.bounds]\ntcl = [-5, 5]\nadd_sd = [0.01, inf]\n"
        "[model.omega]\nka = 0.5\ncl = 0.2\n"
    )
    model = load_config(spec(tmp_path, text)).model
    assert float(model.tcl) == 1.2 and (model.tcl.lower, model.tcl.upper) == (-5.0, 5.0)
    assert float(model.add_sd) == 0.5 and model.add_sd.lower == 0.01
    assert model.add_sd.upper == np.inf
    np.testing.assert_array_equal(model.iiv.matrix, np.diag([0.5, 0.2, 0.1]))
    assert model.tka.fixed and model.iiv.fixed and not model.tcl.fixed
    # what the estimators see: fixed parameters are not estimated
    assert set(model.to_unconstrained()) == {"tcl", "tv", "add_sd"}


def test_omega_block_by_field_name(tmp_path):
    variances = load_config(spec(tmp_path, MODEL + "[model.omega]\niiv = [0.5, 0.4, 0.3]\n"))
    np.testing.assert_array_equal(variances.model.iiv.matrix, np.diag([0.5, 0.4, 0.3]))
    assert variances.model.iiv.diagonal
    # NONMEM's lower triangle, row by row: covariances make it a BLOCK(3)
    text = MODEL + "[model.omega]\niiv = [0.6, 0.05, 0.3, 0.0, 0.01, 0.1]\n"
    block = load_config(spec(tmp_path, text)).model.iiv
    assert not block.diagonal
    np.testing.assert_allclose(
        block.matrix, [[0.6, 0.05, 0.0], [0.05, 0.3, 0.01], [0.0, 0.01, 0.1]]
    )
    text = MODEL + "[model.omega]\niiv = [[0.6, 0.0, 0.0], [0.0, 0.3, 0.0], [0.0, 0.0, 0.1]]\n"
    assert load_config(spec(tmp_path, text)).model.iiv.diagonal  # no covariances: stays diagonal


def test_bad_omega_fix_and_bound_settings(tmp_path):
    message = config_error(tmp_path, MODEL + 'fix = ["tkx"]\n')
    assert "[model] fix: Theophylline has no parameter 'tkx' (did you mean 'tka'?)" in message
    assert "tka, tcl, tv, add_sd, iiv" in message
    message = config_error(tmp_path, MODEL + 'fix = ["cl"]\n')
    assert "'cl' is an eta of OMEGA block 'iiv'" in message and "fix = ['iiv']" in message
    assert "must be a list" in config_error(tmp_path, MODEL + 'fix = "tka"\n')
    message = config_error(tmp_path, MODEL + "[model.bounds]\ntcl = [0]\n")
    assert "[model.bounds] tcl = [0] must be [lower, upper]" in message
    message = config_error(tmp_path, MODEL + "[model.omega]\niiv = [0.1, 0.2]\n")
    assert "[model.omega] iiv must be 3 variances (ka, cl, v)" in message
    message = config_error(tmp_path, MODEL + "[model.omega]\niiv = [0.1, 0.2, 0.3]\ncl = 0.2\n")
    assert "sets both block 'iiv' and its eta 'cl'" in message


def test_bounds_that_exclude_the_initial_estimate(tmp_path):
    path = spec(tmp_path, MODEL + "[model.bounds]\ntcl = [2, 5]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "[model.bounds] tcl:" in str(info.value) and "(2, 5)" in str(info.value)
    assert isinstance(info.value.__cause__, ThetaBoundsError)
    # a new initial estimate inside the new bounds is fine
    text = MODEL + "[model.theta]\ntcl = 3\n[model.bounds]\ntcl = [2, 5]\n"
    assert float(load_config(spec(tmp_path, text)).model.tcl) == 3.0


def test_omega_that_is_not_positive_definite(tmp_path, capsys):
    path = spec(tmp_path, MODEL + "[model.omega]\niiv = [0.1, 0.5, 0.1, 0.0, 0.0, 0.1]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert isinstance(info.value.__cause__, OmegaNotPositiveDefiniteError)
    assert "ka" in str(info.value) and "cl" in str(info.value)
    code, _, err = run(["simulate", path], capsys)
    assert "[model.omega] iiv" in assert_clean_error(code, err)
    message = config_error(tmp_path, MODEL + "[model.omega]\ncl = -0.1\n")
    assert "['cl']" in message


# -- pmx --help, --version --------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "options"),
    [
        ([], ["simulate", "fit", "report", "check", "--version"]),
        (["fit"], ["--method", "--output"]),
        (["simulate"], ["--n-subjects", "--seed", "--output", "--float32"]),
        (["report"], ["--format", "--output", "--time-unit", "--log"]),
        (["check"], ["--columns", "--covariates", "--option", "--model"]),
    ],
)
def test_help_lists_the_options(argv, options, capsys):
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert all(option in out for option in options)


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"pmx {importlib.metadata.version('pmx_jax')}"


# -- pmx check ----------------------------------------------------------------------------


def test_check_prints_what_was_read(capsys):
    code, out, _ = run(["check", PHENO_CSV], capsys)
    assert code == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)
        data = read_nonmem(PHENO_CSV)
    assert f"{data.n_subjects} subjects, {data.n_records} records" in out
    assert f"observations: {data.n_observations}" in out and f"doses: {data.n_doses}" in out
    assert "roles: ID, TIME, AMT, DV" in out and "APGR" in out
    assert data.notes and all(note in out for note in data.notes)


def test_check_with_columns_covariates_and_a_model(tmp_path, capsys):
    table = pd.read_csv(THEO_CSV, dtype=str, keep_default_na=False)
    table.rename(columns={"DV": "conc"}).to_csv(tmp_path / "renamed.csv", index=False)
    argv = ["check", tmp_path / "renamed.csv", "--columns", "conc=DV", "--covariates", "WT"]
    code, out, _ = run([*argv, "--model", "pmx_jax.library:Theophylline"], capsys)
    assert code == 0
    assert "DV=conc" in out and "WT (numeric)" in out
    assert "model Theophylline: compartments (depot, central)" in out


def test_check_shows_dataset_warnings(capsys, monkeypatch):
    def warning_reader(source, **options):
        warnings.warn("EVID 2 record with a DV on row 3: ignored", DatasetWarning, stacklevel=2)
        return read_nonmem(source, **options)

    monkeypatch.setattr("pmx_jax.data.read_nonmem", warning_reader)
    code, out, _ = run(["check", THEO_CSV], capsys)
    assert code == 0 and "warning: EVID 2 record with a DV on row 3: ignored" in out


def test_check_reports_dataset_errors(tmp_path, capsys):
    (tmp_path / "no_time.csv").write_text("ID,DV,AMT\n1,.,100\n1,5,0\n")
    code, _, err = run(["check", tmp_path / "no_time.csv"], capsys)
    assert "TIME" in assert_clean_error(code, err)
    code, _, err = run(["check", tmp_path / "absent.csv"], capsys)
    assert "absent.csv does not exist" in assert_clean_error(code, err)
    code, _, err = run(["check", PHENO_CSV, "--covariates", "WT", "--model",
                        "pmx_jax.library:Phenobarbital"], capsys)  # fmt: skip
    assert "APGR" in assert_clean_error(code, err)
    code, _, err = run(["check", THEO_CSV, "--option", "encodng=latin-1"], capsys)
    assert "'encodng' (did you mean 'encoding'?) in --option" in assert_clean_error(code, err)
    code, _, err = run(["check", THEO_CSV, "--model", "pmx_jax.library:Theophyline"], capsys)
    err = assert_clean_error(code, err)
    assert "--model" in err and "did you mean pmx_jax.library:Theophylline?" in err
    code, _, err = run(["check", THEO_CSV, "--columns", "conc"], capsys)
    assert "--columns 'conc': write NAME=ROLE" in assert_clean_error(code, err)


# -- the top-level handler ----------------------------------------------------------------


def test_os_errors_are_one_line(monkeypatch, capsys):
    def denied(args):
        raise PermissionError(13, "Permission denied", "/data/study.csv")

    monkeypatch.setattr(cli, "_check", denied)
    code, _, err = run(["check", "x.csv"], capsys)
    assert assert_clean_error(code, err) == "pmx: error: Permission denied: /data/study.csv\n"


def test_internal_errors_are_not_hidden(monkeypatch):
    def bug(args):
        raise RuntimeError("an internal bug")

    monkeypatch.setattr(cli, "_check", bug)
    with pytest.raises(RuntimeError, match="an internal bug"):
        main(["check", "x.csv"])


def test_bundled_configs_still_load():
    for path in sorted(CONFIGS.glob("*.toml")):
        config = load_config(path)
        assert config.data is not None or config.regimen is not None, path
