"""Teacher kinds `self` (the current student), `hf` (any local Hugging Face model), `openai` (any
OpenAI-compatible endpoint, through LangChain) and `langchain` (a chat model a plugin registers)."""

from kdagent.errors import UserError
from kdagent.hookspecs import hookimpl


def self_teacher(config, student_path):
    from kdagent.teachers.hf import HFTeacher

    return HFTeacher(student_path, config, label=f"self:{student_path}")


def hf_teacher(config, student_path):
    from kdagent.models import resolve_model
    from kdagent.teachers.hf import HFTeacher

    if not config.model:
        raise UserError("teacher.model: the 'hf' teacher needs a model (an alias or a local folder)")
    return HFTeacher(resolve_model(config.model), config, label=f"hf:{config.model}")


def openai_teacher(config, student_path):
    from kdagent.teachers.chat import openai_teacher as make

    return make(config, student_path)


def langchain_teacher(config, student_path, plugins):
    from kdagent.teachers.chat import ChatModelTeacher

    if config.model not in plugins.chat_models:
        names = ", ".join(sorted(plugins.chat_models)) or "none"
        raise UserError(
            f"teacher.model: unknown chat model {config.model!r} for the 'langchain' teacher (registered: {names})"
        )
    chat = plugins.chat_models[config.model].obj(config)
    return ChatModelTeacher(chat, config, label=f"langchain:{config.model}")


@hookimpl
def kdagent_register_teachers(register):
    register("self", self_teacher)
    register("hf", hf_teacher)
    register("openai", openai_teacher)
    register("langchain", langchain_teacher)
