"""What README.md and book/setup.md say the set-up commands do is what they do."""

import importlib.util
import json
import re
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent
MAKEFILE = (ROOT / "Makefile").read_text(encoding="utf-8")
SETUP = (ROOT / "book" / "setup.md").read_text(encoding="utf-8")
README = (ROOT / "README.md").read_text(encoding="utf-8")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _make_variable(name: str) -> str:
    match = re.search(rf"^{name} \?= ?(.*)$", MAKEFILE, re.M)
    assert match, f"Makefile sets no {name}"
    return match.group(1).strip()


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_install_pins_the_torch_that_the_docs_name():
    version = _make_variable("TORCH_VERSION")
    assert '"torch==$(TORCH_VERSION)"' in MAKEFILE
    assert f"`torch=={version}`" in SETUP and f"torch {version}" in README
    # pyproject keeps a range, so that Colab's torch stays
    torch_req = next(d for d in PYPROJECT["project"]["dependencies"] if d.startswith("torch"))
    assert ">=" in torch_req and "==" not in torch_req


def _recipe(target: str) -> str:
    """The first command line of a Makefile target."""
    match = re.search(rf"^{target}:.*\n\t(.*)$", MAKEFILE, re.M)
    assert match, f"Makefile has no {target} target"
    return match.group(1)


def test_make_unit_is_the_fast_lane_and_make_test_runs_every_test():
    assert '-m "not slow"' in _recipe("unit")
    every = _recipe("unit-all")
    assert "-m pytest tests" in every
    assert " -m " not in every.split("pytest tests")[1] and " -k " not in every  # no selection
    assert re.search(r"^test: .*\bunit-all\b", MAKEFILE, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")  # CI: every test
    pytest_options = PYPROJECT["tool"]["pytest"]["ini_options"]
    assert "--strict-markers" in pytest_options["addopts"]  # a misspelt mark is an error
    assert any(m.startswith("slow:") for m in pytest_options["markers"])
    assert "`make unit` runs the fast lane alone, the tests not marked `slow`" in SETUP
    assert "`make unit` (pytest's fast lane: the tests not marked `slow`" in README


def test_the_cpu_index_the_setup_page_offers_reaches_pip():
    assert "$(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))" in MAKEFILE
    assert "make book TORCH_INDEX=https://download.pytorch.org/whl/cpu" in SETUP


def test_the_cell_limit_the_docs_state_is_the_one_make_test_passes():
    timeout = _make_variable("NB_TIMEOUT")
    assert "--timeout $(NB_TIMEOUT)" in MAKEFILE
    assert f"longer than {timeout} s (`NB_TIMEOUT`)" in SETUP
    assert f"({timeout} s per cell at most)" in README


@pytest.mark.parametrize(
    "name, build", [("environment.yml", "cpu"), ("environment-cuda.yml", "gpu")]
)
def test_conda_environments_name_the_torch_build_and_the_pyproject_extras(name, build):
    env = yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))
    deps = env["dependencies"]
    torch_spec = next(d for d in deps if isinstance(d, str) and d.startswith("pytorch"))
    torch_req = next(d for d in PYPROJECT["project"]["dependencies"] if d.startswith("torch"))
    assert torch_spec == f"pytorch-{build}" + torch_req.removeprefix("torch")
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python="))
    minimum = PYPROJECT["project"]["requires-python"].removeprefix(">=")
    assert tuple(map(int, python.split("=")[1].split("."))) >= tuple(map(int, minimum.split(".")))
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    extras = set(re.fullmatch(r'-e "\.\[(.*)\]"', pip[0]).group(1).split(","))
    assert extras == set(PYPROJECT["project"]["optional-dependencies"])
    assert f"-f {name}" in SETUP or name == "environment.yml" and "-f environment.yml" in SETUP


