"""Use a student: `kdagent serve` hands it to `transformers serve` (an OpenAI-compatible server; kdagent keeps
no server of its own), `kdagent chat` holds a conversation with it in the terminal."""

import shutil
import sys
from pathlib import Path

from kdagent.errors import UserError


def model_folder(target: str) -> Path:
    """A run directory's final student, or any model name `resolve_model` takes (alias, folder, Hub id)."""
    from kdagent.models import resolve_model

    path = Path(target).expanduser()
    is_run = (path / "metrics.json").is_file() or (path / "recipe.yaml").is_file()
    if is_run and not (path / "config.json").is_file():
        from kdagent.modelcard import final_student

        if not (path / "metrics.json").is_file():
            raise UserError(
                f"{target}: a run directory that has no metrics.json yet (its baseline has not finished): "
                "wait for its first round, or name a model"
            )
        student = final_student(path)
        if student is None:
            raise UserError(
                f"{target}: this run kept no student of its own (no finished round, or the gate kept the base model)"
            )
        return student.resolve()
    return resolve_model(target)


def serve_argv(folder: Path, host: str, port: int, device: str | None, extra: list[str]) -> list[str]:
    """The `transformers serve` command line that serves `folder` alone."""
    exe = Path(sys.executable).with_name("transformers")
    found = str(exe) if exe.exists() else shutil.which("transformers")
    if not found:
        raise UserError("`transformers serve` is not installed: pip install 'transformers[serving]'")
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UserError("`transformers serve` needs FastAPI and Uvicorn: pip install 'transformers[serving]'") from None
    argv = [found, "serve", str(folder), "--host", host, "--port", str(port)]
    return argv + (["--device", device] if device else []) + list(extra)


def chat(
    folder: Path,
    system: str | None,
    max_new_tokens: int,
    temperature: float,
    device: str | None,
    read=input,
    write=None,
) -> None:
    """A conversation on the terminal: each line is a user turn; /reset forgets the conversation, /exit (or
    end of input) leaves. The reply streams as it is generated."""
    import torch
    from transformers import TextStreamer
    from transformers.utils import logging as hf_logging

    from kdagent.generation.engine import load_causal_lm

    write = write or (lambda text: print(text, end="", flush=True))
    hf_logging.disable_progress_bar()  # a bar for loading the weights is noise in a conversation
    model, tokenizer = load_causal_lm(folder, device)
    if not tokenizer.chat_template:
        raise UserError(
            f"{folder}: the tokenizer has no chat template, so it cannot hold a conversation (a base model?)"
        )
    start = [{"role": "system", "content": system}] if system else []
    history = list(start)
    write(f"chatting with {folder}; /reset starts over, /exit or Ctrl-D leaves\n")
    while True:
        try:
            line = read("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            write("\n")
            return
        if line in ("/exit", "/quit"):
            return
        if line == "/reset":
            history = list(start)
            continue
        if not line:
            continue
        history.append({"role": "user", "content": line})
        inputs = tokenizer.apply_chat_template(
            history, add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(model.device)
        write("model> ")
        sampling = (
            dict(do_sample=True, temperature=temperature, top_p=0.95) if temperature > 0 else dict(do_sample=False)
        )
        with torch.no_grad():
            out = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                streamer=TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True),
                **sampling,
            )
        reply = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        history.append({"role": "assistant", "content": reply})
