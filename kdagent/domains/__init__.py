"""The built-in domains (`arithmetic`, `math`, `assistant`, `instructions`), each registered through
`kdagent_register_domains` as an outside plugin's would be; domain packages (law, medicine, finance) are
pip packages under `plugins/`."""
