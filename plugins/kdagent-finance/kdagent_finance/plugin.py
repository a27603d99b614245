"""The plugin module kdagent loads through the entry-point group `kdagent`: it registers the `finance` domain."""

from kdagent.hookspecs import hookimpl
from kdagent_finance.domain import Finance


@hookimpl
def kdagent_register_domains(register):
    register("finance", Finance)
