"""The labelled page sets the detector benchmarks score on, and how they write their reports.

* ``validation``: the page-disjoint validation pages of documents_tobacco800;
* ``generated``: docsynth pages from seeds no training run used (page seed 5000,
  signature-pool seed 9), a second held-out set that costs no real page.
"""

from __future__ import annotations

import json
from pathlib import Path

from training import detector_data as DD
from training.train_detector import signature_pool, synthetic_pages

GENERATED_PAGE_SEED, GENERATED_POOL_SEED = 5000, 9


def page_sets(targs, generated: int) -> dict[str, list]:
    """{set name: [(gray page, true boxes)]} for ``train_rescorer.parse_args`` options ``targs``
    (data root, page style, pool size); ``generated`` 0 leaves the generated set out."""
    sets = {"validation": DD.load_pages(targs.data, DD.split_documents(targs.data)[1])}
    if generated:
        pool = signature_pool(type(targs)(**{**vars(targs), "seed": GENERATED_POOL_SEED}))
        sets["generated"] = synthetic_pages(targs, pool, generated, GENERATED_PAGE_SEED)
    return sets


def write_report(report: dict, out: Path | None) -> str:
    """The report as indented JSON, written to ``out`` if given, and printed."""
    text = json.dumps(report, indent=1)
    if out:
        Path(out).write_text(text + "\n")
    print(text)
    return text
