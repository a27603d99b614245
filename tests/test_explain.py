"""`kdagent validate --explain`: every field's description as a comment above its value, and the output is
itself a recipe that resolves to the same thing."""

from conftest import REPO, run_cli
from kdagent.recipe import Recipe


def test_explain_comments_every_field_and_round_trips(tmp_path):
    recipe = REPO / "recipes" / "mixed.yaml"
    explained = run_cli("validate", str(recipe), "--explain")
    assert explained.returncode == 0, explained.stderr
    text = explained.stdout
    first = " ".join(Recipe.model_fields["seed"].description.split())
    assert f"# {first}\nseed:" in text
    assert "  # Peak learning rate.\n  learning_rate:" in text
    (tmp_path / "again.yaml").write_text(text)
    assert run_cli("validate", str(tmp_path / "again.yaml")).stdout == run_cli("validate", str(recipe)).stdout
