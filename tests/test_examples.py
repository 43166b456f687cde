"""Every script in examples/ runs, with tiny settings, and says something true."""

import importlib.util
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_virtual_trial_runs_and_higher_doses_raise_exposure():
    results = _load("virtual_trial").main(n=60, seed=1)
    assert set(results) == {400, 600, 800}
    assert all(0.0 <= a <= 1.0 and 0.0 <= b <= 1.0 for a, b, _ in results.values())
    peaks = [results[d][2] for d in (400, 600, 800)]
    # linear kinetics: median peak proportional to dose (same virtual patients)
    assert abs(peaks[1] / peaks[0] - 1.5) < 0.02 and abs(peaks[2] / peaks[0] - 2.0) < 0.02


def test_custom_ode_model_reduces_to_linear_elimination():
    # C << KM: MM elimination VM*C/(KM+C) ~ (VM/KM)*C, relative gap ~ C/KM < 1%.
    assert _load("custom_ode_model").main() < 0.01


def test_every_example_is_tested():
    scripts = {p.stem for p in EXAMPLES.glob("*.py")}
    tested = {"virtual_trial", "custom_ode_model"}
    assert scripts == tested, f"examples without a test: {scripts - tested}"
