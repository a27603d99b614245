"""Tools the model may call. Model-written code runs only in kdagent's sandbox."""
