"""Built-in tools: `calculator`, safe arithmetic without eval; `python`, model-written code in the sandbox."""

from kdagent.hookspecs import hookimpl
from kdagent.tools.calculator import calculator
from kdagent.tools.sandbox import python


@hookimpl
def kdagent_register_tools(register):
    register("calculator", calculator)
    register("python", python)
