"""Teacher kinds `self` (the current student) and `hf` (any local Hugging Face model)."""

from kdagent.errors import UserError
from kdagent.hookspecs import hookimpl


def self_teacher(config, student_path):
    from kdagent.teachers.hf import HFTeacher

    return HFTeacher(student_path, config, label=f"self:{student_path.name}")


def hf_teacher(config, student_path):
    from kdagent.models import resolve_model
    from kdagent.teachers.hf import HFTeacher

    if not config.model:
        raise UserError("teacher.model: the 'hf' teacher needs a model (an alias or a local folder)")
    return HFTeacher(resolve_model(config.model), config, label=f"hf:{config.model}")


@hookimpl
def kdagent_register_teachers(register):
    register("self", self_teacher)
    register("hf", hf_teacher)
