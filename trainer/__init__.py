"""Model training: dataset export, LoRA SFT, eval gate, publish."""
