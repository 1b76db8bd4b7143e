"""The console progress bar the ingestion and video CLIs share: rate and ETA on stderr, nothing before work starts."""

from __future__ import annotations

import re

from cluster.progress import ConsoleProgress


def test_bar_shows_count_rate_and_eta_only_once_work_is_reported(capsys):
    with ConsoleProgress("ingest", unit="doc"):
        pass
    assert capsys.readouterr().err == ""  # a command that fails before any progress prints only its error
    with ConsoleProgress("ingest", unit="doc") as bar:
        for i in range(1, 4):
            bar.count(i, 4, f"page{i}.html")
    err = capsys.readouterr().err
    assert "ingest:" in err and "3/4" in err and "page3.html" in err
    assert re.search(r"doc/s", err) and re.search(r"<\d\d:\d\d", err)  # the rate and the time left
    with ConsoleProgress("video ingest", unit="%") as bar:
        bar.fraction(0.5, "segment 4/8")
        bar.fraction(1.7)  # clamped
    err = capsys.readouterr().err
    assert "50/100" in err and "100/100" in err
