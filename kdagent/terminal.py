"""What a run shows on the terminal. On a terminal: one labelled bar per stage (training's with its loss) and a
line per stage and round. Not on a terminal (a log file, CI): plain lines, no carriage returns. `--quiet`:
no bars, no library chatter, only kdagent's own lines, warnings and errors.

`configure` is called by the command line before anything heavy loads (the libraries read these switches from
the environment); `trainer_callback` replaces transformers' progress callback, which prints a dict per step."""

import os
import sys
import warnings

QUIET_ENV = "KDAGENT_QUIET"
LIBRARIES = r"(transformers|trl|datasets|peft|accelerate|torch|huggingface_hub|chromadb)(\.|$)"


def interactive() -> bool:
    return sys.stderr.isatty()


def quiet() -> bool:
    return os.environ.get(QUIET_ENV, "") == "1"


def configure(quiet_mode: bool = False) -> None:
    """Bars only on a terminal and never when quiet; library logs at warning level (error when quiet)."""
    if quiet_mode:
        os.environ[QUIET_ENV] = "1"
    if quiet_mode or not interactive():
        for var in ("TQDM_DISABLE", "HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS"):
            os.environ[var] = "1"  # tqdm >= 4.66 reads TQDM_* as its defaults: every library's bars at once
    if quiet_mode:
        os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "warning")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    if quiet_mode:
        warnings.filterwarnings("ignore", module=LIBRARIES)


def _label(trainer, work) -> str:
    from pathlib import Path

    folder = Path(work).parent.name if work else ""
    method = type(trainer).__name__.removesuffix("Trainer").lower() or "train"
    round_ = f"round {int(folder[6:])}: " if folder.startswith("round-") and folder[6:].isdigit() else ""
    return f"{round_}update ({method})"


def trainer_callback(trainer, work=None):
    """Swap transformers' progress callback (and its per-step dicts) for `TrainerProgress`."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    try:
        from transformers.utils.notebook import NotebookProgressCallback

        trainer.remove_callback(NotebookProgressCallback)
    except ImportError:
        pass
    trainer.add_callback(_progress_class()(_label(trainer, work)))


def _progress_class():
    from transformers import TrainerCallback

    class TrainerProgress(TrainerCallback):
        """One labelled bar with the latest loss on a terminal; otherwise about ten plain lines per training run."""

        def __init__(self, label: str):
            self.label, self.bar, self.loss, self.next_line = label, None, None, 0

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero and not quiet() and interactive():
                from tqdm.auto import tqdm

                self.bar = tqdm(total=state.max_steps, desc=self.label, unit="step", leave=False, dynamic_ncols=True)
                self.bar.update(state.global_step)

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs or not state.is_world_process_zero or quiet():
                return
            self.loss = float(logs["loss"])
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{self.loss:.4g}")
            elif state.global_step >= self.next_line or state.global_step == state.max_steps:
                print(
                    f"[kdagent] {self.label}: step {state.global_step}/{state.max_steps}, loss {self.loss:.4g}",
                    file=sys.stderr,
                    flush=True,
                )
                self.next_line = state.global_step + max(1, state.max_steps // 10)

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return TrainerProgress
