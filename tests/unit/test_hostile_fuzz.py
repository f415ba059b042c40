"""Generated hostile specs and repository layouts (tests/hostile.py): for each, gen exits 0 or 2
(1 for a stale `render --check`), prints no traceback and nothing of the files outside the
project, writes nothing outside it, leaves output/ as it was when it fails, and stays within
bounds of time and memory. The long run (10,000 cases, 2 s and 200 MB each) is
`python -m tests.hostile`; here a few hundred, with bounds loose enough for a loaded CI machine
that still catch what used to run away (77 s and 2.5 GB for an alias bomb)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from tests.hostile import BASE_FIELDS, Case, cases, problems_of, run_isolated, warm_up


@pytest.fixture(scope="module", autouse=True)
def _warm():
    warm_up()  # forked cases then time only their own work


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(cases())
def test_no_hostile_spec_or_layout_escapes_the_project(case: Case):
    outcome = run_isolated(case, hang_seconds=60)
    assert problems_of(outcome, seconds_limit=20, memory_limit_mb=200) == [], (case, outcome.stderr[-2000:])


def test_the_fuzz_harness_sees_a_write_outside_the_project(monkeypatch, tmp_path):
    """The harness itself can fail: a gen that wrote through a link would be caught."""
    import generator.render as render

    original = render.OutputWriter.finish

    def careless(self):
        (self.staging.parent.parent / "outside" / "dir" / "precious").write_text("overwritten\n")
        return original(self)

    monkeypatch.setattr(render.OutputWriter, "finish", careless)
    outcome = run_isolated(Case(dict(BASE_FIELDS), [], ("render",)))
    assert outcome.problems == ["something outside the project changed"]
