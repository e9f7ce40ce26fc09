"""The typed-figures check: numbers in prose are found, maths, code, roles and allowed passages are not."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location(
    "check_typed_figures", ROOT / "scripts" / "check_typed_figures.py"
)
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)


def _notebook(tmp_path: Path, markdown: str) -> Path:
    path = tmp_path / "99_example.ipynb"
    cell = {"cell_type": "markdown", "metadata": {}, "source": [markdown]}
    path.write_text(
        json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    )
    return path


def test_typed_results_are_found(tmp_path):
    path = _notebook(
        tmp_path, "The loss falls to 0.25; accuracy 97%, 1.5x faster, in 12 s and 86 nats."
    )
    figures = [figure for _, figure, _ in check.typed_figures(path, [])]
    assert figures == ["0.25", "97%", "1.5x", "12 s", "86 nats"]


def test_maths_code_roles_and_allowed_passages_are_skipped(tmp_path):
    markdown = (
        "With $\\beta = 0.5$, `lr=3e-3`, {cite}`ho2020ddpm` and {glue:text}`loss:.3f`,\n"
        "$$ p = 0.5 $$\nchance is 10% and 2,000 steps; see [fig](a/0.5.png)."
    )
    path = _notebook(tmp_path, markdown)
    assert [f for _, f, _ in check.typed_figures(path, [])] == ["10%"]
    assert check.typed_figures(path, [("99_", "chance is 10%")]) == []
    assert check.typed_figures(path, [("98_", "chance is 10%")]) != []


def test_bad_allow_list_line_names_the_format(tmp_path):
    path = tmp_path / "allow.txt"
    path.write_text("05_vq_vae without a separator\n")
    try:
        check.load_allow_list(path)
    except SystemExit as error:
        assert "<notebook prefix> | <passage>" in str(error)
    else:
        raise AssertionError("a malformed line was accepted")
