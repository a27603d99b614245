"""Synthesis: prompt building, task expansion (`expand`) and elicitation."""
