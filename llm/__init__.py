"""The LLM: one OpenAI-compatible client (``llm.client``) and the slots that cap calls in flight across
every worker (``llm.slots``). Audits (steps, reruns) and chat both stand on it; neither imports the
other for it."""
