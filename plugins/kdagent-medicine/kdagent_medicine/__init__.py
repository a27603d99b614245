"""kdagent-medicine: the `medicine` domain for kdagent (entry point `medicine = "kdagent_medicine.plugin"`)."""

__version__ = "0.1.0"
