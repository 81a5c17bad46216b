"""NExT-GPT: any-to-any multimodal LLM (research reimplementation)."""
