"""Built-in skills, domains, teachers and tools, registered through the same hooks as outside plugins."""
