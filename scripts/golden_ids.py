"""Record (or check) the ids of every committed campaign: trial ids, unit ids and the digest
of the canonical spec a store keeps (``_campaigns/<name>/spec.json``). A store written before
a change to the spec code resumes only if all three are unchanged.

    .venv/bin/python scripts/golden_ids.py --write tests/golden_ids.json   # record
    .venv/bin/python scripts/golden_ids.py                                  # print

The dataset roots of the paper-scale campaigns enter their ids (``data.root``), so they are
fixed strings here (``GOLDEN_ROOTS``); the data checks are skipped (the files need not exist).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
GOLDEN_ROOTS = {"MNIST_ROOT": "/data/mnist", "CIFAR10_ROOT": "/data/cifar10"}


def golden_ids() -> dict:
    from orchestrator.plan import make_plan
    from orchestrator.spec import load_campaign, spec_record, stable_hash

    os.environ.update(GOLDEN_ROOTS)
    out = {}
    for path in sorted((REPO / "campaigns").glob("*.yaml")) + sorted((REPO / "tests" / "golden_specs").glob("*.yaml")):
        c = load_campaign(path, data_check=False)
        out[path.name] = {
            "spec": stable_hash(spec_record(c), 64),
            "trials": [cell.trial_id for cell in c.cells],
            "units": list(make_plan(c).units),
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", type=Path, default=None, help="write the ids to this JSON file")
    a = p.parse_args()
    ids = golden_ids()
    text = json.dumps(ids, indent=1, sort_keys=True) + "\n"
    if a.write:
        a.write.write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
