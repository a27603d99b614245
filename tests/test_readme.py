"""The README is for a new user: the two set-up commands first, short, no dated history, the results markers
that benchmarks/distill_quality.py fills, every command of the CLI listed, and links that resolve."""

import re

from conftest import REPO

README = (REPO / "README.md").read_text()


def test_the_readme_opens_with_the_two_make_commands():
    first_block = README.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert first_block[0].startswith("make demo") and first_block[1].startswith("make test")


def test_the_readme_is_short_and_holds_no_dated_history():
    assert len(README.splitlines()) <= 205  # about 200, the generated results table included
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", README), "dates belong in CHANGELOG.md or docs/benchmarks.md"
    for phrase in ("earlier session", "before the", "the same morning"):
        assert phrase not in README.lower(), phrase


def test_the_results_markers_stand_on_their_own_lines():
    lines = README.splitlines()
    assert lines.count("<!-- results -->") == 1 and lines.count("<!-- /results -->") == 1
    assert lines.index("<!-- results -->") < lines.index("<!-- /results -->")
    before = README.split("<!-- results -->")[0]
    assert "benchmarks/distill_quality.py --budget medium" in before.split("## Results", 1)[1]


def test_every_command_of_the_cli_is_in_the_readme():
    from kdagent.cli import cli

    block = README.split("## Command line", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    listed = {line.split()[1] for line in block.splitlines() if line.startswith("kdagent ")}
    assert listed == set(cli.commands), f"README lists {sorted(listed)}, the CLI has {sorted(cli.commands)}"


def test_the_readme_links_resolve():
    for target in re.findall(r"\]\(([^)#]+)", README):
        if not target.startswith("http"):
            assert (REPO / target).exists(), target
