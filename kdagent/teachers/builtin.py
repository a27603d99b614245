"""Teacher kinds `self` (the current student), `hf` (any local Hugging Face model), `openai` (any
OpenAI-compatible endpoint, through LangChain) and `langchain` (a chat model a plugin registers).

Each declares its own checks, the local folder it runs and its capabilities (`kdagent.teachers.kinds`),
as a plugin's kind would; none takes `teacher.options`: their settings are the flat `teacher.*` fields."""

from kdagent.errors import UserError
from kdagent.hookspecs import hookimpl
from kdagent.teachers import BRANCH_LOGPROBS, CHOICE_LOGPROBS, LOCAL_PATH, PREFILL, TOKEN_LOGPROBS
from kdagent.teachers.kinds import declare

WHITE_BOX = (PREFILL, TOKEN_LOGPROBS, CHOICE_LOGPROBS, BRANCH_LOGPROBS, LOCAL_PATH)


def _needs_model(config):
    if not config.model:
        raise UserError(f"teacher.model: the {config.kind!r} teacher needs a model")


def _hf_path(config, student):
    from kdagent.models import resolve_model

    return resolve_model(config.model)


@declare(local_path=lambda config, student: student, capabilities=WHITE_BOX)
def self_teacher(config, student_path):
    from kdagent.teachers.hf import HFTeacher

    return HFTeacher(student_path, config, label=f"self:{student_path}")


@declare(check=_needs_model, local_path=_hf_path, capabilities=WHITE_BOX)
def hf_teacher(config, student_path):
    from kdagent.teachers.hf import HFTeacher

    _needs_model(config)
    return HFTeacher(_hf_path(config, student_path), config, label=f"hf:{config.model}")


def _check_openai(config):
    _needs_model(config)
    if not config.base_url:
        raise UserError("teacher.base_url: the 'openai' teacher needs an endpoint, e.g. http://127.0.0.1:8000/v1")


@declare(check=_check_openai)
def openai_teacher(config, student_path):
    from kdagent.teachers.chat import openai_teacher as make

    return make(config, student_path)


def _check_langchain(config, plugins):
    if config.model not in plugins.chat_models:
        names = ", ".join(sorted(plugins.chat_models)) or "none"
        raise UserError(
            f"teacher.model: unknown chat model {config.model!r} for the 'langchain' teacher (registered: {names})"
        )


@declare(check=_check_langchain)
def langchain_teacher(config, student_path, plugins):
    from kdagent.teachers.chat import ChatModelTeacher

    _check_langchain(config, plugins)
    chat = plugins.chat_models[config.model].obj(config)
    return ChatModelTeacher(chat, config, label=f"langchain:{config.model}")


@hookimpl
def kdagent_register_teachers(register):
    register("self", self_teacher)
    register("hf", hf_teacher)
    register("openai", openai_teacher)
    register("langchain", langchain_teacher)
