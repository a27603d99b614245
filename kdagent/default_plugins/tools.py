"""Built-in tools: `calculator`, safe arithmetic without eval."""

from kdagent.hookspecs import hookimpl
from kdagent.tools.calculator import calculator


@hookimpl
def kdagent_register_tools(register):
    register("calculator", calculator)
