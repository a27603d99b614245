"""The run report and the model card: a tiny real run through the Python API writes both; the report opens in
headless Chromium, where its plots must decode and draw, and its tables must be filled."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import run_cli

PROBE = """<script>
window.addEventListener("load", () => {
  const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top + window.scrollY, r.width, r.height]; };
  const out = {
    height: document.documentElement.scrollHeight,
    images: [...document.querySelectorAll("img.plot")].map(e => ({alt: e.alt, natural: e.naturalWidth, box: box(e)})),
    tables: [...document.querySelectorAll("table")].map(e => ({cls: e.className, cells: [...e.querySelectorAll("td")].filter(td => td.textContent.trim()).length, box: box(e)})),
  };
  const pre = document.createElement("pre"); pre.id = "probe"; pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
});
</script>"""


def tiny_recipe(model_dir) -> dict:
    return {
        "name": "tiny-report",
        "seed": 1,
        "student": {"model": str(model_dir), "max_length": 256},
        "teacher": {"kind": "self", "samples": 2, "temperature": 1.0, "max_new_tokens": 8, "batch_size": 4},
        "domain": {"name": "arithmetic", "seed_tasks": 4, "eval_tasks": 3, "options": {"corpus_examples": 5}},
        "skills": ["cot"],
        "retrieval": {"top_k": 1},
        "feedback": {"fallback_to_reference": True},
        "update": {"epochs": 1, "batch_size": 2, "learning_rate": 1e-3},
        "evaluation": {"max_new_tokens": 8, "skill_tasks": 0},
    }


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_model_dir):
    """`kdagent run` on the tiny model, its output captured (not a terminal)."""
    base = tmp_path_factory.mktemp("report")
    (base / "tiny.yaml").write_text(yaml.safe_dump(tiny_recipe(tiny_model_dir)))
    result = run_cli("run", str(base / "tiny.yaml"), "--run-dir", str(base / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    return base / "run", json.loads((base / "run" / "metrics.json").read_text()), result


def chromium() -> str:
    """Debian's chromium, installed here when it is missing and apt-get can (root); else the test skips."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "chromium"],
            capture_output=True,
            timeout=900,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        if shutil.which("chromium"):
            return shutil.which("chromium")
    pytest.skip("no Chromium: install Debian's `chromium` (apt-get install chromium) to check the report in a browser")


def browse(exe: str, page: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--virtual-time-budget=5000",
            "--force-device-scale-factor=1",
            *args,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_run_writes_report_and_model_card_and_plain_lines(tiny_run):
    run_dir, metrics, result = tiny_run
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["report"] == str(run_dir / "report.html") and summary["model_card"].endswith(
        "round-01/student/README.md"
    )
    assert (
        "\r" not in result.stderr and "{'loss'" not in result.stderr and "FutureWarning" not in result.stderr
    )  # a log, not a terminal
    assert "[kdagent] round 1: update (sft): step 2/2, loss" in result.stderr
    html = (run_dir / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') >= 4  # scores, losses, funnel, time, memory: no outside file
    assert not re.search(r'(src|href)="(?!data:)', html)
    card = (run_dir / "round-01" / "student" / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: transformers" in card
    assert "| baseline | held-out | 3 |" in card and "| round 1 | held-out | 3 |" in card
    assert f"| 1 | 4 | {metrics['rounds'][0]['counts']['generations']} |" in card and "provenance" in card
    assert "name: tiny-report" in card  # the recipe


def test_report_renders_in_chromium(tiny_run, tmp_path):
    from PIL import Image

    exe = chromium()
    run_dir, _, _ = tiny_run
    page = tmp_path / "probe.html"
    page.write_text((run_dir / "report.html").read_text().replace("</body>", PROBE + "</body>"))
    dom = browse(exe, page, "--dump-dom")
    probe = json.loads(re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S).group(1).replace("&quot;", '"'))
    assert len(probe["images"]) >= 4 and all(img["natural"] > 0 for img in probe["images"]), probe["images"]  # decoded
    shot = tmp_path / "shot.png"
    browse(exe, page, f"--window-size=1100,{int(probe['height']) + 50}", f"--screenshot={shot}")
    image = Image.open(shot).convert("L")

    def ink(box) -> float:
        left, top, width, height = (int(v) for v in box)
        region = image.crop((left, top, left + width, top + height))
        return sum(region.histogram()[:200]) / max(1, width * height)

    for img in probe["images"]:  # axes, bars, lines and labels: a blank or broken image has none
        assert ink(img["box"]) > 0.02, f"plot {img['alt']!r} looks blank in the screenshot"
    tables = {t["cls"]: t for t in probe["tables"]}
    for name in ("scores", "funnel", "drops", "resources", "sample kept", "sample rejected"):
        assert tables[name]["cells"] >= 3, f"table {name} is empty"
        assert ink(tables[name]["box"]) > 0.01, f"table {name} drew nothing"


def test_report_command(tiny_run, tmp_path):
    run_dir, _, _ = tiny_run
    out = tmp_path / "again.html"
    result = run_cli("report", str(run_dir), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_text().startswith("<!DOCTYPE html>")
    missing = run_cli("report", str(tmp_path))
    assert missing.returncode == 2 and "no metrics.json" in missing.stderr


def test_report_of_a_run_that_has_finished_only_its_baseline(tmp_path):
    from kdagent.report import write_report

    (tmp_path / "recipe.yaml").write_text("name: started\n")
    (tmp_path / "metrics.json").write_text(json.dumps({"baseline": {"n": 4, "accuracy": 0.25}, "rounds": []}))
    html = Path(write_report(tmp_path)).read_text()
    assert "no round has finished yet" in html and '<img class="plot"' in html  # the baseline's scores plotted
