"""The plugin module kdagent loads through the entry-point group `kdagent`: it registers the `medicine` domain."""

from kdagent.hookspecs import hookimpl
from kdagent_medicine.domain import Medicine


@hookimpl
def kdagent_register_domains(register):
    register("medicine", Medicine)
