"""The suite relies on `--dist loadgroup` keeping each `xdist_group` on one worker (real
buildah builds share storage; crash and outage tests share a server). pytest 9.2's
structured node ids made xdist 3.8 drop the groups without a word
(pytest-dev/pytest-xdist#1386); this notices if an upgrade does that again."""

from __future__ import annotations

import pytest

GROUP = "grouping-check"


@pytest.mark.xdist_group(GROUP)
def test_loadgroup_keeps_marked_tests_together(request: pytest.FixtureRequest) -> None:
    if not request.config.getvalue("loadgroup"):
        pytest.skip("only meaningful in an xdist worker under --dist loadgroup")
    # xdist's worker marks a grouped test by its node id; the scheduler groups by that suffix.
    assert request.node.nodeid.endswith(f"@{GROUP}")
