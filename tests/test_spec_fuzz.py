"""Property-based tests of the bad-input rules, through the real ``lth validate`` CLI.

The mutation fuzz test changes valid campaigns the ways a user's file goes wrong (keys deleted,
values of the wrong type, random bytes, huge and non-finite numbers, long strings, deep nesting):
every mutant is either valid or refused with exit 1 and a message, never a traceback. The
per-category properties show each rule holds for generated inputs of its kind, not only for the
examples in tests/bad_specs/. Derandomized: CI runs the same examples every time.
"""

from __future__ import annotations

import copy
import datetime
import math
import os
import tempfile

import pytest
import ray
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.cli import main
from orchestrator.spec_yaml import MAX_NODES
from trainers.datasets import DATASETS
from trainers.models import MODELS

pytestmark = pytest.mark.timeout(600)  # a hang guard only: an example takes ~10 ms in a warm process

FUZZ_EXAMPLES = 400
PROPERTY_EXAMPLES = 40
SETTINGS = dict(derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VALID = [
    {"name": "a", "data": {"dataset": "digits", "val_size": 100}, "model": {"arch": "mlp", "options": {"widths": [16]}},
     "train": {"lr": 0.1, "epochs": 2, "milestones": [1], "batch_size": 64, "weight_decay": 0.0001},
     "prune": {"rate": 0.5, "levels": 2, "layer_rates": {"out.weight": 0.1}},
     "seeds": [0, 1], "resets": ["rewind", "reinit"], "grid": {"lr": [0.1, 0.01], "structure": ["unstructured"]}},
    {"name": "b", "data": {"dataset": "teacher_student", "options": {"input_dim": 4, "widths": [3, 2], "n_train": 64}},
     "model": {"arch": "student_mlp", "options": {"teacher_widths": [3, 2], "multiplier": 2}},
     "train": {"iterations": 20, "warmup_iterations": 5, "schedule": "cosine"},
     "prune": {"density": 0.1, "levels": 3}, "seed": 0, "resets": ["rewind@2", "reinit"],
     "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0.5}, "grid": {"train.gamma": [0.1, 0.5]}},
]


def validate(text: str | bytes, *args: str):
    with tempfile.NamedTemporaryFile("wb", suffix=".yaml", delete=False) as f:
        f.write(text.encode() if isinstance(text, str) else text)
    try:
        return CliRunner().invoke(main, ["validate", *args, f.name])
    finally:
        os.unlink(f.name)


def assert_valid_or_refused(result) -> None:
    assert result.exit_code in (0, 1), (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output, result.output
    if result.exit_code == 1:
        assert result.output.startswith("Error: ") and "invalid campaign spec\n  " in result.output, result.output
    assert not ray.is_initialized()


def paths(tree, prefix=()):
    """Every (path, value) in a tree of dicts and lists, the root excluded."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for k, v in items:
        yield (*prefix, k), v
        yield from paths(v, (*prefix, k))


def setp(tree, path, value):
    for k in path[:-1]:
        tree = tree[k]
    tree[path[-1]] = value


def delp(tree, path):
    for k in path[:-1]:
        tree = tree[k]
    del tree[path[-1]]


def key_path(path) -> str:
    out = ""
    for k in path:
        out += f"[{k}]" if isinstance(k, int) else (f".{k}" if out else k)
    return out


def nested(depth: int):
    v = 1
    for _ in range(depth):
        v = [v]
    return v


weird_values = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30), st.just(10**400), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30), st.just("x" * 100_000), st.booleans(), st.none(),
    st.lists(st.integers(min_value=-5, max_value=5), max_size=4), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.integers(min_value=1, max_value=80).map(nested),
)


@st.composite
def mutants(draw):
    spec = copy.deepcopy(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        all_paths = [p for p, _ in paths(spec)]
        op = draw(st.sampled_from(["delete", "replace", "insert"]))
        if op == "delete" and all_paths:
            delp(spec, draw(st.sampled_from(all_paths)))
        elif op == "replace" and all_paths:
            setp(spec, draw(st.sampled_from(all_paths)), draw(weird_values))
        else:
            dicts = [spec] + [v for _, v in paths(spec) if isinstance(v, dict)]
            draw(st.sampled_from(dicts))[draw(st.text(min_size=1, max_size=12))] = draw(weird_values)
    text = yaml.safe_dump(spec, allow_unicode=True).encode()
    if draw(st.booleans()):  # random bytes at a random place
        at = draw(st.integers(min_value=0, max_value=len(text)))
        text = text[:at] + draw(st.binary(min_size=1, max_size=8)) + text[at:]
    return text


# The bound, 2 s per mutant, as a deadline: an example takes ~10 ms in this warm process, so
# only a hang or a blow-up (an expansion, a huge grid) reaches it. A fresh `lth validate` adds its
# imports; benchmarks/bench_bad_specs.py measures those per refusal.
@settings(max_examples=FUZZ_EXAMPLES, **{**SETTINGS, "deadline": datetime.timedelta(seconds=2)})
@given(mutants())
def test_every_mutant_is_valid_or_refused_without_a_traceback(text):
    assert_valid_or_refused(validate(text, "--no-data-check"))


def test_the_valid_campaigns_are_valid():
    for spec in VALID:
        result = validate(yaml.safe_dump(spec))
        assert result.exit_code == 0, result.output


FLOAT_PATHS = [(i, p) for i, spec in enumerate(VALID) for p, v in paths(spec) if isinstance(v, float)]


@settings(max_examples=PROPERTY_EXAMPLES, **SETTINGS)
@given(st.sampled_from(FLOAT_PATHS), st.sampled_from([math.inf, -math.inf, math.nan, 10**400]))
def test_a_non_finite_number_anywhere_is_refused_at_its_key_path(where, bad):
    i, path = where
    spec = copy.deepcopy(VALID[i])
    setp(spec, path, bad)
    result = validate(yaml.safe_dump(spec))
    assert result.exit_code == 1, result.output
    assert f"  {key_path(path)}: expected a finite number" in result.output, result.output


AXES = {"seeds": [0, 1, 2], "resets": ["rewind", "reinit", "finetune"], "grid.lr": [0.1, 0.01, 0.05],
        "grid.structure": ["unstructured", "structured"], "grid.train.epochs": [1, 2, 3],
        "grid.model.options.widths": [[8], [8, 8], [16]]}


@settings(max_examples=PROPERTY_EXAMPLES, **SETTINGS)
@given(st.sampled_from(sorted(AXES)), st.data())
def test_a_duplicate_in_any_axis_is_refused_naming_both_places(axis, data):
    values = list(AXES[axis])
    i = data.draw(st.integers(min_value=0, max_value=len(values) - 1))
    j = data.draw(st.integers(min_value=i + 1, max_value=len(values)))
    values.insert(j, values[i])
    spec = {"name": "d", "data": {"dataset": "digits"}, "model": {"arch": "mlp"}, "train": {"epochs": 1},
            "prune": {"levels": 1}, "grid": {}}
    for name, vals in AXES.items():
        v = values if name == axis else vals[:1]
        if name.startswith("grid."):
            spec["grid"][name.removeprefix("grid.")] = v
        else:
            spec[name] = v
    result = validate(yaml.safe_dump(spec))
    assert result.exit_code == 1, result.output
    assert f"  {axis}[{j}]: duplicate value" in result.output and f"same as {axis}[{i}]" in result.output, result.output


@settings(max_examples=PROPERTY_EXAMPLES, **SETTINGS)
@given(st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=3), st.data())
def test_a_grid_above_max_cells_is_refused_from_its_axis_lengths(lengths, data):
    n = math.prod(lengths)
    limit = data.draw(st.integers(min_value=1, max_value=max(1, n - 1)))
    names = ["train.epochs", "prune.levels", "train.batch_size"][: len(lengths)]
    grid = {name: list(range(1, k + 1)) for name, k in zip(names, lengths)}
    spec = {"name": "g", "data": {"dataset": "digits"}, "model": {"arch": "mlp"}, "grid": grid}
    result = validate(yaml.safe_dump(spec), "--max-cells", str(limit))
    if n > limit:
        assert result.exit_code == 1, result.output
        assert f"  grid: {n:,} cells = " in result.output and f"above max_cells = {limit:,}" in result.output
    else:  # a single cell under a limit of 1
        assert result.exit_code == 0, result.output


@settings(max_examples=PROPERTY_EXAMPLES, **SETTINGS)
@given(st.integers(min_value=2, max_value=12), st.data())
def test_alias_expansion_above_the_bound_is_refused(fanout, data):
    depth = data.draw(st.integers(min_value=math.ceil(math.log(MAX_NODES + 1, fanout)), max_value=20))
    lines = ["name: bomb", "data:", "  dataset: digits", "  options:", "    a0: &a0 [1]"]
    for i in range(1, depth + 1):
        lines.append(f"    a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fanout) + "]")
    lines.append("model: {arch: mlp}")
    result = validate("\n".join(lines) + "\n")
    assert result.exit_code == 1, result.output
    assert "  data.options.a" in result.output and f"expands to more than {MAX_NODES:,} values" in result.output


ENTRIES = [("data", name) for name in sorted(DATASETS)] + [("model", name) for name in sorted(MODELS)]


@settings(max_examples=PROPERTY_EXAMPLES, **SETTINGS)
@given(st.sampled_from(ENTRIES), st.from_regex(r"[a-z][a-z_]{0,14}", fullmatch=True))
def test_an_undeclared_option_of_any_entry_is_refused(entry, key):
    section, name = entry
    registry = DATASETS if section == "data" else MODELS
    if key in registry.options[name].__dataclass_fields__:
        return  # a declared option: nothing to refuse
    spec = {"name": "o", "data": {"dataset": "digits"}, "model": {"arch": "mlp"}}
    spec[section] = {("dataset" if section == "data" else "arch"): name, "options": {key: 1}}
    if section == "data" and name in ("mnist", "cifar10"):
        spec["data"]["root"] = "/nonexistent"
    result = validate(yaml.safe_dump(spec), "--no-data-check")
    assert result.exit_code == 1, result.output
    assert f"  {section}.options.{key}: unknown option of {registry.kind} {name!r}" in result.output, result.output
