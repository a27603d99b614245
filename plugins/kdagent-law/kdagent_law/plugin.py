"""The plugin module kdagent loads through the entry-point group `kdagent`: it registers the `law` domain."""

from kdagent.hookspecs import hookimpl
from kdagent_law.domain import Law


@hookimpl
def kdagent_register_domains(register):
    register("law", Law)
