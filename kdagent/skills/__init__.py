"""The built-in skills (`cot`, `qa`, `label`, `tool_use`, `alignment`, `instruct`), each registered through
`kdagent_register_skills` as an outside plugin's would be, with what they share: the instruction-constraint
checker (`constraints`) and the skills' own held-out sets (`skill_sets`)."""