def test_a_rebuild_executes_only_what_changed(tmp_path, monkeypatch):
    runner = _load_script("execute_notebooks")
    ran = []

    def fake_execute(notebook, out, timeout, threads=None):
        ran.append(notebook.name)
        (out / "notebooks" / notebook.name).write_bytes(notebook.read_bytes())
        return True, ""

    monkeypatch.setattr(runner, "_execute", fake_execute)
    monkeypatch.setattr(runner, "package_key", lambda: "package-v1")
    source = tmp_path / "src"
    source.mkdir()
    for name in ("01_a.ipynb", "02_b.ipynb"):
        (source / name).write_text(json.dumps({"cells": [], "name": name}))
    out, args = tmp_path / "executed", ["--out", str(tmp_path / "executed")]
    notebooks = [str(p) for p in sorted(source.glob("*.ipynb"))]

    assert runner.main([*notebooks, *args]) == 0 and sorted(ran) == ["01_a.ipynb", "02_b.ipynb"]
    ran.clear()
    assert runner.main([*notebooks, *args]) == 0 and ran == []  # nothing changed
    (source / "02_b.ipynb").write_text(json.dumps({"cells": [], "edited": True}))
    assert runner.main([*notebooks, *args]) == 0 and ran == ["02_b.ipynb"]
    ran.clear()
    monkeypatch.setattr(runner, "package_key", lambda: "package-v2")  # the package changed
    assert runner.main([*notebooks, *args]) == 0 and sorted(ran) == ["01_a.ipynb", "02_b.ipynb"]
    assert set(json.loads((out / runner.STAMPS).read_text())) == {"01_a.ipynb", "02_b.ipynb"}


def test_a_chapter_edited_during_the_build_is_recorded_as_executed(tmp_path, monkeypatch):
    runner = _load_script("execute_notebooks")
    source = tmp_path / "src"
    source.mkdir()
    first, second = source / "01_a.ipynb", source / "02_b.ipynb"
    for path in (first, second):
        path.write_text(json.dumps({"cells": [], "name": path.name}))
    ran = []

    def fake_execute(notebook, out, timeout, threads=None):
        ran.append(notebook.name)
        if notebook == first:  # someone edits chapter 02 while chapter 01 runs
            second.write_text(json.dumps({"cells": [], "edited": True}))
        (out / "notebooks" / notebook.name).write_bytes(notebook.read_bytes())
        return True, ""

    monkeypatch.setattr(runner, "_execute", fake_execute)
    monkeypatch.setattr(runner, "package_key", lambda: "package")
    args = [str(first), str(second), "--out", str(tmp_path / "executed"), "--jobs", "1"]
    assert runner.main(args) == 0 and ran == ["01_a.ipynb", "02_b.ipynb"]
    ran.clear()
    assert runner.main(args) == 0 and ran == []  # 02 ran in its edited form: nothing to redo


def test_a_failed_notebook_is_not_recorded_and_runs_again(tmp_path, monkeypatch):
    runner = _load_script("execute_notebooks")
    monkeypatch.setattr(
        runner, "_execute", lambda notebook, out, timeout, threads=None: (False, "boom")
    )
    monkeypatch.setattr(runner, "package_key", lambda: "package")
    notebook = tmp_path / "01_a.ipynb"
    notebook.write_text("{}")
    args = [str(notebook), "--out", str(tmp_path / "executed")]
    assert runner.main(args) == 1
    assert json.loads((tmp_path / "executed" / runner.STAMPS).read_text()) == {}


def test_package_key_changes_with_any_package_file(tmp_path):
    runner = _load_script("execute_notebooks")
    (tmp_path / "genai_course").mkdir()
    (tmp_path / "genai_course" / "a.py").write_text("x = 1\n")
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    before = runner.package_key(tmp_path)
    (tmp_path / "genai_course" / "a.py").write_text("x = 2\n")
    assert runner.package_key(tmp_path) != before


def test_every_notebook_cell_has_an_id_and_no_outputs():
    # nbformat 4.5 requires cell ids (a missing one is a warning today, an error later); the
    # notebooks in git carry no outputs (the executed copy keeps them)
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        ids = [cell.get("id") for cell in nb["cells"]]
        assert all(ids), f"{path.name}: cell {ids.index(None)} has no id"
        assert len(set(ids)) == len(ids), f"{path.name}: duplicate cell ids"
        for i, cell in enumerate(nb["cells"]):
            assert not cell.get("outputs"), f"{path.name}: cell {i} has outputs"
