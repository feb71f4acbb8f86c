"""The LLM half of the hybrid: base model, prompts, LoRA fine-tuning, scoring and backends."""
