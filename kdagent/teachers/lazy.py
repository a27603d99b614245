"""A teacher loaded the first time a stage asks for it, and freed on `close`."""

import gc
from pathlib import Path


class LazyTeacher:
    """The recipe's teacher (`plugins.create_teacher(config, student)`), built on the first `get`."""

    def __init__(self, plugins, config, student: Path):
        self.plugins, self.config, self.student, self.teacher = plugins, config, student, None

    def get(self):
        if self.teacher is None:
            self.teacher = self.plugins.create_teacher(self.config, self.student)
        return self.teacher

    def failures(self) -> list[str]:
        return list(getattr(self.teacher, "failures", []) or [])

    def close(self) -> None:
        if self.teacher is not None:
            self.teacher.close()
            self.teacher = None
            gc.collect()
