"""`kdagent push RUN_DIR REPO`: the run's final student and its model card to the Hugging Face Hub, through
huggingface_hub's own upload. `--dry-run` writes what would be uploaded instead, and touches no network."""

import json
import re
from pathlib import Path

from kdagent.errors import UserError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
SKIPPED = {".gitattributes"}
NETWORK_MODULES = {"httpx", "httpx2", "httpcore", "requests", "urllib3", "socket", "ssl"}


def push_plan(run_dir: Path, repo: str, private: bool) -> dict:
    """The student folder (its model card written afresh), the files that would go up, and the commit message."""
    from kdagent.modelcard import final_student, write_model_card

    if not REPO_ID.match(repo):
        raise UserError(f"repository {repo!r}: expected a Hub id, owner/name")
    if not (Path(run_dir) / "metrics.json").is_file():
        raise UserError(f"{run_dir}: no metrics.json there; is it a kdagent run directory?")
    student = final_student(run_dir)
    if student is None:
        raise UserError(
            f"{run_dir}: this run kept no student of its own (no finished round, or the gate kept the base model): nothing to push"
        )
    write_model_card(run_dir)
    files = sorted(
        p
        for p in student.rglob("*")
        if p.is_file()
        and p.name not in SKIPPED
        and not any(part.startswith(".") for part in p.relative_to(student).parts)
    )
    return {
        "repo_id": repo,
        "repo_type": "model",
        "private": private,
        "folder": str(student),
        "files": [{"path": str(p.relative_to(student)), "bytes": p.stat().st_size} for p in files],
        "commit_message": f"kdagent student from {Path(run_dir).name}",
    }


def push(
    run_dir: Path, repo: str, private: bool = False, dry_run: Path | None = None, token: str | None = None
) -> dict:
    """Upload (or, with `dry_run`, write `upload.json` and the model card there). Returns the plan, with the
    commit's URL once uploaded."""
    plan = push_plan(Path(run_dir), repo, private)
    if dry_run is not None:
        dry_run = Path(dry_run)
        dry_run.mkdir(parents=True, exist_ok=True)
        (dry_run / "upload.json").write_text(json.dumps(plan, indent=2) + "\n")
        (dry_run / "README.md").write_text((Path(plan["folder"]) / "README.md").read_text())
        return plan
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    api = HfApi(token=token)
    try:
        api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo,
            repo_type="model",
            folder_path=plan["folder"],
            commit_message=plan["commit_message"],
            allow_patterns=[f["path"] for f in plan["files"]],
        )
    except OfflineModeIsEnabled:
        raise UserError("push: HF_HUB_OFFLINE=1 is set in the environment; unset it to upload") from None
    except HfHubHTTPError as exc:
        raise UserError(
            f"push to {repo} failed: {str(exc).splitlines()[0]} (logged in? `hf auth login`, or HF_TOKEN)"
        ) from None
    except Exception as exc:  # the network: the HTTP client's own errors (httpx, httpcore...), or the socket's
        if not (isinstance(exc, OSError) or type(exc).__module__.split(".")[0] in NETWORK_MODULES):
            raise
        raise UserError(
            f"push to {repo} failed: cannot reach the Hub ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    return {**plan, "url": str(getattr(info, "commit_url", info))}
